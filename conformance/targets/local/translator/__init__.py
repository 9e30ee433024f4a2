"""MeshState -> Envoy v3 resources for one proxy, with Istio's names and Istio's defaults.

Pure functions: no files, no processes. The control plane (../xds) sends the result to each
Envoy over ADS: listeners, clusters, their endpoints (EDS), and route configs (RDS).
Listeners always reference their routes through RDS, so a route change reaches connections
that are already open (a listener change would drain them instead). The modules follow
Istio's API areas: clusters and listeners, VirtualService routes, Gateway API routes, the
sidecar, the gateway, and mutants.
"""

from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.model import MeshState, Pod
from conformance.targets.local.translator.gateway import gateway_config
from conformance.targets.local.translator.gateway_api_gateway import with_gateway_api
from conformance.targets.local.translator.index import MeshIndex
from conformance.targets.local.translator.mutants import KNOWN_MUTANTS, check_mutants
from conformance.targets.local.translator.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ProxyConfig,
)
from conformance.targets.local.translator.sidecar import Outbound, outbound, sidecar_config

__all__ = [
    "CLUSTER_TYPE", "ENDPOINT_TYPE", "KNOWN_MUTANTS", "LISTENER_TYPE", "ROUTE_TYPE", "ProxyConfig", "Translation",
    "check_mutants", "translate",
]


def translate(pod: Pod, state: MeshState) -> ProxyConfig:
    """The Envoy resources of `pod`'s proxy."""
    return Translation(state).proxy(pod)


class Translation:
    """Every proxy's resources in one mesh state: the documents are checked once, and what
    depends only on the proxy's namespace (its view of the mesh) is built once per namespace."""

    def __init__(self, state: MeshState) -> None:
        check_mutants(state.mutants)
        # The store checks documents when they are applied; checking again here means a field
        # the translator does not read can never be ignored silently.
        for doc in (*state.virtual_services, *state.destination_rules, *state.gateways, *state.http_routes,
                    *state.gateway_api_gateways,
                    *state.peer_authentications, *state.authorization_policies):
            check_supported(doc)
        self.state = state
        self._indexes: dict[str, MeshIndex] = {}
        self._outbound: dict[str, Outbound] = {}

    def index(self, namespace: str) -> MeshIndex:
        if namespace not in self._indexes:
            self._indexes[namespace] = MeshIndex.build(self.state, namespace)
        return self._indexes[namespace]

    def outbound(self, namespace: str) -> Outbound:
        if namespace not in self._outbound:
            self._outbound[namespace] = outbound(namespace, self.index(namespace))
        return self._outbound[namespace]

    def proxy(self, pod: Pod) -> ProxyConfig:
        index = self.index(pod.namespace)
        if pod.proxy == "sidecar":
            return sidecar_config(pod, index, self.outbound(pod.namespace))
        if pod.proxy == "gateway":
            return with_gateway_api(gateway_config(pod, index), pod, index)
        raise ValueError(f"pod {pod.namespace}/{pod.name} has no proxy (proxy={pod.proxy!r})")
