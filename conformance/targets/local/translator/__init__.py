"""MeshState -> Envoy v3 resources for one proxy, with Istio's names and Istio's defaults.

Pure functions: no files, no processes. Other code writes the result as
DiscoveryResponse files (LDS, CDS, one RDS file per route config) that each
Envoy watches. Listeners always reference their routes through RDS, so a route
change reaches connections that are already open (a listener change would
drain them instead). The modules follow Istio's API areas: clusters and listeners,
VirtualService routes, Gateway API routes, the sidecar, the gateway, and mutants.
"""

from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.model import MeshState, Pod
from conformance.targets.local.translator.gateway import gateway_config
from conformance.targets.local.translator.index import MeshIndex
from conformance.targets.local.translator.mutants import KNOWN_MUTANTS, check_mutants
from conformance.targets.local.translator.resources import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ProxyConfig,
    check_rds_file_names,
    rds_file_name,
)
from conformance.targets.local.translator.sidecar import sidecar_config

__all__ = [
    "CLUSTER_TYPE", "KNOWN_MUTANTS", "LISTENER_TYPE", "ROUTE_TYPE", "ProxyConfig", "check_mutants", "rds_file_name",
    "translate",
]


def translate(pod: Pod, state: MeshState, config_dir: str) -> ProxyConfig:
    """The Envoy resources of `pod`'s proxy; listeners read routes from RDS files in config_dir."""
    check_mutants(state.mutants)
    # The store checks documents when they are applied; checking again here means a field
    # the translator does not read can never be ignored silently.
    for doc in (*state.virtual_services, *state.destination_rules, *state.gateways, *state.http_routes):
        check_supported(doc)
    index = MeshIndex.build(state, pod.namespace)
    if pod.proxy == "sidecar":
        config = sidecar_config(pod, index, config_dir)
    elif pod.proxy == "gateway":
        config = gateway_config(pod, index, config_dir)
    else:
        raise ValueError(f"pod {pod.namespace}/{pod.name} has no proxy (proxy={pod.proxy!r})")
    check_rds_file_names(config.routes)
    return config
