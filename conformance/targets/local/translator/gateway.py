"""An ingress gateway's resources from Istio Gateways and the VirtualServices bound to them.

As istiod builds them (istio/istio pilot/pkg/networking/core/gateway.go, tag 1.28.0):
one HTTP listener per server port whose connection manager trusts the peer address
(buildGatewayConnectionManager, createGatewayHTTPFilterChainOpts), and one route config
per port that matches hosts without their port (buildGatewayHTTPRouteConfig). HTTPS servers, and
HTTP servers redirecting to them, are gateway_tls.py's.
"""

from typing import Any

from conformance.errors import UnsupportedResource
from conformance.targets.base import Doc
from conformance.targets.local.istio_subset import describe
from conformance.targets.local.model import Pod
from conformance.targets.local.telemetry.access_log import SOURCE, access_logs
from conformance.targets.local.translator import authorization
from conformance.targets.local.translator import gateway_tls
from conformance.targets.local.translator.clusters_listeners import (
    http_connection_manager,
    http_listener,
    listener,
    outbound_clusters,
    route_config,
)
from conformance.targets.local.translator.gateway_ports import listen_port
from conformance.targets.local.translator.index import MeshIndex, name_of, namespace_of
from conformance.targets.local.translator.resources import ProxyConfig
from conformance.targets.local.translator.vs_routes import vs_routes

# meshConfig.defaultConfig.gatewayTopology.numTrustedProxies, unset by default: the
# connection's peer is the client, whatever X-Forwarded-For says.
NUM_TRUSTED_PROXIES = 0


def gateway_config(pod: Pod, index: MeshIndex) -> ProxyConfig:
    servers_by_port: dict[int, list[tuple[Doc, Doc]]] = {}
    for gateway in index.state.gateways:
        if not pod.selected_by(gateway["spec"].get("selector") or {}):
            continue
        for position, server in enumerate(gateway["spec"].get("servers") or []):
            port = server["port"]
            if str(port.get("protocol", "")).upper() not in ("HTTP", gateway_tls.HTTPS):
                raise UnsupportedResource(
                    f"{describe(gateway)}: field spec.servers[{position}].port.protocol "
                    f"{port.get('protocol')} is not implemented by the local mesh (only HTTP and HTTPS)"
                )
            # A Service port of the gateway means its targetPort (gateway_ports.py).
            servers_by_port.setdefault(listen_port(pod, int(port["number"]), index), []).append((gateway, server))
    listeners, routes = [], {}
    for number, servers in sorted(servers_by_port.items()):
        if any(gateway_tls.is_https(server) for _, server in servers):
            https, https_routes = _https_listener(pod, number, servers, index)
            listeners.append(https)
            routes.update(https_routes)
            continue
        route_name = f"http.{number}"
        listeners.append(gateway_http_listener(pod, number, route_name, index))
        virtual_hosts = gateway_tls.with_https_redirects(_gateway_virtual_hosts(number, servers, index), servers, number)
        route = route_config(route_name, virtual_hosts)
        # gateway.go buildGatewayHTTPRouteConfig: a client's Host may carry any port (the
        # Service's 80 in front of the server's 8080, say); the domains carry none.
        route["ignore_port_in_host_matching"] = True
        routes[route_name] = route
    clusters, endpoints = outbound_clusters(index)
    secrets = gateway_tls.credential_secrets(index.state.secrets, pod.namespace)
    return ProxyConfig(listeners, clusters, routes, endpoints, secrets)


def _https_listener(pod: Pod, number: int, servers: list[tuple[Doc, Doc]],
                    index: MeshIndex) -> tuple[dict, dict[str, dict]]:
    """One listener with a TLS filter chain per HTTPS server, each routing by its own route config
    (gateway.go buildGatewayTCPBasedFilterChains). A port has HTTP or HTTPS servers, never both
    (model/gateway.go MergeGateways skips the server that would mix them; the local mesh refuses it)."""
    plain = [server for _, server in servers if not gateway_tls.is_https(server)]
    if plain:
        raise UnsupportedResource(f"port {number} of the gateway has both HTTP and HTTPS servers; Istio drops "
                                  "one of them, the local mesh implements neither")
    chains, routes, hosts = [], {}, set()
    for gateway, server in servers:
        # Two chains matching one SNI would be refused by Envoy: istiod skips the later server
        # (model/gateway.go MergeGateways, CheckDuplicates).
        if hosts & set(server.get("hosts") or []):
            continue
        hosts |= set(server.get("hosts") or [])
        route_name = gateway_tls.https_route_name(gateway, server)
        hcm = http_connection_manager(f"outbound_0.0.0.0_{number}", route_name,
                                      first_filters=authorization.inbound_filters(pod, index),
                                      access_log=access_logs(pod, SOURCE))
        gateway_connection_manager(hcm)
        chains.append(gateway_tls.https_filter_chain(server, hcm))
        routes[route_name] = route_config(route_name, _gateway_virtual_hosts(number, [(gateway, server)], index))
        routes[route_name]["ignore_port_in_host_matching"] = True
    https = listener(f"{pod.ip}_{number}", pod.ip, number, "OUTBOUND", [])
    https.update(gateway_tls.https_listener_fields(chains, index.state.mutants))
    return https, routes


