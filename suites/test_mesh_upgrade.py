"""MESH-TRAFFIC: Istio upgraded by revisions under continuous load (conformance/canary_upgrade.py):
every request must be answered (a 5xx budget of 0), every proxy must end on the new istiod and Istio,
and each step is timed."""

import allure
import pytest

from conformance.canary_upgrade import upgrade_under_load
from conformance.checks import decide
from conformance.fixtures.mesh import Apply, Bookinfo, Evidence, MakeNamespace
from conformance.mesh_upgrade import UPGRADE_FEATURE, UPGRADE_MANIFEST, upgrade_from
from conformance.settings import RunSettings
from conformance.targets.base import Target
from conformance.waiting import Verdict


@pytest.mark.feature(UPGRADE_FEATURE)
def test_mesh_upgrade(applied: Apply, namespace: MakeNamespace, target: Target, bookinfo: Bookinfo,
                      run_settings: RunSettings, evidence: Evidence) -> None:
    new_version = target.facts().mesh_version
    old_version = upgrade_from(run_settings.upgrade_from, new_version)
    outcome = upgrade_under_load(target, bookinfo.client, lambda ns: applied(UPGRADE_MANIFEST, namespace=ns),
                                 namespace, old_version, new_version, run_settings.timeouts)
    allure.attach(f"{outcome.describe()}\n\n{outcome.after.message}", name="upgrade",
                  attachment_type=allure.attachment_type.TEXT)
    # The load's verdict first, with the steps' times either way: the errors and when they came.
    decide(Verdict(outcome.served.ok, outcome.describe()))
    decide(outcome.after)
    evidence(outcome.describe())
