"""Sidecar injection decided per case from the pod as the target shows it: a table of case,
expected and observed, where one wrong case fails the whole."""

from collections.abc import Sequence
from dataclasses import dataclass

from conformance.names import PROXY_CONTAINER, SIDECAR_STATUS_ANNOTATION
from conformance.tables import render_table
from conformance.targets.base import PodView
from conformance.waiting import Verdict


@dataclass(frozen=True)
class InjectionCase:
    name: str  # e.g. "ns istio-injection=enabled, pod label sidecar.istio.io/inject=false"
    injected: bool  # what Istio's policy says


# What sets up a sidecar's traffic redirection before the app starts: Istio's init container, or
# with Istio CNI the CNI plugin, whose injected init container only validates it (istio/istio
# pkg/kube/inject/inject.go InitContainerName, ValidationContainerName).
REDIRECTION_CONTAINERS = ("istio-init", "istio-validation")


def observed(pod: PodView) -> str:
    """How a pod carries its sidecar: "sidecar" (a container), "native sidecar" (an init
    container, Kubernetes >= 1.29 sidecars), or "none"; whether the injector marked it and
    whether its redirection is set up (istio-init, or istio-validation with Istio CNI)."""
    if PROXY_CONTAINER in pod.containers:
        how = "sidecar"
    elif PROXY_CONTAINER in pod.init_containers:
        how = "native sidecar"
    else:
        how = "none"
    problems = []
    marked = SIDECAR_STATUS_ANNOTATION in pod.annotations
    if (how == "none") == marked:  # a proxy without the injector's mark, or the reverse
        problems.append(f"{SIDECAR_STATUS_ANNOTATION} {'present' if marked else 'absent'}")
    if how != "none" and not any(c in pod.init_containers for c in REDIRECTION_CONTAINERS):
        problems.append(f"no {' or '.join(REDIRECTION_CONTAINERS)} init container")
    return f"{how} ({'; '.join(problems)})" if problems else how


def is_injected(pod: PodView) -> bool:
    return observed(pod) in ("sidecar", "native sidecar")


def injection_table(cases: Sequence[tuple[InjectionCase, Sequence[PodView]]]) -> Verdict:
    """Each case's pods against Istio's policy; the message is the table."""
    rows, wrong = [], 0
    for case, pods in cases:
        seen = sorted({observed(p) for p in pods}) or ["no pod"]
        ok = bool(pods) and all(is_injected(p) == case.injected for p in pods) and all(
            observed(p) in ("sidecar", "native sidecar", "none") for p in pods)
        wrong += not ok
        rows.append((case.name, "injected" if case.injected else "not injected", ", ".join(seen),
                     "ok" if ok else "WRONG"))
    table = render_table(("case", "expected", "observed", ""), rows)
    if wrong:
        return Verdict(False, f"{wrong} of {len(cases)} injection cases differ from Istio's policy:\n{table}")
    return Verdict(True, f"all {len(cases)} injection cases as Istio's policy says:\n{table}")
