"""A sidecar's resources: inbound listeners per container port, one outbound listener and route."""

from dataclasses import dataclass

from conformance.names import MESH_GATEWAY
from conformance.targets.base import Doc
from conformance.targets.local.model import OUTBOUND_PORT, Pod, Service, app_port
from conformance.targets.local.telemetry.access_log import DESTINATION, SOURCE, access_logs
from conformance.targets.local.translator import authorization
from conformance.targets.local.translator.clusters_listeners import (
    catch_all,
    hcm_filter,
    http_connection_manager,
    http_listener,
    inbound_cluster_name,
    listener,
    outbound_cluster_name,
    outbound_clusters,
    outbound_virtual_host,
    passthrough_cluster,
    passthrough_virtual_host,
    route_config,
    static_cluster,
)
from conformance.targets.local.translator.gateway_api_routes import (
    http_route_routes,
    mesh_http_routes,
    routes_on_port,
)
from conformance.targets.local.translator.index import (
    MeshIndex,
    most_specific_host_match,
    namespace_of,
    resolve_host,
)
from conformance.targets.local.translator.mtls import inbound_filter_chains, inbound_listener_filters
from conformance.targets.local.translator.mutants import NO_PEER_VERIFICATION, STRICT_AS_PERMISSIVE
from conformance.targets.local.translator.peer_authentication import PERMISSIVE, STRICT, workload_policy
from conformance.targets.local.translator.resources import OUTBOUND_ROUTE, ProxyConfig
from conformance.targets.local.translator.retries import default_retry_policy, inbound_retry_policy
from conformance.targets.local.translator.traffic_policy import inbound_policy_fields
from conformance.targets.local.translator.vs_routes import vs_routes

# The outbound listener is an HTTP proxy for the app, as Istio's HTTP proxy listener
# (istio/istio pilot/pkg/networking/core/listener.go buildHTTPProxy, meshConfig.proxyHttpPort),
# which Istio binds to the pod's 127.0.0.1 and names "127.0.0.1_<port>": its HCM stat prefix
# is "outbound_127.0.0.1_<port>;". Istio's usual per-service-port listeners would say
# "outbound_0.0.0.0_<service port>;" instead (README: what the local mesh is not).
HTTP_PROXY_STAT_PREFIX = f"outbound_127.0.0.1_{OUTBOUND_PORT}"
# What an inbound connection manager tells the app of the client's certificate, as Istio's default
# proxy headers say (istio/istio pilot/pkg/networking/util/proxy_headers.go ForwardedClientCert,
# listener_inbound.go buildSidecarInboundHTTPOpts): X-Forwarded-Client-Cert with this proxy's
# identity (By), the client certificate's hash, subject, URI and DNS SANs, after any the client sent.
INBOUND_CLIENT_CERT = {
    "forward_client_cert_details": "APPEND_FORWARD",
    "set_current_client_cert_details": {"subject": True, "uri": True, "dns": True},
}
# Istio's protocol detection timeout (meshConfig.protocolDetectionTimeout, 0s: none): the TLS
# inspector waits for a client's first bytes as long as they take (listener_inbound.go buildInboundListener).
LISTENER_FILTERS_TIMEOUT = "0s"


@dataclass(frozen=True)
class Outbound:
    """What a sidecar sends out through: the same for every sidecar of a namespace."""

    clusters: list[dict]
    endpoints: dict[str, dict]
    route: dict


def outbound(namespace: str, index: MeshIndex) -> Outbound:
    """The outbound clusters, their endpoints and route of sidecars in `namespace` (`index` is its view)."""
    clusters, endpoints = outbound_clusters(index)
    virtual_hosts = [*_outbound_virtual_hosts(namespace, index), passthrough_virtual_host()]
    return Outbound([*clusters, passthrough_cluster()], endpoints, route_config(OUTBOUND_ROUTE, virtual_hosts))


def sidecar_config(pod: Pod, index: MeshIndex, shared: Outbound | None = None) -> ProxyConfig:
    """`shared` is outbound(pod.namespace, index), when already built for another pod."""
    listeners, clusters, routes = [], [], {}
    policy = workload_policy(pod, index.state.peer_authentications)
    # The authorization plugin's filters run after authentication, before the fault filter and the
    # router (istio/istio pilot/pkg/networking/core/listener_builder.go buildHTTPConnectionManager).
    authz = authorization.inbound_filters(pod, index)
    for port in pod.container_ports:
        route_name = inbound_cluster_name(port)  # Istio names the inbound route like its cluster
        listeners.append(_inbound_listener(pod, port, policy.for_port(port), route_name, authz, index.state.mutants))
        # A DestinationRule's connection pool applies on the server side too (traffic_policy.py).
        clusters.append({**static_cluster(inbound_cluster_name(port), [(pod.ip, app_port(port))]),
                         **inbound_policy_fields(pod, port, index)})
        default_route = catch_all(inbound_cluster_name(port), inbound_retry_policy())
        routes[route_name] = route_config(
            route_name, [{"name": f"inbound|http|{port}", "domains": ["*"], "routes": [default_route]}]
        )
    listeners.append(
        http_listener(
            OUTBOUND_ROUTE, pod.ip, OUTBOUND_PORT, HTTP_PROXY_STAT_PREFIX, OUTBOUND_ROUTE, "OUTBOUND",
            absolute_urls=True, server_name=None, access_log=access_logs(pod, SOURCE),
        )
    )
    out = shared or outbound(pod.namespace, index)
    routes[OUTBOUND_ROUTE] = out.route
    return ProxyConfig(listeners, [*clusters, *out.clusters], routes, out.endpoints)


