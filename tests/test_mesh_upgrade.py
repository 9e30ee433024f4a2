"""MeshUpgrade's pure parts: the Istio it upgrades from (default and --upgrade-from, refused with the
reason), the revision that version runs as, `--plan`'s steps, the local target's NOT_SUPPORTED, and the
verdict on which control plane and Istio each proxy runs."""

import json
from pathlib import Path

import pytest

from conformance.errors import ConformanceError
from conformance.mesh_upgrade import (LATEST_PATCHES, UPGRADE_FEATURE, default_upgrade_from, revision_name,
                                      upgrade_from)
from conformance.names import SIDECAR_STATUS_ANNOTATION
from conformance.targets.base import PodView
from conformance.settings import RunSettings
from conformance.targets.local.target import LocalTarget
from conformance.verdicts.revisions import BOOTSTRAP_DUMP
from conformance.verdicts.upgrade import on_revision, proxy_seen
from tests.builders import meshconf
from tests.fakes import FakeTools


def test_the_default_is_the_previous_minors_newest_patch() -> None:
    assert default_upgrade_from("1.28.10") == LATEST_PATCHES["1.27"] == "1.27.9"
    assert upgrade_from(None, "1.29.0") == "1.28.10"
    assert default_upgrade_from("1.26.8") is None  # meshconf supports no 1.25
    with pytest.raises(ConformanceError, match="knows no Istio release before 1.26.8 to upgrade from: name one"):
        upgrade_from(None, "1.26.8")


@pytest.mark.parametrize(("chosen", "problem"), [
    ("1.28.10", "--upgrade-from 1.28.10 is not older than the Istio under test, 1.28.10"),
    ("1.29.1", "--upgrade-from 1.29.1 is not older than the Istio under test, 1.28.10"),
    ("1.27", "--upgrade-from '1.27' is not an Istio release like 1.27.9"),
    ("latest", "--upgrade-from 'latest' is not an Istio release like 1.27.9"),
    ("1.24.6", "--upgrade-from 1.24.6: Istio 1.24 is not a minor meshconf supports (1.26, 1.27"),
])
def test_an_upgrade_from_that_cannot_be_upgraded_is_refused_by_name(chosen: str, problem: str) -> None:
    with pytest.raises(ConformanceError) as refused:
        upgrade_from(chosen, "1.28.10")
    assert str(refused.value).startswith(problem)


def test_an_older_patch_of_a_supported_minor_is_taken() -> None:
    assert upgrade_from("1.26.2", "1.28.10") == "1.26.2"
    assert upgrade_from("1.28.2", "1.28.10") == "1.28.2"


def test_a_version_runs_as_a_revision_named_as_istios_docs_name_them() -> None:
    assert revision_name("1.27.9") == "1-27-9"


def test_run_refuses_a_bad_upgrade_from_before_anything_starts(tmp_path: Path, fake_tools: FakeTools) -> None:
    done = meshconf(["run", "--target", "kind", "--plan", "--upgrade-from", "1.30.0"], cwd=tmp_path)
    assert done.returncode == 2
    assert "--upgrade-from 1.30.0 is not older than the Istio under test, 1.28.10" in done.stderr
    assert fake_tools.all_calls() == [] and not (tmp_path / "results").exists()


