"""RevisionInjection's and WebhookConfiguration's verdicts, on both sides: Istio's webhooks as
installed pass; a missing or non-CA caBundle, a fail-open webhook, a selector that calls two
injectors or none, and a pod injected by the wrong revision each fail, named in the table."""

import base64
import copy
import datetime
from typing import Any

import pytest

from conformance.targets.base import PodView
from conformance.targets.local.admission.control import istiod_webhooks, revision_webhooks
from conformance.targets.local.xds.secrets import MeshCA
from conformance.verdicts.revisions import (BOOTSTRAP_DUMP, Observed, RevisionCase, observe,
                                            proxy_discovery_address, revision_table)
from conformance.verdicts.webhooks import SelectorCase, configuration_rows, istio_webhooks, webhook_verdict

ENABLED = {"istio-injection": "enabled"}
CASES = (
    SelectorCase(ENABLED, {}, True),
    SelectorCase(ENABLED, {"sidecar.istio.io/inject": "false"}, False),
    SelectorCase({"istio-injection": "disabled"}, {"sidecar.istio.io/inject": "true"}, False),
    SelectorCase({}, {"sidecar.istio.io/inject": "true"}, True),
    SelectorCase({}, {"istio.io/rev": "default"}, True),
    SelectorCase({}, {}, False),
)