def _inbound_listener(pod: Pod, port: int, mode: str, route_name: str, authz: list[dict],
                      mutants: frozenset[str]) -> dict:
    """The listener of a container port: Istio's inbound filter chains for the port's mutual TLS
    mode, each running the inbound connection manager (listener_inbound.go buildInboundListeners;
    Istio puts them on its virtual inbound listener, 15006, where iptables sends the port's traffic)."""
    if mode == STRICT and STRICT_AS_PERMISSIVE in mutants:
        mode = PERMISSIVE
    verify_peer = NO_PEER_VERIFICATION not in mutants
    # listener_inbound.go StatPrefix: "inbound_" + the chain's name, 0.0.0.0_<target port>.
    hcm = http_connection_manager(f"inbound_0.0.0.0_{port}", route_name, first_filters=authz,
                                  access_log=access_logs(pod, DESTINATION))
    hcm.update(INBOUND_CLIENT_CERT)
    chains = inbound_filter_chains(mode, port, [hcm_filter(hcm)], verify_peer)
    inbound = listener(f"inbound_{pod.ip}_{port}", pod.ip, port, "INBOUND", chains)
    listener_filters = inbound_listener_filters(chains)
    if listener_filters:
        inbound["listener_filters"] = listener_filters
    inbound["listener_filters_timeout"] = LISTENER_FILTERS_TIMEOUT
    inbound["continue_on_listener_filters_timeout"] = True
    return inbound


def _outbound_virtual_hosts(namespace: str, index: MeshIndex) -> list[dict]:
    """One virtual host per service port; a VirtualService or HTTPRoutes replace its default route."""
    rules = _sidecar_rules(index)
    attached = mesh_http_routes(namespace, index)
    virtual_hosts = []
    for svc in index.state.services:
        rule = rules.get(svc.fqdn)
        for sp in svc.ports:
            http_routes = routes_on_port(attached.get(svc.fqdn, []), sp.port)
            if rule is not None:
                # Istio documents a VirtualService and an HTTPRoute for one service as
                # unsupported; here the VirtualService wins.
                routes = vs_routes(rule, index, sp.port)
            elif http_routes:
                routes = http_route_routes(http_routes, index)
            else:
                # istio/istio pilot/pkg/networking/core/route/route.go BuildDefaultHTTPOutboundRoute.
                routes = [catch_all(outbound_cluster_name(sp.port, svc.fqdn), default_retry_policy())]
            virtual_hosts.append(
                outbound_virtual_host(f"{svc.fqdn}:{sp.port}", _service_domains(svc, sp.port, namespace), routes)
            )
    return virtual_hosts


def _service_domains(svc: Service, port: int, namespace: str) -> list[str]:
    """The Host values that name this service port from `namespace`, as Kubernetes DNS resolves them."""
    names = [svc.fqdn, f"{svc.name}.{svc.namespace}.svc", f"{svc.name}.{svc.namespace}"]
    if svc.namespace == namespace:
        names.append(svc.name)
    domains = [f"{name}:{port}" for name in names]
    if port == 80:
        # Clients leave the default port out of the Host header.
        domains.extend(names)
    return domains


def _sidecar_rules(index: MeshIndex) -> dict[str, Doc]:
    """Service fqdn -> the VirtualService sidecars apply to it.

    As istio/istio pilot/pkg/model/sidecar.go computeWildcardHostVirtualServiceIndex (tag
    1.28.0): a VirtualService naming the service's host wins; else the one with the most
    specific wildcard host covering it (`*.ns.svc.cluster.local` before `*.svc.cluster.local`
    before `*`). Istio does not merge VirtualServices for sidecars: for one host, the oldest
    wins; state order stands for creation order. istio_subset.py has refused the hosts that
    can name no Service.
    """
    by_host: dict[str, Doc] = {}
    for vs in index.state.virtual_services:
        gateways = vs["spec"].get("gateways") or [MESH_GATEWAY]
        if MESH_GATEWAY not in gateways:
            continue
        for host in vs["spec"].get("hosts") or []:
            by_host.setdefault(resolve_host(host, namespace_of(vs)).lower(), vs)
    rules = {}
    for fqdn in index.services:
        found = most_specific_host_match(fqdn, by_host)
        if found is not None:
            rules[fqdn] = found[1]
    return rules
