"""Clusters, listeners and route configs with Istio's names and defaults (istio/istio
pilot/pkg/networking/core cluster_builder.go, cluster_traffic_policy.go, listener.go, httproute.go)."""

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from conformance.targets.local.model import Pod, Service
from conformance.targets.local.translator.index import MeshIndex
from conformance.targets.local.translator.mtls import (
    cluster_tls,
    destination_rule_tls,
    endpoint_gets_mtls,
    endpoint_tls_mode,
    istio_mutual_sni,
    mtls_endpoint_metadata,
    service_identities,
)
from conformance.targets.local.translator.peer_authentication import (
    PeerPolicy,
    has_labels,
    service_mode,
    workload_policy,
)
from conformance.targets.local.translator.resources import (
    ADS_SOURCE,
    CLUSTER_TYPE,
    CONNECT_TIMEOUT,
    DEFAULT_LB_POLICY,
    ENDPOINT_TYPE,
    FAULT_FILTER,
    FAULT_TYPE,
    HCM_FILTER,
    HCM_TYPE,
    LISTENER_TYPE,
    NO_TIMEOUT,
    PASSTHROUGH_CLUSTER,
    PASSTHROUGH_VHOST,
    ROUTE_TYPE,
    ROUTER_FILTER,
    ROUTER_TYPE,
    SERVER_NAME,
    delimited_stat_prefix,
)
from conformance.targets.local.translator.traffic_policy import (
    default_circuit_breakers,
    outbound_policy_fields,
    port_policy,
)

# The mode of a pod's target port: (pod, port) -> DISABLE, PERMISSIVE or STRICT.
PortMode = Callable[[Pod, int], str]


