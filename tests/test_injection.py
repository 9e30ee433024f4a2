"""Istio's injection policy, as a table: each row cites the rule that decides it, and goes
through the local mesh's admission as a pod the API server creates.

Rules, at istio/istio 1.28.0:
- WEBHOOK: the injector's webhook selectors, which see labels only
  (manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml);
- ISTIOD: istiod's own check of the pod (pkg/kube/inject/inject.go injectRequired);
- IGNORED: the namespaces istiod never injects (pkg/kube/inject/initializer.go IgnoredNamespaces).
"""

from dataclasses import dataclass, field

import pytest

from conformance.names import PROXY_CONTAINER
from conformance.targets.local.admission.control import AdmissionControl

ENABLED = {"istio-injection": "enabled"}
DISABLED = {"istio-injection": "disabled"}
REV = {"istio.io/rev": "default"}
CANARY = {"istio.io/rev": "canary"}
TRUE = {"sidecar.istio.io/inject": "true"}
FALSE = {"sidecar.istio.io/inject": "false"}


@dataclass(frozen=True)
class Row:
    rule: str
    inject: bool
    ns_labels: dict[str, str] = field(default_factory=dict)
    pod_labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    host_network: bool = False
    namespace: str = "shop"


TABLE = [
    Row("WEBHOOK: nothing selects an unlabelled pod in an unlabelled namespace", False),
    Row("WEBHOOK namespace.: istio-injection In [enabled]", True, ENABLED),
    Row("WEBHOOK: istio-injection disabled matches no webhook", False, DISABLED),
    Row("WEBHOOK: any istio-injection value but enabled matches no webhook", False, {"istio-injection": "yes"}),
    Row("WEBHOOK namespace.: istio.io/rev is not looked at", True, {**ENABLED, **CANARY}),
    Row("WEBHOOK rev.namespace.: istio-injection DoesNotExist, so disabled beats istio.io/rev", False,
        {**DISABLED, **REV}),
    Row("WEBHOOK rev.namespace.: istio-injection=false beats istio.io/rev too", False,
        {"istio-injection": "false", **REV}),
    Row("WEBHOOK namespace.: object selector sidecar.istio.io/inject NotIn [false]", False, ENABLED, FALSE),
    Row("ISTIOD: the annotation counts when the label is absent", False, ENABLED, {}, FALSE),
    Row("ISTIOD: the label wins over the annotation", True, ENABLED, TRUE, FALSE),
    Row("WEBHOOK: a label false excludes the pod whatever the annotation says", False, ENABLED, FALSE, TRUE),
    Row("ISTIOD: a value other than true or false falls back to the enabled policy", True, ENABLED,
        {"sidecar.istio.io/inject": "maybe"}),
    Row("WEBHOOK: selectors do not see an annotation true", False, {}, {}, TRUE),
    Row("WEBHOOK object.: pod label sidecar.istio.io/inject In [true]", True, {}, TRUE),
    Row("WEBHOOK object.: only the value true selects", False, {}, {"sidecar.istio.io/inject": "maybe"}),
    Row("WEBHOOK object.: pod istio.io/rev must not exist; rev.object. wants an installed revision", False,
        {}, {**TRUE, **CANARY}),
    Row("WEBHOOK object.: namespace istio.io/rev must not exist", False, CANARY, TRUE),
    Row("WEBHOOK rev.namespace.: istio.io/rev In [default]", True, REV),
    Row("WEBHOOK rev.namespace.: a revision not installed matches no webhook", False, CANARY),
    Row("WEBHOOK rev.namespace.: the namespace's revision decides, not the pod's", True, REV, CANARY),
    Row("WEBHOOK rev.namespace.: object selector sidecar.istio.io/inject NotIn [false]", False, REV, FALSE),
    Row("ISTIOD: the annotation false stops a revision-labelled namespace too", False, REV, {}, FALSE),
    Row("WEBHOOK rev.object.: pod label istio.io/rev In [default]", True, {}, REV),
    Row("WEBHOOK rev.object.: a revision not installed matches no webhook", False, {}, CANARY),
    Row("ISTIOD: a hostNetwork pod is never injected", False, ENABLED, host_network=True),
    *[Row(f"IGNORED: {ns} is never injected", False, ENABLED, namespace=ns)
      for ns in ("kube-system", "kube-public", "kube-node-lease", "local-path-storage")],
]


@pytest.mark.parametrize("row", TABLE, ids=[row.rule for row in TABLE])
def test_injection_policy(row: Row, admission_control: AdmissionControl) -> None:
    """Each row through the local mesh's admission: the API server's webhook selectors
    (manifests/local/istio-sidecar-injector.yaml), then the local injector over HTTPS."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "shop-1", "namespace": row.namespace, "labels": {"app": "shop", **row.pod_labels},
                        "annotations": dict(row.annotations)},
           "spec": {"containers": [{"name": "shop", "image": "shop:1"}],
                    **({"hostNetwork": True} if row.host_network else {})}}
    admitted = admission_control.admit_pod(pod, row.namespace, row.ns_labels, admission_control.istiod_webhooks())
    containers = [c["name"] for c in admitted["spec"]["containers"]]
    assert (PROXY_CONTAINER in containers) is row.inject, admitted["metadata"]
