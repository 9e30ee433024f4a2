"""SidecarInjection's verdict on pods as a cluster's API server returns them: Istio's injected
shapes (istio/istio pkg/kube/inject/testdata/inject/hello.yaml.injected and .cni, native
sidecars from Istio 1.27 on Kubernetes 1.33+), read by the cluster target's pod view."""

import json

import pytest

from conformance.targets.kube_views import pod_view
from conformance.verdicts.injection import InjectionCase, injection_table, observed

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
UNMARKED = pod(["hello", "istio-proxy"])  # a proxy the injector did not put there


@pytest.mark.parametrize(("raw", "seen"), [
    (CLASSIC, "sidecar"), (CNI, "sidecar"), (NATIVE, "native sidecar"), (PLAIN, "none"),
    (UNMARKED, "sidecar (sidecar.istio.io/status absent)"),
], ids=["classic", "cni", "native", "plain", "unmarked"])
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