def outbound_cluster_name(port: int, fqdn: str, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{fqdn}"


def inbound_cluster_name(port: int) -> str:
    return f"inbound|{port}||"


def outbound_clusters(index: MeshIndex) -> tuple[list[dict], dict[str, dict]]:
    """One EDS cluster per service port, and one per DestinationRule subset of it; and their
    endpoints (cluster name -> ClusterLoadAssignment), as istiod sends them (cluster_builder.go
    buildOutboundClusters: EDS for Kubernetes services), each with the TLS it originates
    (mtls.cluster_tls), the connection pool and outlier detection of the DestinationRule's policy
    for its port (traffic_policy.py; a subset cluster takes the rule's policy too, the local mesh
    admitting no subset policy), and endpoints marked for mutual TLS where Istio marks them."""
    clusters, endpoints = [], {}
    port_mode = _port_modes(index)
    for svc in index.state.services:
        # Only ready pods are endpoints: istiod sends no unhealthy endpoint by default (istio/istio
        # pilot/pkg/xds/endpoints/endpoint_builder.go, PILOT_SEND_UNHEALTHY_ENDPOINTS false).
        members = index.state.endpoints[svc.fqdn]
        tls = _ServiceTls(index, svc)
        for sp in svc.ports:
            dr_mode = destination_rule_tls(index, svc.fqdn, sp.port)
            policy = port_policy(index.traffic_policies.get(svc.fqdn), sp.port)
            name = outbound_cluster_name(sp.port, svc.fqdn)
            clusters.append({**tls.cluster(name, dr_mode, istio_mutual_sni(sp.port, svc.fqdn)),
                             **outbound_policy_fields(policy, index.state.mutants)})
            endpoint_mode = endpoint_tls_mode(index, svc.fqdn, sp.port)
            endpoints[name] = eds_assignment(name, members, sp.target_port, endpoint_mode, port_mode)
            for subset in index.subsets.get(svc.fqdn, ()):
                labels = subset.get("labels") or {}
                name = outbound_cluster_name(sp.port, svc.fqdn, subset["name"])
                clusters.append({**tls.cluster(name, dr_mode, istio_mutual_sni(sp.port, svc.fqdn, subset["name"])),
                                 **outbound_policy_fields(policy, index.state.mutants)})
                chosen = [pod for pod in members if has_labels(pod, labels)]
                endpoint_mode = endpoint_tls_mode(index, svc.fqdn, sp.port, subset["name"])
                endpoints[name] = eds_assignment(name, chosen, sp.target_port, endpoint_mode, port_mode)
    return clusters, endpoints


class _ServiceTls:
    """What decides the TLS of a service's clusters: the SPIFFE ids of its workloads, and the mode
    of its namespace."""

    def __init__(self, index: MeshIndex, svc: Service) -> None:
        # Every pod the service selects, ready or not: istiod collects the service accounts of all
        # of a service's endpoints (push_context.go initServiceAccounts).
        self.identities = service_identities([pod for pod in index.state.pods if svc.selects(pod)],
                                             index.state.mutants)
        self.server_mode = service_mode(svc.namespace, index.state.peer_authentications)

    def cluster(self, name: str, dr_mode: str | None, sni: str) -> dict:
        return {**eds_cluster(name), **cluster_tls(dr_mode, self.server_mode, sni, self.identities)}


def _port_modes(index: MeshIndex) -> PortMode:
    """A pod's mode per target port, each pod's policy resolved once."""
    policies: dict[tuple[str, str], PeerPolicy] = {}

    def mode(pod: Pod, port: int) -> str:
        key = (pod.namespace, pod.name)
        if key not in policies:
            policies[key] = workload_policy(pod, index.state.peer_authentications)
        return policies[key].for_port(port)

    return mode


def _cluster(name: str) -> dict:
    return {
        "@type": CLUSTER_TYPE,
        "name": name,
        # cluster_builder.go buildCluster: stats under the name and Istio's delimiter.
        "alt_stat_name": delimited_stat_prefix(name),
        "connect_timeout": CONNECT_TIMEOUT,
        # cluster_traffic_policy.go defaultLBAlgorithm, for a DestinationRule without loadBalancer.
        "lb_policy": DEFAULT_LB_POLICY,
        # cluster_traffic_policy.go applyConnectionPool: Istio's thresholds on every cluster.
        "circuit_breakers": default_circuit_breakers(),
    }


def static_cluster(name: str, endpoints: Iterable[tuple[str, int]]) -> dict:
    """A cluster whose endpoints are part of it (the inbound clusters)."""
    return {**_cluster(name), "type": "STATIC", "load_assignment": load_assignment(name, endpoints, typed=False)}


def eds_cluster(name: str) -> dict:
    """A cluster whose endpoints come from EDS under its own name (cluster_builder.go: service_name)."""
    return {**_cluster(name), "type": "EDS", "eds_cluster_config": {"eds_config": ADS_SOURCE, "service_name": name}}


def load_assignment(name: str, endpoints: Iterable[tuple[str, int]], typed: bool = True) -> dict:
    """A ClusterLoadAssignment; typed for EDS, untyped inside a cluster.

    No endpoints is valid: Envoy then answers 503 "no healthy upstream", as Istio does.
    """
    lb_endpoints = [{"endpoint": {"address": socket_address(ip, port)}} for ip, port in endpoints]
    return _assignment(name, lb_endpoints, typed)


def eds_assignment(name: str, pods: Sequence[Pod], target_port: int, dr_mode: str | None,
                   port_mode: PortMode) -> dict:
    """The EDS endpoints of `pods` on target_port; those to be sent Istio's mutual TLS say so in
    their metadata (istio/istio pilot/pkg/xds/endpoints/endpoint_builder.go buildEnvoyLbEndpoint)."""
    lb_endpoints = []
    for pod in pods:
        lb_endpoint: dict[str, Any] = {"endpoint": {"address": socket_address(pod.ip, target_port)}}
        if endpoint_gets_mtls(pod, dr_mode, port_mode(pod, target_port)):
            lb_endpoint["metadata"] = mtls_endpoint_metadata()
        lb_endpoints.append(lb_endpoint)
    return _assignment(name, lb_endpoints, typed=True)


def _assignment(name: str, lb_endpoints: list[dict], typed: bool) -> dict:
    assignment = {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints else []}
    return {"@type": ENDPOINT_TYPE, **assignment} if typed else assignment


def passthrough_cluster() -> dict:
    """Istio's PassthroughCluster (cluster_builder.go buildDefaultPassthroughCluster): ORIGINAL_DST.

    In Istio the original destination is the address iptables redirected. A local app
    talks to its sidecar as an HTTP proxy, so the destination is the host:port its request
    names: Envoy reads it from :authority. A Host that is not an IP:port (a name, or an IP
    without port) gives no destination, and Envoy answers 503 (no healthy upstream).
    """
    return {
        "@type": CLUSTER_TYPE,
        "name": PASSTHROUGH_CLUSTER,
        "alt_stat_name": delimited_stat_prefix(PASSTHROUGH_CLUSTER),
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": CONNECT_TIMEOUT,
        "circuit_breakers": default_circuit_breakers(),
        "original_dst_lb_config": {"use_http_header": True, "http_header_name": ":authority"},
    }


def socket_address(ip: str, port: int) -> dict:
    return {"socket_address": {"address": ip, "port_value": port}}


def http_listener(
    name: str, ip: str, port: int, stat_prefix: str, route_name: str, direction: str,
    absolute_urls: bool = False, *, server_name: str | None = SERVER_NAME, first_filters: Sequence[dict] = (),
    access_log: Sequence[dict] = (),
) -> dict:
    """An HTTP listener using RDS, its HTTP filters `first_filters` then Istio's fault filter and
    router, logging to `access_log`; stat_prefix is given without Istio's delimiter.

    server_name None leaves Envoy's default ("envoy"), as Istio's sidecar outbound listeners
    (istio/istio pilot/pkg/networking/util/proxy_headers.go GetProxyHeadersFromProxyConfig);
    either way Envoy overwrites the upstream's Server header (OVERWRITE, Istio's setting).
    """
    hcm = http_connection_manager(stat_prefix, route_name, absolute_urls, server_name=server_name,
                                  first_filters=first_filters, access_log=access_log)
    return listener(name, ip, port, direction, [{"filters": [hcm_filter(hcm)]}])


def listener(name: str, ip: str, port: int, direction: str, filter_chains: list[dict]) -> dict:
    return {
        "@type": LISTENER_TYPE,
        "name": name,
        "address": socket_address(ip, port),
        "traffic_direction": direction,
        "filter_chains": filter_chains,
    }


def http_connection_manager(
    stat_prefix: str, route_name: str, absolute_urls: bool = False, *, server_name: str | None = SERVER_NAME,
    first_filters: Sequence[dict] = (), access_log: Sequence[dict] = (),
) -> dict:
    """An HTTP connection manager using RDS, running `first_filters`, then the fault filter and the
    router, and logging each request to `access_log` (telemetry/access_log.py)."""
    hcm: dict[str, Any] = {
        "@type": HCM_TYPE,
        # listener.go and listener_inbound.go end every HCM stat prefix with the delimiter.
        "stat_prefix": delimited_stat_prefix(stat_prefix),
        "normalize_path": True,
        "generate_request_id": True,
        "rds": {
            "route_config_name": route_name,
            "config_source": ADS_SOURCE,
        },
        # As Istio: every HCM has the fault filter, doing nothing unless a route carries a fault
        # in typed_per_filter_config (which needs the filter in the chain, before the router).
        "http_filters": [
            *first_filters,
            {"name": FAULT_FILTER, "typed_config": {"@type": FAULT_TYPE}},
            {"name": ROUTER_FILTER, "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    if access_log:
        # As istiod sets a connection manager's access logs (listener_builder.go
        # buildHTTPConnectionManager); here the record Istio's metrics are made from.
        hcm["access_log"] = list(access_log)
    if server_name is not None:
        hcm["server_name"] = server_name
    if absolute_urls:
        # The app uses this listener as its HTTP proxy: requests arrive in absolute form.
        hcm["http_protocol_options"] = {"allow_absolute_url": True}
    return hcm


def hcm_filter(hcm: dict) -> dict:
    """The network filter running an HTTP connection manager."""
    return {"name": HCM_FILTER, "typed_config": hcm}


def route_config(name: str, virtual_hosts: list[dict]) -> dict:
    # A route may name a cluster that does not exist (a subset no DestinationRule defines):
    # Envoy must load the table and answer 503 NC for that route, as Istio. This is already
    # the default for RDS, but not for an inlined table; saying it keeps both the same.
    return {
        "@type": ROUTE_TYPE,
        "name": name,
        "virtual_hosts": virtual_hosts,
        "validate_clusters": False,
    }


def cluster_action(cluster: str) -> dict:
    return {"cluster": cluster, "timeout": NO_TIMEOUT}


def catch_all(cluster: str, retry_policy: dict | None = None) -> dict:
    """A route for every request to `cluster`, with `retry_policy` (None: no retries)."""
    action = cluster_action(cluster)
    if retry_policy is not None:
        action["retry_policy"] = retry_policy
    return {"match": {"prefix": "/"}, "route": action}


def outbound_virtual_host(name: str, domains: list[str], routes: list[dict]) -> dict:
    """A virtual host of an outbound route config: Istio enables x-envoy-attempt-count there
    (httproute.go BuildSidecarOutboundVirtualHosts, from proxy_headers.go's default)."""
    return {"name": name, "domains": domains, "routes": routes, "include_request_attempt_count": True}


def passthrough_virtual_host() -> dict:
    """httproute.go buildCatchAllVirtualHost under ALLOW_ANY (Istio's default outbound policy):
    a host no other virtual host serves goes to the PassthroughCluster, without retries."""
    route = {"name": PASSTHROUGH_VHOST, **catch_all(PASSTHROUGH_CLUSTER)}
    return outbound_virtual_host(PASSTHROUGH_VHOST, ["*"], [route])
