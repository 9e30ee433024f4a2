"""MeshState -> Envoy v3 resources for one proxy, with Istio's names and Istio's defaults.

Pure functions: no files, no processes. Other code writes the result as
DiscoveryResponse files (LDS, CDS, one RDS file per route config) that each
Envoy watches. Listeners always reference their routes through RDS, so a route
change reaches connections that are already open (a listener change would
drain them instead).
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from conformance.errors import ConformanceError, ManifestError, UnsupportedResource
from conformance.targets.base import Doc
from conformance.targets.local.istio_subset import check_supported, describe
from conformance.targets.local.model import (
    CLUSTER_DOMAIN,
    OUTBOUND_PORT,
    MeshState,
    Pod,
    Service,
    app_port,
)

KNOWN_MUTANTS: dict[str, str] = {
    "swap-subsets": "a route to a subset goes to the next subset of its DestinationRule "
    "(v1->v2, v2->v3, v3->v1)",
    "ignore-weights": "weighted destinations (VirtualService and HTTPRoute) all get equal weight, "
    "zero weights included",
    "ignore-header-match": "header conditions of VirtualService and HTTPRoute matches are dropped "
    "(a match with only headers matches every request)",
    "no-fault-injection": "VirtualService faults (abort, delay) are not configured",
    "no-timeouts": "route timeouts (VirtualService timeout, HTTPRoute timeouts.request) are not "
    "configured: no timeout, as by Istio's default",
}

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FAULT_FILTER = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"

SERVER_NAME = "istio-envoy"
OUTBOUND_ROUTE = "outbound"
MESH_GATEWAY = "mesh"
# Istio's defaults: 10s connect timeout, and circuit breakers opened wide (Envoy's own
# default of 1024 would be a limit no Istio configuration asked for).
CONNECT_TIMEOUT = "10s"
UNLIMITED = 4294967295
# Istio disables Envoy's 15s default route timeout: no timeout unless a VirtualService sets one.
NO_TIMEOUT = "0s"


@dataclass(frozen=True)
class ProxyConfig:
    listeners: list[dict]  # envoy.config.listener.v3.Listener JSON, with "@type"
    clusters: list[dict]  # envoy.config.cluster.v3.Cluster JSON, with "@type"
    routes: dict[str, dict]  # route config name -> RouteConfiguration JSON, with "@type"


# ---------------------------------------------------------------------------------------------
# Public entry points


def translate(pod: Pod, state: MeshState, config_dir: str) -> ProxyConfig:
    """The Envoy resources of `pod`'s proxy; listeners read routes from RDS files in config_dir."""
    unknown = sorted(state.mutants - KNOWN_MUTANTS.keys())
    if unknown:
        raise ConformanceError(
            f"unknown mutant(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_MUTANTS))}"
        )
    # The store checks documents when they are applied; checking again here means a field
    # the translator does not read can never be ignored silently.
    for doc in (*state.virtual_services, *state.destination_rules, *state.gateways, *state.http_routes):
        check_supported(doc)
    index = _Index.build(state)
    if pod.proxy == "sidecar":
        config = _sidecar(pod, index, config_dir)
    elif pod.proxy == "gateway":
        config = _gateway(pod, index, config_dir)
    else:
        raise ValueError(f"pod {pod.namespace}/{pod.name} has no proxy (proxy={pod.proxy!r})")
    _check_rds_file_names(config.routes)
    return config


def rds_file_name(route_name: str) -> str:
    """The file (in the config directory) that holds route config `route_name`."""
    return f"rds_{re.sub(r'[^A-Za-z0-9_.-]', '_', route_name)}.json"


def rds_path(config_dir: str, route_name: str) -> str:
    return f"{config_dir.rstrip('/')}/{rds_file_name(route_name)}"


def rds_config_source(route_name: str, config_dir: str) -> dict:
    """Where a listener finds route config `route_name`: a watched file.

    Envoy reloads the file when an entry is moved into the watched directory, so
    writers must replace it atomically (write a temporary file, then rename).
    """
    return {
        "path_config_source": {
            "path": rds_path(config_dir, route_name),
            "watched_directory": {"path": config_dir.rstrip("/") or "/"},
        },
        "resource_api_version": "V3",
    }


