"""A sidecar's resources: inbound listeners per container port, one outbound listener and route."""

from conformance.targets.base import Doc
from conformance.targets.local.model import OUTBOUND_PORT, Pod, Service, app_port
from conformance.targets.local.translator.clusters_listeners import (
    catch_all,
    http_listener,
    inbound_cluster_name,
    outbound_cluster_name,
    outbound_clusters,
    route_config,
    static_cluster,
)
from conformance.targets.local.translator.gateway_api_routes import (
    http_route_routes,
    mesh_http_routes,
    routes_on_port,
)
from conformance.targets.local.translator.index import MeshIndex, namespace_of, resolve_host
from conformance.targets.local.translator.resources import MESH_GATEWAY, OUTBOUND_ROUTE, ProxyConfig
from conformance.targets.local.translator.vs_routes import vs_routes

def sidecar_config(pod: Pod, index: MeshIndex, config_dir: str) -> ProxyConfig:
    listeners, clusters, routes = [], [], {}
    for port in pod.container_ports:
        route_name = inbound_cluster_name(port)  # Istio names the inbound route like its cluster
        listeners.append(
            http_listener(
                f"inbound_{pod.ip}_{port}", pod.ip, port, f"inbound_{port}", route_name,
                config_dir, "INBOUND",
            )
        )
        clusters.append(static_cluster(inbound_cluster_name(port), [(pod.ip, app_port(port))]))
        default_route = catch_all(inbound_cluster_name(port))
        routes[route_name] = route_config(
            route_name, [{"name": f"inbound|http|{port}", "domains": ["*"], "routes": [default_route]}]
        )
    listeners.append(
        http_listener(
            OUTBOUND_ROUTE, pod.ip, OUTBOUND_PORT, OUTBOUND_ROUTE, OUTBOUND_ROUTE, config_dir,
            "OUTBOUND", absolute_urls=True,
        )
    )
    clusters.extend(outbound_clusters(index))
    routes[OUTBOUND_ROUTE] = route_config(OUTBOUND_ROUTE, _outbound_virtual_hosts(pod, index))
    return ProxyConfig(listeners, clusters, routes)


def _outbound_virtual_hosts(pod: Pod, index: MeshIndex) -> list[dict]:
    """One virtual host per service port; a VirtualService or HTTPRoutes replace its default route."""
    rules = _sidecar_rules(index)
    attached = mesh_http_routes(pod, index)
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
                routes = [catch_all(outbound_cluster_name(sp.port, svc.fqdn))]
            virtual_hosts.append(
                {
                    "name": f"{svc.fqdn}:{sp.port}",
                    "domains": _service_domains(svc, sp.port, pod),
                    "routes": routes,
                }
            )
    return virtual_hosts


def _service_domains(svc: Service, port: int, pod: Pod) -> list[str]:
    """The Host values that name this service port from `pod`, as Kubernetes DNS resolves them."""
    names = [svc.fqdn, f"{svc.name}.{svc.namespace}.svc", f"{svc.name}.{svc.namespace}"]
    if svc.namespace == pod.namespace:
        names.append(svc.name)
    domains = [f"{name}:{port}" for name in names]
    if port == 80:
        # Clients leave the default port out of the Host header.
        domains.extend(names)
    return domains


def _sidecar_rules(index: MeshIndex) -> dict[str, Doc]:
    """Service fqdn -> the VirtualService sidecars apply to it.

    Istio does not merge VirtualServices for sidecars: the oldest one for a host
    wins. State order stands for creation order.
    """
    rules: dict[str, Doc] = {}
    for vs in index.state.virtual_services:
        gateways = vs["spec"].get("gateways") or [MESH_GATEWAY]
        if MESH_GATEWAY not in gateways:
            continue
        for host in vs["spec"].get("hosts") or []:
            # A host that names no Service (an external name, a wildcard) has no virtual host here.
            fqdn = resolve_host(host, namespace_of(vs))
            if fqdn in index.services:
                rules.setdefault(fqdn, vs)
    return rules
