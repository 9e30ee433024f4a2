"""Istio's injection policy, as a table (istio.io, "Controlling the injection policy")."""

import pytest

from conformance.targets.local.injection import decide

ENABLED = {"istio-injection": "enabled"}
DISABLED = {"istio-injection": "disabled"}
REV = {"istio.io/rev": "default"}
CANARY = {"istio.io/rev": "canary"}
POD_TRUE = {"sidecar.istio.io/inject": "true"}
POD_FALSE = {"sidecar.istio.io/inject": "false"}

TABLE = [
    # namespace labels, pod labels, injected?
    ({}, {}, False),
    (ENABLED, {}, True),
    (DISABLED, {}, False),
    (ENABLED, POD_FALSE, False),  # opt-out on the pod wins over the namespace
    (DISABLED, POD_TRUE, False),  # disabled anywhere wins
    ({}, POD_TRUE, True),  # opt-in on the pod alone
    ({}, POD_FALSE, False),
    (REV, {}, True),
    (CANARY, {}, False),  # a revision that is not installed injects nothing
    ({**CANARY, **ENABLED}, {}, True),  # istio-injection beats istio.io/rev
    ({**REV, **DISABLED}, {}, False),
    (REV, POD_FALSE, False),
    ({}, REV, True),  # revision label on the pod
    ({}, CANARY, False),
    ({"istio-injection": "yes"}, {}, False),  # only the documented values count
]


@pytest.mark.parametrize(("ns", "pod", "expected"), TABLE, ids=[f"{n}-{p}" for n, p, _ in TABLE])
def test_injection_policy(ns: dict[str, str], pod: dict[str, str], expected: bool) -> None:
    decision = decide(ns, pod, revisions=("default",))
    assert decision.inject is expected, decision.reason


def test_decision_says_why() -> None:
    assert "sidecar.istio.io/inject=false" in decide(ENABLED, POD_FALSE).reason
    assert "canary" in decide(CANARY, {}).reason
