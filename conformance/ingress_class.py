"""The IngressClass `istio` a KubernetesIngress check needs: Istio ships none (istio.io's
tasks/traffic-management/ingress/kubernetes-ingress creates it), so the run applies one for the
check when the cluster has none, and uses a cluster's own only when it names Istio's controller."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import pytest

from conformance import manifests
from conformance.names import RUN_ID_LABEL
from conformance.report.results import NOT_SUPPORTED_PREFIX
from conformance.targets.base import Doc, Target
from conformance.targets.local.ingress_conversion import ISTIO_INGRESS_CONTROLLER

INGRESS_CLASS_MANIFEST = "kubernetes/ingress/ingressclass-istio.yaml"


@runtime_checkable
class StoresObjects(Protocol):
    """A target that can show an object as its API server holds it (the cluster targets)."""

    def stored(self, doc: Doc, namespace: str) -> dict[str, Any] | None: ...


def stored_ingress_class(target: Target, ours: Doc) -> dict[str, Any] | None:
    """The IngressClass `istio` the target holds; a target that cannot show it (the local mesh,
    fresh each session) can hold only `ours`, the one this run applies."""
    if isinstance(target, StoresObjects):
        return target.stored(ours, "")
    return dict(ours) if target.exists(ours, "") else None


@contextmanager
def istio_ingress_class(target: Target, run_id: str) -> Iterator[str]:
    """The IngressClass `istio` for the block: applied, labelled with the run's id, when the cluster
    has none, and then removed after if it still carries that label; a cluster's own is used as it
    is, never changed, and only when it names Istio's controller (istiod ignores an Ingress of any
    other class: pilot/pkg/config/kube/ingress/virtualservices.go shouldProcessIngressWithClass)."""
    [doc] = manifests.load(INGRESS_CLASS_MANIFEST)
    ours = {**doc, "metadata": {**doc["metadata"], "labels": {RUN_ID_LABEL: run_id}}}
    own = stored_ingress_class(target, ours)
    if own is not None:
        controller = (own.get("spec") or {}).get("controller")
        if controller != ISTIO_INGRESS_CONTROLLER:
            pytest.skip(f"{NOT_SUPPORTED_PREFIX}KubernetesIngress on target {target.name}: the cluster's IngressClass "
                        f"istio names controller {controller!r}, not {ISTIO_INGRESS_CONTROLLER}, so Istio ignores "
                        "an Ingress of that class; meshconf does not change a cluster's own IngressClass")
        yield "the cluster's own IngressClass istio"
        return
    target.apply([ours], "")
    try:
        yield f"IngressClass istio (controller {ISTIO_INGRESS_CONTROLLER}) applied for the test"
    finally:
        held = stored_ingress_class(target, ours)
        if held is not None and ((held.get("metadata") or {}).get("labels") or {}).get(RUN_ID_LABEL) == run_id:
            target.delete([ours], "")  # only this run's: one that replaced it meanwhile is someone else's