def flat(text: str) -> str:
    """A table's cells joined by single spaces: its column widths are not what is tested."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def mesh_ca() -> MeshCA:
    return MeshCA()


def installed(ca: MeshCA) -> list[dict[str, Any]]:
    return istiod_webhooks(ca.root_pem)


def test_istios_webhooks_as_installed_pass(mesh_ca: MeshCA) -> None:
    verdict = webhook_verdict(installed(mesh_ca), CASES)
    assert verdict.ok, verdict.message
    assert verdict.message.startswith("all 21 webhook checks hold (5 Istio webhooks)")


def test_a_second_revision_does_not_change_the_default_policy(mesh_ca: MeshCA) -> None:
    docs = [*installed(mesh_ca), *revision_webhooks("canary", mesh_ca.root_pem)]
    verdict = webhook_verdict(docs, CASES)
    assert verdict.ok, verdict.message


def istioctl_installed(ca: MeshCA) -> list[dict[str, Any]]:
    """What a default `istioctl install` leaves: istio-sidecar-injector's webhooks deactivated by a
    never-matching selector (istio/istio 1.28.0 istioctl/pkg/tag/util.go DeactivateIstioInjectionWebhook,
    istioctl/pkg/util/common.go NeverMatch), the same webhooks live in the revision tag "default"'s
    configuration, and the validator beside it."""
    docs = installed(ca)
    injector = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    tag = copy.deepcopy(injector)
    tag["metadata"]["name"] = "istio-revision-tag-default"
    never = {"matchLabels": {"istio.io/deactivated": "never-match"}}
    for hook in injector["webhooks"]:
        hook["namespaceSelector"], hook["objectSelector"] = never, never
    return [*docs, tag]


def test_istioctls_deactivated_injector_beside_its_default_tag_passes(mesh_ca: MeshCA) -> None:
    verdict = webhook_verdict(istioctl_installed(mesh_ca), CASES)
    assert verdict.ok, verdict.message
    # Each injected case is called once: by the tag's webhook, never the deactivated one's.
    assert "namespace istio-injection=enabled; pod no label one injector webhook called " \
           "namespace.sidecar-injector.istio.io ok" in flat(verdict.message)


def _injector_hooks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")["webhooks"]


def test_missing_and_non_ca_bundles_fail(mesh_ca: MeshCA) -> None:
    docs = installed(mesh_ca)
    hooks = _injector_hooks(docs)
    del hooks[0]["clientConfig"]["caBundle"]
    leaf = mesh_ca.issue_server(["istiod.istio-system.svc"]).chain_pem.split("-----END CERTIFICATE-----")[0]
    hooks[1]["clientConfig"]["caBundle"] = base64.b64encode((leaf + "-----END CERTIFICATE-----\n").encode()).decode()
    verdict = webhook_verdict(docs, CASES)
    assert not verdict.ok
    assert verdict.message.startswith("2 of 21 webhook checks differ")
    assert "rev.namespace.sidecar-injector.istio.io caBundle a valid CA certificate no caBundle WRONG" in flat(verdict.message)
    assert "caBundle holds a certificate that is not a CA" in verdict.message


def test_an_expired_root_fails(mesh_ca: MeshCA) -> None:
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=365 * 30)
    rows = configuration_rows(istio_webhooks(installed(mesh_ca)), now=later)
    assert [r[2] for r in rows if not r[3]][0].endswith("is not valid now")


def test_a_fail_open_injector_fails(mesh_ca: MeshCA) -> None:
    docs = installed(mesh_ca)
    _injector_hooks(docs)[2]["failurePolicy"] = "Ignore"
    verdict = webhook_verdict(docs, CASES)
    assert verdict.message.startswith("1 of 21 webhook checks differ")
    assert "/namespace.sidecar-injector.istio.io failurePolicy Fail Ignore WRONG" in flat(verdict.message)


def test_selectors_calling_two_injectors_or_none_fail(mesh_ca: MeshCA) -> None:
    docs = installed(mesh_ca)
    hooks = _injector_hooks(docs)
    # rev.object without its istio-injection requirement: an enabled namespace's pod labelled
    # istio.io/rev=default would reach two webhooks; and `object.` removed: inject=true reaches none.
    both = copy.deepcopy(hooks[1])
    both["namespaceSelector"] = {}
    both["name"] = "extra.sidecar-injector.istio.io"
    hooks[3:4] = [both]
    cases = (SelectorCase(ENABLED, {"istio.io/rev": "default"}, True), SelectorCase({}, {"sidecar.istio.io/inject": "true"}, True))
    verdict = webhook_verdict(docs, cases)
    assert not verdict.ok
    text = flat(verdict.message)
    assert "namespace.sidecar-injector.istio.io, extra.sidecar-injector.istio.io WRONG" in text
    assert "pod sidecar.istio.io/inject=true one injector webhook called none called WRONG" in text


def test_no_validator_and_unreadable_configurations_fail(mesh_ca: MeshCA) -> None:
    injector_only = [d for d in installed(mesh_ca) if d["kind"] == "MutatingWebhookConfiguration"]
    verdict = webhook_verdict(injector_only, CASES)
    assert not verdict.ok and "an injector and a validator" in verdict.message
    broken = installed(mesh_ca)
    _injector_hooks(broken)[0]["failurePolicy"] = "Sometimes"
    verdict = webhook_verdict(broken, CASES)
    assert not verdict.ok and verdict.message.startswith("Istio's webhook configurations cannot be read")


def test_extra_rows_join_the_table(mesh_ca: MeshCA) -> None:
    row = ("dry-run pod in kube-system", "not injected", "injected", False)
    verdict = webhook_verdict(installed(mesh_ca), CASES, [row])
    assert verdict.message.startswith("1 of 22 webhook checks differ")


def _dump(address: str | None) -> dict[str, Any]:
    metadata = {"PROXY_CONFIG": {"discoveryAddress": address}} if address else {}
    return {"configs": [{"@type": BOOTSTRAP_DUMP, "bootstrap": {"node": {"metadata": metadata}}},
                        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"}]}


def _pod(revision: str) -> PodView:
    status = '{"initContainers":["istio-init"],"containers":["istio-proxy"],"revision":"%s"}' % revision
    return PodView("p", "ns", {}, {"sidecar.istio.io/status": status, "istio.io/rev": revision},
                   ("app", "istio-proxy"), ("istio-init",), "10.0.0.1", True, "default")


def test_the_proxy_reports_its_istiod() -> None:
    assert proxy_discovery_address(_dump("istiod-canary.istio-system.svc:15012")) == "istiod-canary.istio-system.svc:15012"
    assert proxy_discovery_address(_dump(None)) is None
    assert proxy_discovery_address({"configs": []}) is None


def test_revision_table_both_sides() -> None:
    canary = RevisionCase("namespace istio.io/rev=canary", "canary")
    right = observe(_pod("canary"), _dump("istiod-canary.istio-system.svc:15012"))
    assert revision_table([(canary, right)]).ok
    # Injected by the canary's template but connected to the default istiod: the proxy decides.
    wrong_istiod = observe(_pod("canary"), _dump("istiod.istio-system.svc:15012"))
    verdict = revision_table([(canary, right), (canary, wrong_istiod), (canary, None)])
    assert not verdict.ok
    assert verdict.message.startswith("2 of 3 revision cases differ")
    assert "proxy's istiod istiod.istio-system.svc:15012 WRONG" in flat(verdict.message)
    assert "no injected pod" in verdict.message
    assert not revision_table([]).ok
    assert observe(_pod("default"), None) == Observed("default", "default", None)
