"""MESH-INJECTION: which pods get a sidecar, decided by Istio's injection policy; which
configuration Istio's validation webhook lets in."""

from functools import partial

import allure
import pytest

from conformance import manifests
from conformance.checks import converge, decide, measure
from conformance.errors import ConformanceError
from conformance.settings import RunSettings
from conformance.targets.base import Target
from conformance.verdicts import all_status
from conformance.names import CANARY_REVISION as CANARY, DEFAULT_REVISION, INJECT, INJECTION_LABEL, ISTIO_REV
from conformance.verdicts.injection import InjectionCase, injection_table, is_injected
from conformance.verdicts.revisions import Observed, RevisionCase, observe, revision_table
from conformance.verdicts.webhooks import Row, SelectorCase, webhook_verdict
from conformance.verdicts.validation import Attempt, validation_table
from conformance.waiting import Verdict
from conformance.fixtures.mesh import Apply, Bookinfo, Evidence, MakeNamespace

ENABLED = {INJECTION_LABEL: "enabled"}
DISABLED = {INJECTION_LABEL: "disabled"}
REVISION = {ISTIO_REV: DEFAULT_REVISION}
PROBE = "inject-probe"  # the Deployment (and client) of manifests/injection/*.yaml

# Istio's injection policy (istio.io docs/setup/additional-setup/sidecar-injection, "Controlling
# the injection policy"; istio/istio manifests/charts/istio-control/istio-discovery/templates/
# mutatingwebhook.yaml; pkg/kube/inject/inject.go injectRequired): namespace labels, the pod
# manifest, and whether the pod gets a sidecar.
CASES = (
    (ENABLED, "pod-plain", True),
    (ENABLED, "pod-label-true", True),
    (ENABLED, "pod-label-false", False),
    (ENABLED, "pod-annotation-false", False),
    (DISABLED, "pod-plain", False),
    (DISABLED, "pod-label-true", False),
    ({}, "pod-label-true", True),
    ({}, "pod-label-false", False),
    ({}, "pod-annotation-true", False),
    ({}, "pod-plain", False),
    (REVISION, "pod-plain", True),
    (REVISION, "pod-label-true", True),
    (REVISION, "pod-label-false", False),
    ({}, "pod-rev-default", True),
)
# What each manifests/injection/<pod>.yaml puts on its pod.
PODS = {
    "pod-plain": "pod without injection label or annotation",
    "pod-label-true": "pod label sidecar.istio.io/inject=true",
    "pod-label-false": "pod label sidecar.istio.io/inject=false",
    "pod-annotation-true": "pod annotation sidecar.istio.io/inject=true",
    "pod-annotation-false": "pod annotation sidecar.istio.io/inject=false",
    "pod-rev-default": "pod label istio.io/rev=default",
    "pod-rev-canary": "pod label istio.io/rev=canary",
}
# A header only Envoy adds to a reply: present when the client's own sidecar carried the request
# (unless a mesh turns Envoy's debug headers off: proxyHeaders.envoyDebugHeaders.disabled).
ENVOY_HEADER = "x-envoy-upstream-service-time"


def case_name(labels: dict[str, str], manifest: str) -> str:
    ns = ", ".join(f"{k}={v}" for k, v in labels.items()) or "no label"
    return f"namespace {ns}; {PODS[manifest]}"


def header_verdict(batch_headers: list[str | None], expect: bool, who: str) -> Verdict:
    present = sum(h is not None for h in batch_headers)
    ok = present == (len(batch_headers) if expect else 0)
    return Verdict(ok, f"{who}: {present} of {len(batch_headers)} replies carry {ENVOY_HEADER}"
                   f" ({'expected on all' if expect else 'expected on none'})")


@pytest.mark.feature("SidecarInjection")
def test_sidecar_injection(applied: Apply, namespace: MakeNamespace, target: Target, run_settings: RunSettings,
                           evidence: Evidence) -> None:
    placed = []
    for number, (labels, manifest, injected) in enumerate(CASES, 1):
        ns = namespace(f"inject{number}", labels)
        applied(f"injection/{manifest}.yaml", namespace=ns)
        placed.append((InjectionCase(case_name(labels, manifest), injected), ns))
    for _, ns in placed:
        target.wait_ready(ns)
    table = decide(injection_table([(case, target.pods(ns)) for case, ns in placed]))
    allure.attach(table, name="injection cases", attachment_type=allure.attachment_type.TEXT)

    # The traffic proof: through an injected pod's sidecar, and around an uninjected one.
    server = namespace("inject-server")
    applied("clients/httpbin.yaml", namespace=server)
    target.wait_ready(server)
    url = f"http://httpbin.{server}:8000/headers"
    proofs = []
    for wanted in (True, False):
        case, ns = next((c, ns) for c, ns in placed if c.injected == wanted)
        [pod] = [p for p in target.pods(ns) if p.name.startswith(PROBE)]
        assert is_injected(pod) == wanted
        send = target.client(PROBE, ns).send
        # The injected client's sidecar learns httpbin's endpoint by a push after the pod is ready.
        converge(partial(send, url, 1), lambda b: all_status(b, 200), run_settings.timeouts,
                 f"GET {url} answers from {case.name}")
        batch = measure(partial(send, url, 5), f"5 x GET {url} from {case.name}")
        decide(all_status(batch, 200))
        proofs.append(decide(header_verdict([r.headers.get(ENVOY_HEADER) for r in batch], wanted,
                                            f"{'injected' if wanted else 'uninjected'} pod")))
    evidence(f"{table.splitlines()[0].rstrip(':')}; {'; '.join(proofs)}")


