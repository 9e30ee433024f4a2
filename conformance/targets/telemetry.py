"""Istio's telemetry addons on a cluster, read through a port-forward: Prometheus and Kiali.

Both are Istio's samples/addons, installed in istio-system (istio/istio samples/addons):
Prometheus serves its HTTP API on 9090, Kiali its API under /kiali on 20001. A
port-forward reaches them from wherever meshconf runs, with no Service exposed.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from conformance.errors import ConformanceError
from conformance.names import ISTIO_NAMESPACE
from conformance.targets.kube import Kube

ADDON_LABEL = "app.kubernetes.io/name"  # on the pods of both samples/addons manifests


@dataclass(frozen=True)
class Addon:
    name: str
    port: int


PROMETHEUS = Addon("prometheus", 9090)
KIALI = Addon("kiali", 20001)
# The addons each MESH-TELEMETRY feature reads (Kiali builds its graph from Prometheus).
NEEDS = {"StandardMetrics": (PROMETHEUS,), "ServiceGraph": (PROMETHEUS, KIALI)}


def missing_addons(kube: Kube) -> dict[str, str]:
    """Feature -> why it cannot run: an addon it reads has no ready pod (a cluster whose mesh
    meshconf did not install may have none)."""
    missing = {addon.name for addons in NEEDS.values() for addon in addons
               if not kube.ready_pods(ISTIO_NAMESPACE, {ADDON_LABEL: addon.name})}
    return {feature: _addon_missing(next(a for a in addons if a.name in missing))
            for feature, addons in NEEDS.items() if any(a.name in missing for a in addons)}


def _addon_missing(addon: Addon) -> str:
    return (f"no ready {addon.name} pod in {ISTIO_NAMESPACE} ({ADDON_LABEL}={addon.name}): meshconf installs "
            f"Istio's {addon.name} addon on kind and with --install-mesh; elsewhere apply "
            f"samples/addons/{addon.name}.yaml of the release")


class Telemetry:
    def __init__(self, kube: Kube, timeout: float) -> None:
        self.kube = kube
        self.timeout = timeout

    def prometheus_query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query (/api/v1/query): the result's series, each with `metric` and `value`."""
        body = self._get(PROMETHEUS, "/api/v1/query", {"query": promql})
        if body.get("status") != "success":
            raise ConformanceError(
                f"Prometheus refused the query {promql!r}: {body.get('errorType', '?')}: {body.get('error', body)}"
            )
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def kiali_graph(self, namespace: str, duration: int) -> dict[str, Any]:
        """Kiali's workload graph of a namespace over the last `duration` seconds (Kiali's own
        default is 10 minutes: kiali graph/options.go): {"nodes": [...], "edges": [...]}."""
        params = {"namespaces": namespace, "graphType": "workload", "duration": f"{duration}s"}
        body = self._get(KIALI, "/kiali/api/namespaces/graph", params)
        elements = body.get("elements")
        if not isinstance(elements, dict):
            raise ConformanceError(f"Kiali's graph of {namespace!r} has no elements: {str(body)[:300]}")
        return elements

    def _get(self, addon: Addon, path: str, params: dict[str, str]) -> dict[str, Any]:
        with self._forward(addon) as base:
            try:
                reply = httpx.get(base + path, params=params, timeout=self.timeout)
            except httpx.HTTPError as exc:
                raise ConformanceError(f"{addon.name} did not answer {path}: {type(exc).__name__}: {exc}") from None
        try:
            body = reply.json()
        except ValueError:
            raise ConformanceError(
                f"{addon.name} answered {path} with {reply.status_code} and no JSON: {reply.text[:300]}"
            ) from None
        if not isinstance(body, dict):
            raise ConformanceError(f"{addon.name} answered {path} with {reply.status_code}: {str(body)[:300]}")
        return body

    @contextmanager
    def _forward(self, addon: Addon) -> Iterator[str]:
        pods = self.kube.ready_pods(ISTIO_NAMESPACE, {ADDON_LABEL: addon.name})
        if not pods:
            raise ConformanceError(_addon_missing(addon))
        with self.kube.port_forward(pods[0].name, ISTIO_NAMESPACE, addon.port) as (host, port):
            yield f"http://{host}:{port}"