def test_plan_shows_the_upgrade_steps_with_the_old_releases_istioctl(tmp_path: Path, fake_tools: FakeTools) -> None:
    done = meshconf(["run", "--target", "kind", "--plan", "--upgrade-from", "1.27.2", "--kubernetes-version", "1.33"],
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    steps = done.stdout.split(f"# {UPGRADE_FEATURE}: Istio 1.27.2 (istioctl from ")[1].splitlines()
    assert "installed as revision 1-27-2 beside the mesh (Istio 1.28.10)" in steps[0]
    assert "/istio-1.27.2/bin/istioctl install " in steps[1] and "--revision 1-27-2" in steps[1]
    assert "--set components.base.enabled=false" in steps[1]
    assert "label the namespace istio.io/rev=default, restart its Deployments" in steps[2]
    assert "/istio-1.27.2/bin/istioctl uninstall " in steps[3] and steps[3].endswith("--revision 1-27-2 -y")


def test_plan_says_why_there_is_no_upgrade_below_the_oldest_minor(tmp_path: Path, fake_tools: FakeTools) -> None:
    done = meshconf(["run", "--target", "kind", "--plan", "--istio-version", "1.26.8", "--kubernetes-version", "1.33"],
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (f"# {UPGRADE_FEATURE}: NOT_SUPPORTED: Istio to upgrade from: meshconf knows no Istio release before "
            "1.26.8") in done.stdout


def test_plan_says_the_default_kind_kubernetes_is_too_new_for_the_previous_istio(tmp_path: Path,
                                                                                  fake_tools: FakeTools) -> None:
    done = meshconf(["run", "--target", "kind", "--plan"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (f"# {UPGRADE_FEATURE}: NOT_SUPPORTED: Istio to upgrade from: Istio 1.27.9 supports Kubernetes "
            "1.29-1.33, not 1.34") in done.stdout
    forced = meshconf(["run", "--target", "kind", "--plan", "--force"], cwd=tmp_path)
    assert f"# {UPGRADE_FEATURE}: Istio 1.27.9 (istioctl from " in forced.stdout


def test_the_local_mesh_says_why_it_has_no_upgrade() -> None:
    local = LocalTarget(RunSettings())
    assert not local.supports(UPGRADE_FEATURE)
    assert "one control plane and one Envoy build" in (local.unsupported_reason(UPGRADE_FEATURE) or "")
    with pytest.raises(ConformanceError, match="cannot install Istio 1.27.9 as revision 1-27-9"):
        with local.revision("1-27-9", "1.27.9"):
            pass


# --- which control plane and Istio each proxy runs --------------------------------------------------


def pod(name: str, revision: str) -> PodView:
    status = json.dumps({"containers": ["istio-proxy"], "revision": revision})
    return PodView(name, "upgrade-1", {"app": "httpbin"}, {SIDECAR_STATUS_ANNOTATION: status}, ("httpbin", "istio-proxy"),
                   ("istio-init",), "10.0.0.1", True, "httpbin")


def dump(istiod: str, version: str) -> dict:
    """A proxy's config dump as Envoy gives it: the bootstrap's node metadata as pilot-agent wrote it."""
    metadata = {"ISTIO_VERSION": version, "PROXY_CONFIG": {"discoveryAddress": istiod}}
    return {"configs": [{"@type": BOOTSTRAP_DUMP, "bootstrap": {"node": {"metadata": metadata}}}]}


def test_every_proxy_on_the_new_revision_and_istio_passes() -> None:
    seen = [proxy_seen(pod(f"httpbin-{n}", "default"), dump("istiod.istio-system.svc:15012", "1.28.10"))
            for n in (1, 2)]
    verdict = on_revision(seen, "default", "1.28.10", "after the upgrade")
    assert verdict.ok and verdict.message.startswith(
        "after the upgrade: all 2 pods on revision default (istiod.istio-system.svc:15012), Istio 1.28.10")


@pytest.mark.parametrize(("revision", "istiod", "version"), [
    ("1-27-9", "istiod.istio-system.svc:15012", "1.28.10"),  # injected by the old injector
    ("default", "istiod-1-27-9.istio-system.svc:15012", "1.28.10"),  # still connected to the old istiod
    ("default", "istiod.istio-system.svc:15012", "1.27.9"),  # the old proxy image
])
def test_a_proxy_left_on_the_old_revision_or_istio_fails_with_the_table(revision: str, istiod: str, version: str) -> None:
    seen = [proxy_seen(pod("httpbin-1", "default"), dump("istiod.istio-system.svc:15012", "1.28.10")),
            proxy_seen(pod("httpbin-2", revision), dump(istiod, version))]
    verdict = on_revision(seen, "default", "1.28.10", "after the upgrade")
    assert not verdict.ok
    assert verdict.message.startswith("after the upgrade: 1 of 2 pods not on revision default")
    [row] = [line for line in verdict.message.splitlines() if "httpbin-2" in line]
    assert "WRONG" in row and revision in row and istiod in row and version in row


def test_no_pod_to_look_at_is_no_upgrade() -> None:
    assert not on_revision([], "default", "1.28.10", "after the upgrade").ok