# Invalid Istio resources, each refused by Istio's own validation rules (istio/istio
# pkg/config/validation, tag 1.26.0) and valid by the CRD's schema; one the CRD's schema refuses
# before the webhook sees it (the API server's 422 field error); then a valid control. Each
# expectation names what refuses it (conformance/verdicts/validation.py expectation()).
VALIDATION_CASES = (
    ("vs-route-and-redirect", "webhook: HTTP route cannot contain both route and redirect"),
    ("vs-no-routes", "webhook: http, tcp or tls must be provided in virtual service"),
    ("vs-zero-weights", "webhook: total destination weight = 0"),
    ("vs-lookahead-regex", 'webhook: "uri": error parsing regexp'),
    ("dr-duplicate-subsets", "webhook: duplicate subset names: v1"),
    ("gateway-no-servers", "webhook: gateway must have at least one server"),
    ("dr-no-host", "schema: spec.host: Required value"),
    ("vs-valid", ""),
)


@pytest.mark.feature("ValidationWebhook")
def test_validation_webhook(applied: Apply, bookinfo: Bookinfo, target: Target, evidence: Evidence) -> None:
    attempts = []
    for name, expected in VALIDATION_CASES:
        manifest = f"validation/{name}.yaml"
        with allure.step(f"apply {manifest}, expecting {'refusal: ' + expected if expected else 'acceptance'}"):
            try:
                docs = applied(manifest)
                error = None
            except ConformanceError as refused:
                docs, error = manifests.load(manifest), str(refused)
            stored = all(target.exists(doc, bookinfo.namespace) for doc in docs)
        attempts.append(Attempt(manifest, expected, error, stored))
    table = decide(validation_table(attempts))
    allure.attach(table, name="validation cases", attachment_type=allure.attachment_type.TEXT)
    evidence(table.splitlines()[0].rstrip(":"))


# Which revision injects (istio/istio manifests/charts/istio-control/istio-discovery/templates/
# mutatingwebhook.yaml, rendered per revision; istio.io docs/setup/upgrade/canary): a namespace's
# istio.io/rev, else the pod's, chooses; a default-revision namespace is the control.
REVISION_CASES = (
    ({ISTIO_REV: CANARY}, "pod-plain", CANARY),
    ({}, "pod-rev-canary", CANARY),
    # The namespace's revision wins over the pod's; istio-injection=enabled wins over both.
    ({ISTIO_REV: CANARY}, "pod-rev-default", CANARY),
    ({**ENABLED, ISTIO_REV: CANARY}, "pod-plain", DEFAULT_REVISION),
    (REVISION, "pod-plain", DEFAULT_REVISION),
)


@pytest.mark.feature("RevisionInjection")
def test_revision_injection(applied: Apply, namespace: MakeNamespace, target: Target, evidence: Evidence) -> None:
    with target.revision(CANARY):
        placed = []
        for number, (labels, manifest, revision) in enumerate(REVISION_CASES, 1):
            ns = namespace(f"revision{number}", labels)
            applied(f"injection/{manifest}.yaml", namespace=ns)
            placed.append((RevisionCase(case_name(labels, manifest), revision), ns))
        seen: list[tuple[RevisionCase, Observed | None]] = []
        for case, ns in placed:
            target.wait_ready(ns)
            pods = [p for p in target.pods(ns) if p.name.startswith(PROBE) and is_injected(p)]
            seen.append((case, observe(pods[0], target.proxy_config(pods[0].name, ns)) if pods else None))
    table = decide(revision_table(seen))
    allure.attach(table, name="revision cases", attachment_type=allure.attachment_type.TEXT)
    evidence(table.splitlines()[0].rstrip(":"))


# The injection policy as the webhooks' selectors must implement it: labels only, since selectors
# never see annotations (istio.io docs/setup/additional-setup/sidecar-injection, "Controlling the
# injection policy"; the chart's mutatingwebhook.yaml). True: exactly one injector webhook is called.
INJECT_TRUE = {INJECT: "true"}
INJECT_FALSE = {INJECT: "false"}
SELECTOR_CASES = (
    SelectorCase(ENABLED, {}, True),
    SelectorCase(ENABLED, INJECT_FALSE, False),
    SelectorCase({**ENABLED, **REVISION}, {}, True),
    SelectorCase(DISABLED, {}, False),
    SelectorCase(DISABLED, INJECT_TRUE, False),
    SelectorCase({**DISABLED, **REVISION}, {}, False),
    SelectorCase(REVISION, {}, True),
    SelectorCase(REVISION, INJECT_FALSE, False),
    SelectorCase({}, INJECT_TRUE, True),
    SelectorCase({}, REVISION, True),
    SelectorCase({}, {}, False),
)
[DRY_RUN_POD] = manifests.DRY_RUN_ONLY
IGNORED_NAMESPACE = "kube-system"  # a namespace istiod never injects (istio/istio pkg/kube/inject/initializer.go)


@pytest.mark.feature("WebhookConfiguration")
def test_webhook_configuration(namespace: MakeNamespace, target: Target, evidence: Evidence) -> None:
    [pod] = manifests.load(DRY_RUN_POD)
    plain = namespace("webhook-dry-run", {})
    rows: list[Row] = []
    for ns, injects in ((plain, True), (IGNORED_NAMESPACE, False)):
        admitted = target.admitted_pod(pod, ns)
        rows.append((f"dry-run pod {DRY_RUN_POD} in {ns}", "injected" if injects else "not injected",
                     "injected" if is_injected(admitted) else "not injected", is_injected(admitted) == injects))
    table = decide(webhook_verdict(target.webhook_configurations(), SELECTOR_CASES, rows))
    allure.attach(table, name="webhook checks", attachment_type=allure.attachment_type.TEXT)
    evidence(table.splitlines()[0].rstrip(":"))
