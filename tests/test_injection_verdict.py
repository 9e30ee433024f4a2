"""SidecarInjection's verdict on pods as a cluster's API server returns them: Istio's injected
shapes (istio/istio pkg/kube/inject/testdata/inject/hello.yaml.injected and .cni, native
sidecars from Istio 1.27 on Kubernetes 1.33+), read by the cluster target's pod view; and
ValidationWebhook's verdict on what refused each case (the webhook, the CRD's schema, or neither)."""

import json

import pytest

from conformance.errors import ConformanceError
from conformance.targets.kube_views import pod_view
from conformance.verdicts.injection import InjectionCase, injection_table, observed
from conformance.verdicts.validation import Attempt, Expected, expectation, refused_by, validation_table

STATUS = "sidecar.istio.io/status"


def pod(containers: list[str], init: list[str] = (), status: list[str] | None = None, native: bool = False) -> dict:
    annotations = {}
    if status is not None:
        annotations[STATUS] = json.dumps({"initContainers": status, "containers": None if native else ["istio-proxy"],
                                          "volumes": ["istio-envoy"], "imagePullSecrets": None,
                                          "revision": "default"})
    return {
        "metadata": {"name": "hello-1", "namespace": "ns", "annotations": annotations,
                     "labels": {"app": "hello", **({"security.istio.io/tlsMode": "istio"} if status else {})}},
        "spec": {
            "initContainers": [{"name": n, **({"restartPolicy": "Always"} if n == "istio-proxy" else {})} for n in init],
            "containers": [{"name": n} for n in containers],
        },
        "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
    }


CLASSIC = pod(["hello", "istio-proxy"], ["istio-init"], status=["istio-init"])
CNI = pod(["hello", "istio-proxy"], ["istio-validation"], status=["istio-validation"])
NATIVE = pod(["hello"], ["istio-init", "istio-proxy"], status=["istio-init", "istio-proxy"], native=True)
PLAIN = pod(["hello"])
UNMARKED = pod(["hello", "istio-proxy"], ["istio-init"])  # a proxy the injector did not put there
# A marked proxy whose traffic nothing redirects: neither istio-init nor Istio CNI's validation.
UNREDIRECTED = pod(["hello", "istio-proxy"], [], status=[])


@pytest.mark.parametrize(("raw", "seen"), [
    (CLASSIC, "sidecar"), (CNI, "sidecar"), (NATIVE, "native sidecar"), (PLAIN, "none"),
    (UNMARKED, "sidecar (sidecar.istio.io/status absent)"),
    (UNREDIRECTED, "sidecar (no istio-init or istio-validation init container)"),
    (pod(["hello", "istio-proxy"]), "sidecar (sidecar.istio.io/status absent; no istio-init or istio-validation "
                                    "init container)"),
], ids=["classic", "cni", "native", "plain", "unmarked", "unredirected", "bare"])
def test_each_injected_shape_is_seen_as_istio_makes_it(raw: dict, seen: str) -> None:
    assert observed(pod_view(raw)) == seen


def test_the_table_passes_on_istios_policy_and_names_each_wrong_case() -> None:
    injected, not_injected = InjectionCase("ns enabled; plain", True), InjectionCase("ns unlabelled; plain", False)
    right = injection_table([(injected, [pod_view(NATIVE)]), (not_injected, [pod_view(PLAIN)])])
    assert right.ok and right.message.startswith("all 2 injection cases as Istio's policy says")
    wrong = injection_table([(injected, [pod_view(PLAIN)]), (not_injected, [pod_view(UNMARKED)])])
    assert not wrong.ok
    lines = wrong.message.splitlines()
    assert lines[0] == "2 of 2 injection cases differ from Istio's policy:"
    assert lines[1].split() == ["case", "expected", "observed"]
    assert "ns enabled; plain" in lines[2] and "injected" in lines[2] and lines[2].endswith("WRONG")
    assert "sidecar (sidecar.istio.io/status absent)" in lines[3]
    assert not injection_table([(injected, [])]).ok  # no pod: never a pass


# --- ValidationWebhook: what refuses each case -----------------------------------------------

WEBHOOK_DENIAL = ('VirtualService bookinfo/invalid-no-routes: admission webhook "validation.istio.io" denied the '
                  "request: configuration is invalid: http, tcp or tls must be provided in virtual service")