# ---------------------------------------------------------------------------------------------
# What the translation looks things up in


@dataclass(frozen=True)
class _Index:
    state: MeshState
    services: Mapping[str, Service]  # fqdn -> Service
    subsets: Mapping[str, tuple[Doc, ...]]  # fqdn -> DestinationRule subsets, merged in order

    @staticmethod
    def build(state: MeshState) -> "_Index":
        services = {svc.fqdn: svc for svc in state.services}
        subsets: dict[str, list[Doc]] = {}
        for rule in state.destination_rules:
            fqdn = resolve_host(rule["spec"]["host"], _namespace(rule))
            merged = subsets.setdefault(fqdn, [])
            # Istio merges DestinationRules for one host; the first definition of a subset wins.
            known = {subset["name"] for subset in merged}
            merged.extend(s for s in rule["spec"].get("subsets") or [] if s["name"] not in known)
        return _Index(state, services, {k: tuple(v) for k, v in subsets.items()})

    def subset_names(self, fqdn: str) -> list[str]:
        return [subset["name"] for subset in self.subsets.get(fqdn, ())]


def resolve_host(host: str, namespace: str) -> str:
    """A short name (no dot) is relative to the namespace of the rule naming it, as in Istio."""
    if "." in host or "*" in host:
        return host
    return f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"


def _namespace(doc: Doc) -> str:
    return doc["metadata"]["namespace"]


def _name(doc: Doc) -> str:
    return doc["metadata"]["name"]


# ---------------------------------------------------------------------------------------------
# Clusters


def outbound_cluster_name(port: int, fqdn: str, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{fqdn}"


def inbound_cluster_name(port: int) -> str:
    return f"inbound|{port}||"


def _outbound_clusters(index: _Index) -> list[dict]:
    """One cluster per service port, and one per DestinationRule subset of it."""
    clusters = []
    for svc in index.state.services:
        members = [pod for pod in index.state.pods if svc.selects(pod)]
        for sp in svc.ports:
            endpoints = [(pod.ip, sp.target_port) for pod in members]
            clusters.append(_static_cluster(outbound_cluster_name(sp.port, svc.fqdn), endpoints))
            for subset in index.subsets.get(svc.fqdn, ()):
                labels = subset.get("labels") or {}
                chosen = [(pod.ip, sp.target_port) for pod in members if _has_labels(pod, labels)]
                name = outbound_cluster_name(sp.port, svc.fqdn, subset["name"])
                clusters.append(_static_cluster(name, chosen))
    return clusters


def _has_labels(pod: Pod, labels: Mapping[str, str]) -> bool:
    return all(pod.labels.get(key) == value for key, value in labels.items())


def _static_cluster(name: str, endpoints: Iterable[tuple[str, int]]) -> dict:
    lb_endpoints = [
        {"endpoint": {"address": _socket_address(ip, port)}} for ip, port in endpoints
    ]
    return {
        "@type": CLUSTER_TYPE,
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": UNLIMITED,
                    "max_pending_requests": UNLIMITED,
                    "max_requests": UNLIMITED,
                    "max_retries": UNLIMITED,
                }
            ]
        },
        # No endpoints is valid: Envoy then answers 503 "no healthy upstream", as Istio does.
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints else [],
        },
    }


def _socket_address(ip: str, port: int) -> dict:
    return {"socket_address": {"address": ip, "port_value": port}}


# ---------------------------------------------------------------------------------------------
# Listeners


