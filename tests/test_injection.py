"""Istio's injection policy, as a table: each row cites the rule that decides it.

Rules, at istio/istio 1.28.0:
- WEBHOOK: the injector's webhook selectors, which see labels only
  (manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml);
- ISTIOD: istiod's own check of the pod (pkg/kube/inject/inject.go injectRequired);
- IGNORED: the namespaces istiod never injects (pkg/kube/inject/initializer.go IgnoredNamespaces).
"""

from dataclasses import dataclass, field

import pytest

from conformance.targets.local.injection import decide

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
def test_injection_policy(row: Row) -> None:
    decision = decide(row.namespace, row.ns_labels, row.pod_labels, row.annotations, row.host_network,
                      revisions=("default",))
    assert decision.inject is row.inject, decision.reason


def test_installed_revisions_and_tags_select() -> None:
    # Each installed revision (or tag) has its rev.namespace. and rev.object. webhooks
    # (templates/mutatingwebhook.yaml, templates/revision-tags-mwc.yaml).
    assert decide("shop", CANARY, {}, revisions=("default", "canary")).inject
    assert decide("shop", {}, CANARY, revisions=("default", "canary")).inject
    # namespace. and object. exist for the default revision only.
    assert not decide("shop", ENABLED, {}, revisions=("canary",)).inject
    assert not decide("shop", {}, TRUE, revisions=("canary",)).inject


def test_decision_says_why() -> None:
    assert "sidecar.istio.io/inject=false" in decide("shop", ENABLED, FALSE).reason
    assert "annotation sidecar.istio.io/inject=false" in decide("shop", ENABLED, {}, FALSE).reason
    assert "canary" in decide("shop", CANARY, {}).reason
    assert "hostNetwork" in decide("shop", ENABLED, {}, host_network=True).reason
    assert "kube-system" in decide("kube-system", ENABLED, {}).reason
    assert "istio-injection=disabled" in decide("shop", {**DISABLED, **REV}, {}).reason