# The API server's 422 as the local mesh words it, and as the cluster target's client reports it.
SCHEMA_LOCAL = ('DestinationRule bookinfo/invalid-no-host: DestinationRule.networking.istio.io "invalid-no-host" '
                "is invalid: spec.host: Required value")
SCHEMA_CLUSTER = ("apply DestinationRule bookinfo/invalid-no-host: HTTP 422 Unprocessable Entity: "
                  'DestinationRule.networking.istio.io "invalid-no-host" is invalid: spec.host: Required value')
BY_WEBHOOK = "webhook: http, tcp or tls must be provided in virtual service"
BY_SCHEMA = "schema: spec.host: Required value"


@pytest.mark.parametrize(("error", "by"), [
    (None, "accepted"), (WEBHOOK_DENIAL, "webhook"), (SCHEMA_LOCAL, "schema"), (SCHEMA_CLUSTER, "schema"),
    ("VirtualService bookinfo/x: kind 'VirtualService' is not implemented", "other"),
], ids=["accepted", "webhook", "schema-local", "schema-cluster", "other"])
def test_each_refusal_is_attributed_to_what_made_it(error: str | None, by: str) -> None:
    assert refused_by(error) == by


def test_a_case_expects_the_webhook_the_schema_or_acceptance_and_nothing_else() -> None:
    assert expectation(BY_SCHEMA) == Expected("schema", "spec.host: Required value")
    assert expectation(BY_WEBHOOK) == Expected("webhook", "http, tcp or tls must be provided in virtual service")
    assert expectation("") == Expected("accepted", "")
    for unreadable in ("http, tcp or tls must be provided", "kubectl: spec.host", "schema: "):
        with pytest.raises(ConformanceError, match="validation case expectation"):
            expectation(unreadable)


def test_the_validation_table_passes_when_each_case_is_refused_by_what_it_expects() -> None:
    verdict = validation_table([
        Attempt("validation/vs-no-routes.yaml", BY_WEBHOOK, WEBHOOK_DENIAL, stored=False),
        Attempt("validation/dr-no-host.yaml", BY_SCHEMA, SCHEMA_CLUSTER, stored=False),
        Attempt("validation/vs-valid.yaml", "", None, stored=True),
    ])
    assert verdict.ok, verdict.message
    lines = verdict.message.splitlines()
    assert lines[0] == "all 3 validation cases as Istio's validation decides (CRD schema, then webhook):"
    assert lines[2] == ("validation/dr-no-host.yaml: expected refused by schema: spec.host: Required value; "
                        "observed refused by schema: spec.host: Required value")
    assert "observed refused by webhook: " in lines[1] and lines[3].endswith("observed accepted")


def test_a_refusal_by_the_other_one_than_expected_is_wrong() -> None:
    schema_for_webhook = Attempt("validation/vs-no-routes.yaml", BY_WEBHOOK,
                                 WEBHOOK_DENIAL.split(": admission")[0] + ': VirtualService.networking.istio.io '
                                 '"invalid-no-routes" is invalid: http, tcp or tls must be provided in virtual service',
                                 stored=False)
    webhook_for_schema = Attempt("validation/dr-no-host.yaml", BY_SCHEMA,
                                 'DestinationRule bookinfo/invalid-no-host: admission webhook "validation.istio.io" '
                                 "denied the request: configuration is invalid: spec.host: Required value", stored=False)
    stored = Attempt("validation/dr-no-host.yaml", BY_SCHEMA, SCHEMA_LOCAL, stored=True)
    accepted = Attempt("validation/dr-no-host.yaml", BY_SCHEMA, None, stored=True)
    other_words = Attempt("validation/dr-no-host.yaml", BY_SCHEMA, SCHEMA_LOCAL.replace("spec.host", "spec.subsets"),
                          stored=False)
    verdict = validation_table([schema_for_webhook, webhook_for_schema, stored, accepted, other_words])
    assert not verdict.ok
    lines = verdict.message.splitlines()
    assert lines[0] == "5 of 5 validation cases differ from Istio's validation (CRD schema, then webhook):"
    assert all(line.endswith("WRONG") for line in lines[1:])
    assert "observed refused by schema: http, tcp or tls" in lines[1]
    assert "observed refused by webhook: " in lines[2]
    assert "(stored)" in lines[3] and "observed accepted (stored)" in lines[4]