def _http_listener(
    name: str, ip: str, port: int, stat_prefix: str, route_name: str, config_dir: str,
    direction: str, absolute_urls: bool = False,
) -> dict:
    hcm: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "server_name": SERVER_NAME,
        "normalize_path": True,
        "generate_request_id": True,
        "rds": {
            "route_config_name": route_name,
            "config_source": rds_config_source(route_name, config_dir),
        },
        # As Istio: every HCM has the fault filter, doing nothing unless a route carries a fault
        # in typed_per_filter_config (which needs the filter in the chain, before the router).
        "http_filters": [
            {"name": FAULT_FILTER, "typed_config": {"@type": FAULT_TYPE}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    if absolute_urls:
        # The app uses this listener as its HTTP proxy: requests arrive in absolute form.
        hcm["http_protocol_options"] = {"allow_absolute_url": True}
    return {
        "@type": LISTENER_TYPE,
        "name": name,
        "address": _socket_address(ip, port),
        "traffic_direction": direction,
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def _route_config(name: str, virtual_hosts: list[dict]) -> dict:
    # A route may name a cluster that does not exist (a subset no DestinationRule defines):
    # Envoy must load the table and answer 503 NC for that route, as Istio. This is already
    # the default for RDS, but not for an inlined table; saying it keeps both the same.
    return {
        "@type": ROUTE_TYPE,
        "name": name,
        "virtual_hosts": virtual_hosts,
        "validate_clusters": False,
    }


def _catch_all(cluster: str) -> dict:
    return {"match": {"prefix": "/"}, "route": _cluster_action(cluster)}


# ---------------------------------------------------------------------------------------------
# Sidecar


def _sidecar(pod: Pod, index: _Index, config_dir: str) -> ProxyConfig:
    listeners, clusters, routes = [], [], {}
    for port in pod.container_ports:
        route_name = inbound_cluster_name(port)  # Istio names the inbound route like its cluster
        listeners.append(
            _http_listener(
                f"inbound_{pod.ip}_{port}", pod.ip, port, f"inbound_{port}", route_name,
                config_dir, "INBOUND",
            )
        )
        clusters.append(_static_cluster(inbound_cluster_name(port), [(pod.ip, app_port(port))]))
        catch_all = _catch_all(inbound_cluster_name(port))
        routes[route_name] = _route_config(
            route_name, [{"name": f"inbound|http|{port}", "domains": ["*"], "routes": [catch_all]}]
        )
    listeners.append(
        _http_listener(
            OUTBOUND_ROUTE, pod.ip, OUTBOUND_PORT, OUTBOUND_ROUTE, OUTBOUND_ROUTE, config_dir,
            "OUTBOUND", absolute_urls=True,
        )
    )
    clusters.extend(_outbound_clusters(index))
    routes[OUTBOUND_ROUTE] = _route_config(OUTBOUND_ROUTE, _outbound_virtual_hosts(pod, index))
    return ProxyConfig(listeners, clusters, routes)


def _outbound_virtual_hosts(pod: Pod, index: _Index) -> list[dict]:
    """One virtual host per service port; a VirtualService or HTTPRoutes replace its default route."""
    rules = _sidecar_rules(index)
    attached = _mesh_http_routes(pod, index)
    virtual_hosts = []
    for svc in index.state.services:
        rule = rules.get(svc.fqdn)
        for sp in svc.ports:
            http_routes = _routes_on_port(attached.get(svc.fqdn, []), sp.port)
            if rule is not None:
                # Istio documents a VirtualService and an HTTPRoute for one service as
                # unsupported; here the VirtualService wins.
                routes = _vs_routes(rule, index, sp.port)
            elif http_routes:
                routes = _http_route_routes(http_routes, index)
            else:
                routes = [_catch_all(outbound_cluster_name(sp.port, svc.fqdn))]
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


def _sidecar_rules(index: _Index) -> dict[str, Doc]:
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
            fqdn = resolve_host(host, _namespace(vs))
            if fqdn in index.services:
                rules.setdefault(fqdn, vs)
    return rules


# ---------------------------------------------------------------------------------------------
# Gateway


def _gateway(pod: Pod, index: _Index, config_dir: str) -> ProxyConfig:
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
            _http_listener(
                f"{pod.ip}_{number}", pod.ip, number, f"outbound_0.0.0.0_{number}", route_name,
                config_dir, "OUTBOUND",
            )
        )
        virtual_hosts = _gateway_virtual_hosts(number, servers, index)
        routes[route_name] = _route_config(route_name, virtual_hosts)
    return ProxyConfig(listeners, _outbound_clusters(index), routes)


def _gateway_virtual_hosts(
    number: int, servers: list[tuple[Doc, Doc]], index: _Index
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
                    match = _admitted_host(host, server_host, _namespace(vs), _namespace(gateway))
                    if match is not None and match not in admitted:
                        admitted.append(match)
        for host in admitted:
            routes_by_host.setdefault(host, []).extend(_vs_routes(vs, index, None))
    return [
        {"name": f"{host}:{number}", "domains": _gateway_domains(host, number), "routes": routes}
        for host, routes in routes_by_host.items()
    ]


def _binds(vs: Doc, gateway: Doc) -> bool:
    """`name` means the gateway in the VirtualService's namespace; `ns/name` any namespace."""
    wanted = {f"{_namespace(gateway)}/{_name(gateway)}"}
    if _namespace(gateway) == _namespace(vs):
        wanted.add(_name(gateway))
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


# ---------------------------------------------------------------------------------------------
# VirtualService http routes


def _vs_routes(vs: Doc, index: _Index, vhost_port: int | None) -> list[dict]:
    """Envoy routes for the VirtualService's http list, in order: one per match entry.

    No catch-all is added: a request no http route matches gets 404, as in Istio.
    """
    mutants = index.state.mutants
    routes = []
    for position, http in enumerate(vs["spec"].get("http") or []):
        action = _route_action(vs, position, http, index, vhost_port)
        fault = _fault_config(http.get("fault"), f"{describe(vs)}: spec.http[{position}].fault")
        for match in http.get("match") or [None]:
            route: dict[str, Any] = {"match": _route_match(match, mutants), "route": action}
            if http.get("name"):
                route["name"] = http["name"]
            if fault is not None and "no-fault-injection" not in mutants:
                # Read by the HCM's fault filter: the client's sidecar injects the fault, as Istio.
                route["typed_per_filter_config"] = {FAULT_FILTER: fault}
            routes.append(route)
    return routes


def _route_match(match: Doc | None, mutants: frozenset[str]) -> dict:
    """Istio HTTPMatchRequest -> Envoy RouteMatch; the fields of one match are ANDed."""
    result: dict[str, Any] = {"prefix": "/"}
    if match is None:
        return result
    uri = match.get("uri")
    if uri:
        if "exact" in uri:
            result = {"path": uri["exact"]}
        elif "prefix" in uri:
            result = {"prefix": uri["prefix"]}
        elif "regex" in uri:
            result = {"safe_regex": {"regex": uri["regex"]}}
    headers = [
        _header_match(name, spec or {}) for name, spec in (match.get("headers") or {}).items()
    ]
    if headers and "ignore-header-match" not in mutants:
        result["headers"] = headers
    return result


def _header_match(name: str, spec: Mapping[str, str]) -> dict:
    if "exact" in spec:
        return {"name": name, "string_match": {"exact": spec["exact"]}}
    if "prefix" in spec:
        return {"name": name, "string_match": {"prefix": spec["prefix"]}}
    if "regex" in spec:
        return {"name": name, "string_match": {"safe_regex": {"regex": spec["regex"]}}}
    # Istio reads a header with no match type as "present".
    return {"name": name, "present_match": True}


def _route_action(vs: Doc, position: int, http: Doc, index: _Index, vhost_port: int | None) -> dict:
    where = f"{describe(vs)}: spec.http[{position}]"
    destinations = http.get("route") or []
    if not destinations:
        raise ManifestError(f"{where} has no route (the local mesh needs route destinations)")
    mutants = index.state.mutants
    clusters = [
        (_destination_cluster(d["destination"], vs, index, vhost_port, where), d.get("weight"))
        for d in destinations
    ]
    if len(clusters) == 1:
        action = _cluster_action(clusters[0][0])
    else:
        if "ignore-weights" in mutants:
            clusters = [(name, 1) for name, _ in clusters]
        # Istio drops the destinations that get no traffic (weight omitted or 0).
        weighted = [{"name": name, "weight": int(w)} for name, w in clusters if w]
        if not weighted:
            raise ManifestError(f"{where}: the route weights add up to 0")
        action = {"weighted_clusters": {"clusters": weighted}, "timeout": NO_TIMEOUT}
    if http.get("timeout") is not None and "no-timeouts" not in mutants:
        action["timeout"] = envoy_duration(str(http["timeout"]), f"{where}.timeout")
    return action


def _cluster_action(cluster: str) -> dict:
    return {"cluster": cluster, "timeout": NO_TIMEOUT}


def _destination_cluster(
    destination: Doc, vs: Doc, index: _Index, vhost_port: int | None, where: str
) -> str:
    fqdn = resolve_host(destination["host"], _namespace(vs))
    port = _destination_port(destination, index.services.get(fqdn), vhost_port, where)
    subset = destination.get("subset") or ""
    if subset and "swap-subsets" in index.state.mutants:
        subset = _next_subset(index.subset_names(fqdn), subset)
    # A subset no DestinationRule defines still names a cluster, which does not exist:
    # Envoy answers 503 (NC), as Istio does.
    return outbound_cluster_name(port, fqdn, subset)


def _destination_port(
    destination: Doc, svc: Service | None, vhost_port: int | None, where: str
) -> int:
    number = (destination.get("port") or {}).get("number")
    if number is not None:
        return int(number)
    if svc is not None and len(svc.ports) == 1:
        return svc.ports[0].port
    # A sidecar routes a multi-port service to the port the request came in on.
    if vhost_port is not None and (svc is None or any(sp.port == vhost_port for sp in svc.ports)):
        return vhost_port
    raise ManifestError(
        f"{where}: destination {destination['host']} needs port.number "
        f"(the service has several ports or is unknown)"
    )


def _next_subset(names: list[str], subset: str) -> str:
    """Mutant swap-subsets: the subset after `subset` in its DestinationRule, cyclically."""
    if subset not in names:
        return subset
    return names[(names.index(subset) + 1) % len(names)]


# ---------------------------------------------------------------------------------------------
# VirtualService faults


def _fault_config(fault: Doc | None, where: str) -> dict | None:
    """Istio HTTPFaultInjection -> Envoy HTTPFault for a route's typed_per_filter_config."""
    if not fault:
        return None
    abort, delay = fault.get("abort"), fault.get("delay")
    if not abort and not delay:
        raise ManifestError(f"{where} needs an abort and/or a delay")
    config: dict[str, Any] = {"@type": FAULT_TYPE}
    if abort:
        config["abort"] = {
            "http_status": _abort_status(abort.get("httpStatus"), f"{where}.abort.httpStatus"),
            "percentage": _fraction(abort.get("percentage"), f"{where}.abort.percentage.value"),
        }
    if delay:
        fixed = delay.get("fixedDelay")
        if fixed is None:
            raise ManifestError(f"{where}.delay needs fixedDelay (the local mesh implements fixed delays)")
        if duration_nanos(str(fixed), f"{where}.delay.fixedDelay") < 10**6:
            raise ManifestError(f"{where}.delay.fixedDelay {fixed!r} must be at least 1ms")
        config["delay"] = {
            "fixed_delay": envoy_duration(str(fixed), f"{where}.delay.fixedDelay"),
            "percentage": _fraction(delay.get("percentage"), f"{where}.delay.percentage.value"),
        }
    return config


def _abort_status(status: Any, where: str) -> int:
    # Envoy refuses a status outside [200, 600); so does Istio's validation.
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status < 600:
        raise ManifestError(f"{where}: {status!r} is not an HTTP status from 200 to 599")
    return status


def _fraction(percentage: Doc | None, where: str) -> dict:
    """Istio Percent (0-100, a double) -> Envoy FractionalPercent per million.

    Decimal keeps values such as 0.1 exact (1000 per million); a float product
    could land just below and be truncated. Absent means no request is faulted,
    as Istio documents (istio/api virtual_service.proto: "If not specified, no
    request will be aborted" / "delayed").
    """
    raw = (percentage or {}).get("value")
    raw = 0 if raw is None else raw
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        value = Decimal("NaN")
    if isinstance(raw, bool) or not value.is_finite() or not 0 <= value <= 100:
        raise ManifestError(f"{where}: {raw!r} is not a percentage from 0 to 100")
    return {"numerator": int(value * 10000), "denominator": "MILLION"}


# ---------------------------------------------------------------------------------------------
# Gateway API HTTPRoutes for the mesh (GAMMA: the parent is a Service)


@dataclass(frozen=True)
class _Attachment:
    route: Doc
    port: int | None  # parentRef.port; None: every port of the Service
    consumer: bool  # the route lives in another namespace than the Service


def _mesh_http_routes(pod: Pod, index: _Index) -> dict[str, list[_Attachment]]:
    """Service fqdn -> the HTTPRoutes attached to it that apply to `pod`'s sidecar.

    GAMMA: a route in the Service's namespace (producer route) applies to every
    client; a route in another namespace (consumer route) applies only to
    clients in its own namespace, and there it replaces the producer routes.
    """
    found: dict[str, list[_Attachment]] = {}
    for route in index.state.http_routes:
        route_ns = _namespace(route)
        # check_supported has refused every parent that is not a Service.
        for ref in route["spec"].get("parentRefs") or []:
            service_ns = ref.get("namespace") or route_ns
            fqdn = resolve_host(ref["name"], service_ns)
            consumer = service_ns != route_ns
            # A parent naming no Service attaches nowhere, like a VirtualService host.
            if fqdn not in index.services or (consumer and pod.namespace != route_ns):
                continue
            port = ref.get("port")
            found.setdefault(fqdn, []).append(
                _Attachment(route, None if port is None else int(port), consumer)
            )
    for fqdn, attachments in found.items():
        if any(a.consumer for a in attachments):
            found[fqdn] = [a for a in attachments if a.consumer]
    return found


def _routes_on_port(attachments: Sequence[_Attachment], port: int) -> list[Doc]:
    """The routes for one service port, each once, in creation order."""
    routes: list[Doc] = []
    for attachment in attachments:
        if attachment.port in (None, port) and not any(r is attachment.route for r in routes):
            routes.append(attachment.route)
    return routes


def _http_route_routes(http_routes: Sequence[Doc], index: _Index) -> list[dict]:
    """Envoy routes for the rules of all routes attached to one service port.

    One Envoy route per match, ordered by the Gateway API's precedence (exact
    path, longest prefix, most headers), ties kept in route then rule order, as
    Istio merges and sorts them. No catch-all is added: a request no rule
    matches gets 404, as the Gateway API requires.
    """
    ranked: list[tuple[tuple[int, int, int], dict]] = []
    for route in http_routes:
        # Absent rules and matches take the CRD defaults: one rule, matching every path.
        for position, rule in enumerate(route["spec"].get("rules") or [{}]):
            where = f"{describe(route)}: spec.rules[{position}]"
            action = _backend_action(rule, route, index, where)
            # Istio's name for an unnamed rule.
            name = rule.get("name") or f"{_namespace(route)}.{_name(route)}.{position}"
            for number, match in enumerate(rule.get("matches") or [{}]):
                at = f"{where}.matches[{number}]"
                path_type, path = _gateway_path(match.get("path") or {}, f"{at}.path")
                headers = match.get("headers") or []
                envoy_match = _gateway_match(path_type, path, headers, index.state.mutants, at)
                # Lower sorts first: the path type (Exact, PathPrefix, then RegularExpression as
                # Istio), then the longer path, then more headers.
                rank = (_PATH_ORDER.index(path_type), -len(path), -len(headers))
                ranked.append((rank, {"name": name, "match": envoy_match, **action}))
    # A stable sort: equal ranks keep route (creation) order, then rule order.
    return [route for _, route in sorted(ranked, key=lambda item: item[0])]


_PATH_ORDER = ("Exact", "PathPrefix", "RegularExpression")


def _gateway_path(path: Doc, where: str) -> tuple[str, str]:
    """(type, value) with the CRD defaults; a prefix loses its trailing `/`, as in Istio."""
    path_type = path.get("type", "PathPrefix")
    value = str(path.get("value", "/"))
    if path_type not in _PATH_ORDER:
        raise ManifestError(f"{where}.type {path_type!r} is not Exact, PathPrefix or RegularExpression")
    if path_type == "PathPrefix":
        value = value.rstrip("/") or "/"
    return path_type, value


def _gateway_match(
    path_type: str, path: str, headers: Sequence[Doc], mutants: frozenset[str], where: str
) -> dict:
    if path_type == "Exact":
        result: dict[str, Any] = {"path": path}
    elif path_type == "RegularExpression":
        result = {"safe_regex": {"regex": path}}
    elif path == "/":
        result = {"prefix": "/"}
    else:
        # A Gateway API prefix matches whole path segments: /api matches /api/x, not /apix.
        result = {"path_separated_prefix": path}
    matchers = [_gateway_header(header, f"{where}.headers[{n}]") for n, header in enumerate(headers)]
    if matchers and "ignore-header-match" not in mutants:
        result["headers"] = matchers
    return result


def _gateway_header(header: Doc, where: str) -> dict:
    header_type = header.get("type", "Exact")
    value = str(header.get("value", ""))
    if header_type == "Exact":
        return {"name": header["name"], "string_match": {"exact": value}}
    if header_type == "RegularExpression":
        return {"name": header["name"], "string_match": {"safe_regex": {"regex": value}}}
    raise ManifestError(f"{where}.type {header_type!r} is not Exact or RegularExpression")


def _backend_action(rule: Doc, route: Doc, index: _Index, where: str) -> dict:
    """`route` (an Envoy RouteAction) or `direct_response` for one HTTPRoute rule."""
    mutants = index.state.mutants
    refs = rule.get("backendRefs") or []
    weights = [1 if "ignore-weights" in mutants else int(ref.get("weight", 1)) for ref in refs]
    clusters = [
        (_backend_cluster(ref, route, f"{where}.backendRefs[{n}]"), weight)
        for n, (ref, weight) in enumerate(zip(refs, weights))
        if weight > 0  # a weight of 0 gets no traffic
    ]
    if not clusters:
        # The Gateway API asks for 500 when no backend has a weight above 0; Istio does so.
        return {"direct_response": {"status": 500}}
    if len(clusters) == 1:
        action = _cluster_action(clusters[0][0])
    else:
        weighted = [{"name": name, "weight": weight} for name, weight in clusters]
        action = {"weighted_clusters": {"clusters": weighted}, "timeout": NO_TIMEOUT}
    # A backend that does not exist names a missing cluster: the Gateway API asks for 500
    # there (Envoy's default would be 503), as Istio configures.
    action["cluster_not_found_response_code"] = "INTERNAL_SERVER_ERROR"
    request_timeout = (rule.get("timeouts") or {}).get("request")
    if request_timeout is not None and "no-timeouts" not in mutants:
        # "0s" disables the timeout, which is Envoy's meaning of 0 too.
        action["timeout"] = envoy_duration(str(request_timeout), f"{where}.timeouts.request")
    return {"route": action}


def _backend_cluster(ref: Doc, route: Doc, where: str) -> str:
    """A backend Service of the route's namespace (check_supported refused any other)."""
    if ref.get("port") is None:
        raise ManifestError(f"{where}: a Service backend needs port")
    return outbound_cluster_name(int(ref["port"]), resolve_host(ref["name"], _namespace(route)))


# ---------------------------------------------------------------------------------------------
# Durations and file names

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_NANOS = {
    "h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "µs": 10**3, "ns": 1,
}


def envoy_duration(text: str, where: str) -> str:
    """A Go/Istio duration ("2s", "1m30s", "250ms") as protobuf JSON ("90s", "0.250000000s")."""
    seconds, rest = divmod(duration_nanos(text, where), 10**9)
    return f"{seconds}.{rest:09d}s" if rest else f"{seconds}s"


def duration_nanos(text: str, where: str) -> int:
    """A Go/Istio/Gateway API duration in nanoseconds."""
    parts = _DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ManifestError(f"{where}: {text!r} is not a duration (e.g. 2s, 500ms)")
    nanos = 0
    for number, unit in parts:
        whole, _, fraction = number.partition(".")
        scale = _NANOS[unit]
        nanos += int(whole or 0) * scale + int(fraction or 0) * scale // 10 ** len(fraction or "")
    return nanos


def _check_rds_file_names(routes: Mapping[str, dict]) -> None:
    """Two route configs must not share a file after their names are made file-safe."""
    files: dict[str, str] = {}
    for name in routes:
        other = files.setdefault(rds_file_name(name), name)
        if other != name:
            raise ValueError(
                f"route configs {other!r} and {name!r} map to one file {rds_file_name(name)}"
            )