def gateway_http_listener(pod: Pod, number: int, route_name: str, index: MeshIndex) -> dict[str, Any]:
    """A gateway's plain HTTP listener on `number`, its routes from RDS `route_name`.
    AuthorizationPolicies selecting the gateway apply on it, as on a sidecar's inbound listeners
    (istio/istio pilot/pkg/networking/core/listener_builder.go buildHTTPConnectionManager)."""
    listener = http_listener(
        f"{pod.ip}_{number}", pod.ip, number, f"outbound_0.0.0.0_{number}", route_name, "OUTBOUND",
        first_filters=authorization.inbound_filters(pod, index), access_log=access_logs(pod, SOURCE),
    )
    gateway_connection_manager(listener["filter_chains"][0]["filters"][0]["typed_config"])
    return listener


def gateway_connection_manager(hcm: dict[str, Any]) -> None:
    """The settings istiod gives a gateway's HTTP connection manager and not a sidecar's."""
    # The gateway is the mesh's edge: the peer of the connection is the client, which Envoy
    # appends to X-Forwarded-For (createGatewayHTTPFilterChainOpts useRemoteAddress: true).
    hcm["use_remote_address"] = True
    hcm["xff_num_trusted_hops"] = NUM_TRUSTED_PROXIES
    # A client's X-Forwarded-Client-Cert is never passed on (buildGatewayConnectionManager).
    hcm["forward_client_cert_details"] = "SANITIZE_SET"
    hcm["set_current_client_cert_details"] = {"subject": True, "cert": True, "dns": True, "uri": True}


def _gateway_virtual_hosts(
    number: int, servers: list[tuple[Doc, Doc]], index: MeshIndex
) -> list[dict]:
    """One virtual host per admitted host, sorted by name (util.SortVirtualHosts).

    As gateway.go buildGatewayHTTPRouteConfig loops: the servers of the port in the order of
    their Gateways' creation, and for each the VirtualServices bound to its Gateway in creation
    order (push_context.go VirtualServicesForGateway). Each VirtualService's routes are cut
    after its first catch-all (route.go BuildHTTPRoutesForVirtualService) and appended to every
    host it shares with the server, once per server, as istiod does; then the catch-all routes
    move last, in their order (route.go SortVHostRoutes), so a catch-all of one VirtualService
    does not hide the routes of another.
    """
    routes_by_host: dict[str, list[dict]] = {}
    for gateway, server in servers:
        for vs in index.state.virtual_services:
            if not _binds(vs, gateway):
                continue
            hosts = _intersecting_hosts(server, vs, namespace_of(gateway))
            if not hosts:
                continue
            routes = _up_to_catch_all(vs_routes(vs, index, number))
            for host in hosts:
                # Envoy compares hosts without case; Istio lowercases them.
                routes_by_host.setdefault(host.lower(), []).extend(routes)
    return [
        {
            "name": f"{host}:{number}",
            "domains": [host],
            "routes": _catch_alls_last(routes),
            # proxy_headers.go: the upstream sees x-envoy-attempt-count.
            "include_request_attempt_count": True,
        }
        for host, routes in sorted(routes_by_host.items(), key=lambda item: f"{item[0]}:{number}")
    ]


def _is_catch_all(route: dict) -> bool:
    """route.go IsCatchAllRoute: the path matches everything and nothing else is matched."""
    match = route["match"]
    every_path = (
        match.get("prefix") == "/"
        or match.get("path_separated_prefix") == "/"
        or (match.get("safe_regex") or {}).get("regex") == ".*"
    )
    return every_path and not any(match.get(key) for key in ("headers", "query_parameters", "dynamic_metadata"))


def _up_to_catch_all(routes: list[dict]) -> list[dict]:
    """A route after a catch-all can never match: istiod leaves it out."""
    for position, route in enumerate(routes):
        if _is_catch_all(route):
            return routes[: position + 1]
    return routes


def _catch_alls_last(routes: list[dict]) -> list[dict]:
    return [r for r in routes if not _is_catch_all(r)] + [r for r in routes if _is_catch_all(r)]


def _binds(vs: Doc, gateway: Doc) -> bool:
    """`name` means the gateway in the VirtualService's namespace; `ns/name` any namespace."""
    wanted = {f"{namespace_of(gateway)}/{name_of(gateway)}"}
    if namespace_of(gateway) == namespace_of(vs):
        wanted.add(name_of(gateway))
    return any(ref in wanted for ref in vs["spec"].get("gateways") or [])


def _intersecting_hosts(server: Doc, vs: Doc, gateway_ns: str) -> list[str]:
    """The hosts a gateway server serves for a VirtualService (host.go Names.Intersection of the
    server's hosts for the VirtualService's namespace, host.NamesForNamespace, and its hosts).

    A server host may carry a namespace (`ns/host`, `./host`, `*/host`) that the
    VirtualService must live in. When one side is a wildcard covering the
    other, the narrower host is served, as Istio does.
    """
    hosts: list[str] = []
    for server_host in server.get("hosts") or []:
        if "/" in server_host:
            namespace, server_host = server_host.split("/", 1)
            namespace = gateway_ns if namespace == "." else namespace
            if namespace not in ("*", namespace_of(vs)):
                continue
        for vs_host in vs["spec"].get("hosts") or []:
            if host_covers(vs_host, server_host):
                narrower = server_host
            elif host_covers(server_host, vs_host):
                narrower = vs_host
            else:
                continue
            if narrower not in hosts:
                hosts.append(narrower)
    return hosts


def host_covers(pattern: str, host: str) -> bool:
    """Whether every name `host` stands for also matches `pattern` (`*`, `*.suffix`, exact)."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        return host.endswith(suffix) and len(host) > len(suffix)
    return pattern == host

