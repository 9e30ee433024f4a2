"""An ingress gateway's resources from Istio Gateways and the VirtualServices bound to them."""

from conformance.errors import UnsupportedResource
from conformance.targets.base import Doc
from conformance.targets.local.istio_subset import describe
from conformance.targets.local.model import Pod
from conformance.targets.local.translator.clusters_listeners import (
    http_listener,
    outbound_clusters,
    route_config,
)
from conformance.targets.local.translator.index import MeshIndex, name_of, namespace_of
from conformance.targets.local.translator.resources import ProxyConfig
from conformance.targets.local.translator.vs_routes import vs_routes

def gateway_config(pod: Pod, index: MeshIndex, config_dir: str) -> ProxyConfig:
    servers_by_port: dict[int, list[tuple[Doc, Doc]]] = {}
    for gateway in index.state.gateways:
        if not pod.selected_by(gateway["spec"].get("selector") or {}):
            continue
        for position, server in enumerate(gateway["spec"].get("servers") or []):
            port = server["port"]
            if str(port.get("protocol", "")).upper() != "HTTP":
                raise UnsupportedResource(
                    f"{describe(gateway)}: field spec.servers[{position}].port.protocol "
                    f"{port.get('protocol')} is not implemented by the local mesh (only HTTP)"
                )
            servers_by_port.setdefault(int(port["number"]), []).append((gateway, server))
    listeners, routes = [], {}
    for number, servers in sorted(servers_by_port.items()):
        route_name = f"http.{number}"
        listeners.append(
            http_listener(
                f"{pod.ip}_{number}", pod.ip, number, f"outbound_0.0.0.0_{number}", route_name,
                config_dir, "OUTBOUND",
            )
        )
        virtual_hosts = _gateway_virtual_hosts(number, servers, index)
        routes[route_name] = route_config(route_name, virtual_hosts)
    return ProxyConfig(listeners, outbound_clusters(index), routes)


def _gateway_virtual_hosts(
    number: int, servers: list[tuple[Doc, Doc]], index: MeshIndex
) -> list[dict]:
    """One virtual host per admitted host; VirtualServices for one host are merged, in order."""
    routes_by_host: dict[str, list[dict]] = {}
    for vs in index.state.virtual_services:
        admitted: list[str] = []
        for gateway, server in servers:
            if not _binds(vs, gateway):
                continue
            for host in vs["spec"].get("hosts") or []:
                for server_host in server.get("hosts") or []:
                    match = _admitted_host(host, server_host, namespace_of(vs), namespace_of(gateway))
                    if match is not None and match not in admitted:
                        admitted.append(match)
        for host in admitted:
            routes_by_host.setdefault(host, []).extend(vs_routes(vs, index, None))
    return [
        {"name": f"{host}:{number}", "domains": _gateway_domains(host, number), "routes": routes}
        for host, routes in routes_by_host.items()
    ]


def _binds(vs: Doc, gateway: Doc) -> bool:
    """`name` means the gateway in the VirtualService's namespace; `ns/name` any namespace."""
    wanted = {f"{namespace_of(gateway)}/{name_of(gateway)}"}
    if namespace_of(gateway) == namespace_of(vs):
        wanted.add(name_of(gateway))
    return any(ref in wanted for ref in vs["spec"].get("gateways") or [])


def _admitted_host(vs_host: str, server_host: str, vs_ns: str, gateway_ns: str) -> str | None:
    """The host a gateway server serves for a VirtualService host, or None.

    A server host may carry a namespace (`ns/host`, `./host`, `*/host`) that the
    VirtualService must live in. When one side is a wildcard covering the
    other, the narrower host is served, as Istio does.
    """
    if "/" in server_host:
        namespace, server_host = server_host.split("/", 1)
        namespace = gateway_ns if namespace == "." else namespace
        if namespace not in ("*", vs_ns):
            return None
    if _covers(server_host, vs_host):
        return vs_host
    if _covers(vs_host, server_host):
        return server_host
    return None


def _covers(pattern: str, host: str) -> bool:
    """Whether every name `host` stands for also matches `pattern` (`*`, `*.suffix`, exact)."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        return host.endswith(suffix) and len(host) > len(suffix)
    return pattern == host


def _gateway_domains(host: str, number: int) -> list[str]:
    if host == "*":
        return ["*"]
    return [host, f"{host}:{number}"]
