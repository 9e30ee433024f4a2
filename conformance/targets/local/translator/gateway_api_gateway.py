"""A gateway pod's listeners and routes from the Gateway API Gateways it serves and their HTTPRoutes.

istiod turns a Gateway into an internal Istio Gateway bound to the Service it deployed, and the
HTTPRoutes attached to it into VirtualServices for that Gateway (istio/istio 1.28.0
pilot/pkg/config/kube/gateway/conversion.go convertGateways, convertHTTPRoute); a gateway proxy
gets the Gateways whose Service selects it, each listener port bound to that Service port's
targetPort (pilot/pkg/model/gateway.go resolvePorts; the managed Service's targetPort is the port).
The listeners and connection manager are the ones the Istio Gateway translator builds (gateway.py);
the routes are the HTTPRoute rules as gateway_api_routes.py translates them, in one virtual host
per hostname a route serves on the listener. A host no route serves has no virtual host: 404.
"""

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from conformance.errors import UnsupportedResource
from conformance.names import GATEWAY_API_GROUP
from conformance.targets.base import Doc
from conformance.targets.gateway_api_ingress import managed_name
from conformance.targets.local.istio_subset import describe
from conformance.targets.local.model import CLUSTER_DOMAIN, Pod
from conformance.targets.local.translator.clusters_listeners import route_config
from conformance.targets.local.translator.gateway import gateway_http_listener, host_covers
from conformance.targets.local.translator.gateway_api_routes import http_route_routes
from conformance.targets.local.translator.index import MeshIndex, name_of, namespace_of
from conformance.targets.local.translator.mutants import GATEWAY_API_IGNORED
from conformance.targets.local.translator.resources import ProxyConfig


def served_gateways(pod: Pod, index: MeshIndex) -> list[Doc]:
    """The Gateway API Gateways whose deployed Service selects `pod`."""
    found = []
    for gateway in index.state.gateway_api_gateways:
        service = index.services.get(f"{managed_name(name_of(gateway))}.{namespace_of(gateway)}.svc.{CLUSTER_DOMAIN}")
        if service is not None and service.selects(pod):
            found.append(gateway)
    return found


def with_gateway_api(config: ProxyConfig, pod: Pod, index: MeshIndex) -> ProxyConfig:
    """`config` (the pod's Istio Gateway resources) with the listeners and routes of the Gateway
    API Gateways it serves."""
    if GATEWAY_API_IGNORED in index.state.mutants:
        return config  # the mutant: the gateway runs, but no Gateway's listener reaches it
    listeners_by_port: dict[int, list[tuple[Doc, Doc]]] = {}
    for gateway in served_gateways(pod, index):
        for listener in gateway["spec"].get("listeners") or []:
            listeners_by_port.setdefault(int(listener["port"]), []).append((gateway, listener))
    taken = {listener["address"]["socket_address"]["port_value"] for listener in config.listeners}
    listeners, routes = list(config.listeners), dict(config.routes)
    for number, gateway_listeners in sorted(listeners_by_port.items()):
        if number in taken:
            raise UnsupportedResource(
                f"{describe(gateway_listeners[0][0])}: listener port {number} is also a server port of an Istio "
                f"Gateway on pod {pod.namespace}/{pod.name}: not implemented by the local mesh")
        route_name = f"http.{number}"
        listeners.append(gateway_http_listener(pod, number, route_name, index))
        route = route_config(route_name, _virtual_hosts(number, gateway_listeners, index))
        route["ignore_port_in_host_matching"] = True  # as gateway.go buildGatewayHTTPRouteConfig
        routes[route_name] = route
    return replace(config, listeners=listeners, routes=routes)


def _virtual_hosts(number: int, gateway_listeners: list[tuple[Doc, Doc]], index: MeshIndex) -> list[dict]:
    """One virtual host per hostname some attached route serves on the port, sorted by name."""
    attached_by_host: dict[str, list[Doc]] = {}
    for gateway, listener in gateway_listeners:
        for route in attached_routes(gateway, listener, index.state.http_routes):
            for host in route_hosts(route, listener):
                routes = attached_by_host.setdefault(host.lower(), [])
                if not any(r is route for r in routes):
                    routes.append(route)
    return [
        {"name": f"{host}:{number}", "domains": [host], "routes": http_route_routes(routes, index),
         "include_request_attempt_count": True}
        for host, routes in sorted(attached_by_host.items())
    ]


def attached_routes(gateway: Doc, listener: Mapping[str, Any], http_routes: tuple[Mapping[str, Any], ...]) -> list[Doc]:
    """The HTTPRoutes attached to one listener, in creation order: a parentRef naming the Gateway
    (and the listener, by sectionName or port, when it says), from a namespace the listener allows
    (allowedRoutes.namespaces.from, default Same; All allows every namespace)."""
    allowed = ((listener.get("allowedRoutes") or {}).get("namespaces") or {}).get("from", "Same")
    found = []
    for route in http_routes:
        if allowed == "Same" and namespace_of(route) != namespace_of(gateway):
            continue
        for ref in route["spec"].get("parentRefs") or []:
            if (ref.get("group", GATEWAY_API_GROUP), ref.get("kind", "Gateway")) != (GATEWAY_API_GROUP, "Gateway"):
                continue
            if ref["name"] != name_of(gateway) or (ref.get("namespace") or namespace_of(route)) != namespace_of(gateway):
                continue
            if ref.get("sectionName") not in (None, listener["name"]):
                continue
            if ref.get("port") not in (None, listener["port"]):
                continue
            found.append(route)
            break
    return found


def route_hosts(route: Doc, listener: Mapping[str, Any]) -> list[str]:
    """The hostnames a route serves on a listener: the narrower of each pair that intersects (Gateway
    API HTTPRouteSpec.hostnames); without hostnames on one side, the other's; `*` with neither."""
    listener_host = listener.get("hostname")
    route_hostnames = list(route["spec"].get("hostnames") or [])
    if not route_hostnames:
        return [listener_host or "*"]
    if not listener_host:
        return route_hostnames
    hosts = []
    for host in route_hostnames:
        if host_covers(listener_host, host):
            hosts.append(host)
        elif host_covers(host, listener_host):
            hosts.append(listener_host)
    return hosts
