"""Gateway API HTTPRoutes for the mesh (GAMMA: the parent is a Service), as Envoy routes."""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conformance.errors import ManifestError
from conformance.targets.base import Doc
from conformance.targets.local.istio_subset import describe
from conformance.targets.local.translator.clusters_listeners import cluster_action, outbound_cluster_name
from conformance.targets.local.translator.durations import envoy_duration
from conformance.targets.local.translator.index import MeshIndex, name_of, namespace_of, resolve_host
from conformance.targets.local.translator.mutants import IGNORE_HEADER_MATCH, IGNORE_WEIGHTS, NO_TIMEOUTS
from conformance.targets.local.translator.resources import NO_TIMEOUT
from conformance.targets.local.translator.retries import default_retry_policy

@dataclass(frozen=True)
class _Attachment:
    route: Doc
    port: int | None  # parentRef.port; None: every port of the Service
    consumer: bool  # the route lives in another namespace than the Service


def mesh_http_routes(namespace: str, index: MeshIndex) -> dict[str, list[_Attachment]]:
    """Service fqdn -> the HTTPRoutes attached to it that sidecars in `namespace` see, in creation order.

    GAMMA: a route in the Service's namespace (producer route) applies to every
    client; a route in another namespace (consumer route) only to clients in its own
    namespace (istio/istio pilot/pkg/networking/core/route/route.go
    buildSidecarVirtualHostsForVirtualService), where routes_on_port puts it first.
    """
    found: dict[str, list[_Attachment]] = {}
    for route in index.state.http_routes:
        route_ns = namespace_of(route)
        for ref in route["spec"].get("parentRefs") or []:
            if ref.get("kind", "Gateway") != "Service":
                continue  # a Gateway parent: the gateway's routes (gateway_api_gateway.py), not the mesh's
            service_ns = ref.get("namespace") or route_ns
            fqdn = resolve_host(ref["name"], service_ns)
            consumer = service_ns != route_ns
            # A parent naming no Service attaches nowhere, like a VirtualService host.
            if fqdn not in index.services or (consumer and namespace != route_ns):
                continue
            port = ref.get("port")
            found.setdefault(fqdn, []).append(
                _Attachment(route, None if port is None else int(port), consumer)
            )
    return found


def routes_on_port(attachments: Sequence[_Attachment], port: int) -> list[Doc]:
    """The routes that serve one service port, each once, in creation order.

    Istio (tag 1.28.0) turns the routes attached to a Service into one VirtualService
    per route namespace and parentRef port, merging the routes of each
    (pilot/pkg/config/kube/gateway/route_collections.go HTTPRouteCollection and
    mergeHTTPRoutes); a parentRef port limits its VirtualService to that port, none
    means every port (conversion.go augmentPortMatch). Those VirtualServices are not
    merged with each other: on a port, the sidecar uses the first one with routes there
    and drops the others as duplicate virtual hosts (pilot/pkg/networking/core/httproute.go
    BuildSidecarOutboundVirtualHosts). First: consumer routes
    (pilot/pkg/model/virtualservice.go SelectVirtualServices), then creation order of
    the oldest route of each (mergeVirtualServicesIfNeeded sorts by creation time).
    """
    groups: dict[tuple[str, int | None], list[_Attachment]] = {}
    for attachment in attachments:
        groups.setdefault((namespace_of(attachment.route), attachment.port), []).append(attachment)
    # A stable sort: groups keep creation order within consumers and within producers.
    for group in sorted(groups.values(), key=lambda members: not members[0].consumer):
        if group[0].port in (None, port):
            routes: list[Doc] = []
            for attachment in group:
                if not any(r is attachment.route for r in routes):
                    routes.append(attachment.route)
            return routes
    return []


def http_route_routes(http_routes: Sequence[Doc], index: MeshIndex) -> list[dict]:
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
            name = rule.get("name") or f"{namespace_of(route)}.{name_of(route)}.{position}"
            for number, match in enumerate(rule.get("matches") or [{}]):
                at = f"{where}.matches[{number}]"
                path_type, path = _gateway_path(match.get("path") or {}, f"{at}.path")
                headers = _first_of_each_header(match.get("headers") or [], at)
                envoy_match = _gateway_match(path_type, path, headers, index.state.mutants, at)
                # Lower sorts first: the path type (Exact, PathPrefix, then RegularExpression as
                # Istio), then the longer path, then more headers.
                rank = (_PATH_ORDER.index(path_type), -len(path), -len(headers))
                ranked.append((rank, {"name": name, "match": envoy_match, **action}))
    # A stable sort: equal ranks keep route (creation) order, then rule order.
    return [route for _, route in sorted(ranked, key=lambda item: item[0])]


_PATH_ORDER = ("Exact", "PathPrefix", "RegularExpression")


def _gateway_path(path: Doc, where: str) -> tuple[str, str]:
    """(type, value) with the CRD defaults; a prefix loses a trailing `/`, as in Istio."""
    path_type = path.get("type", "PathPrefix")
    value = str(path.get("value", "/"))
    if path_type not in _PATH_ORDER:
        raise ManifestError(f"{where}.type {path_type!r} is not Exact, PathPrefix or RegularExpression")
    if path_type != "RegularExpression":
        _check_path_value(value, f"{where}.value")
    if path_type == "PathPrefix" and value != "/":
        # istio/istio (1.28.0) pilot/pkg/config/kube/gateway/conversion.go createURIMatch trims one
        # trailing "/" ("/foo/" is "/foo"), route.go TranslateRouteMatch one more for Envoy's
        # path_separated_prefix; the CRD refuses "//", so one is all there can be.
        value = value.removesuffix("/")
    return path_type, value


# What the HTTPRoute CRD admits as an Exact or PathPrefix value (kubernetes-sigs/gateway-api
# v1.4.0, the version Istio 1.28 ships, apis/v1/httproute_types.go HTTPPathMatch): the API
# server refuses anything else, so the local mesh does too.
_PATH_CHARACTERS = re.compile(r"(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+")
_PATH_FORBIDDEN_PARTS = ("//", "/./", "/../", "%2f", "%2F", "#")
_PATH_FORBIDDEN_ENDINGS = ("/..", "/.")


def _check_path_value(value: str, where: str) -> None:
    if not value.startswith("/"):
        raise ManifestError(f"{where} {value!r}: must be an absolute path and start with '/'")
    for part in _PATH_FORBIDDEN_PARTS:
        if part in value:
            raise ManifestError(f"{where} {value!r}: must not contain {part!r}")
    for ending in _PATH_FORBIDDEN_ENDINGS:
        if value.endswith(ending):
            raise ManifestError(f"{where} {value!r}: must not end with {ending!r}")
    if not _PATH_CHARACTERS.fullmatch(value):
        raise ManifestError(f"{where} {value!r}: must only contain valid path characters")


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
    if matchers and IGNORE_HEADER_MATCH not in mutants:
        # Sorted by name, as route.go TranslateRouteMatch; one match ANDs them all.
        result["headers"] = sorted(matchers, key=lambda matcher: matcher["name"])
    return result


def _first_of_each_header(headers: Sequence[Doc], where: str) -> list[Doc]:
    """The header matches that count: the first of each name, compared without case.

    The Gateway API asks for this (apis/v1/httproute_types.go HTTPHeaderMatch.Name: "only
    the first entry with an equivalent name MUST be considered"). Istio 1.28 does not:
    conversion.go createHeadersMatch keys the matches by the name as written, so two names
    that differ in case are both kept and ANDed. The CRD refuses the same name twice
    (listType=map, listMapKey=name).
    """
    kept: dict[str, Doc] = {}
    names: set[str] = set()
    for n, header in enumerate(headers):
        name = str(header["name"])
        if name in names:
            raise ManifestError(f"{where}.headers[{n}].name: Duplicate value: {name!r}")
        names.add(name)
        kept.setdefault(name.lower(), header)
    return list(kept.values())


def _gateway_header(header: Doc, where: str) -> dict:
    header_type = header.get("type", "Exact")
    value = str(header.get("value", ""))
    if header_type == "Exact":
        return {"name": header["name"], "string_match": {"exact": value}}
    if header_type == "RegularExpression":
        return {"name": header["name"], "string_match": {"safe_regex": {"regex": value}}}
    raise ManifestError(f"{where}.type {header_type!r} is not Exact or RegularExpression")


def _backend_action(rule: Doc, route: Doc, index: MeshIndex, where: str) -> dict:
    """`route` (an Envoy RouteAction) or `direct_response` for one HTTPRoute rule."""
    mutants = index.state.mutants
    refs = rule.get("backendRefs") or []
    weights = [1 if IGNORE_WEIGHTS in mutants else int(ref.get("weight", 1)) for ref in refs]
    clusters = [
        (_backend_cluster(ref, route, f"{where}.backendRefs[{n}]"), weight)
        for n, (ref, weight) in enumerate(zip(refs, weights))
        if weight > 0  # a weight of 0 gets no traffic
    ]
    if not clusters:
        # The Gateway API asks for 500 when no backend has a weight above 0; Istio does so.
        return {"direct_response": {"status": 500}}
    if len(clusters) == 1:
        action = cluster_action(clusters[0][0])
    else:
        weighted = [{"name": name, "weight": weight} for name, weight in clusters]
        action = {"weighted_clusters": {"clusters": weighted}, "timeout": NO_TIMEOUT}
    # A backend that does not exist names a missing cluster: the Gateway API asks for 500
    # there (Envoy's default would be 503), as Istio configures.
    action["cluster_not_found_response_code"] = "INTERNAL_SERVER_ERROR"
    # Istio turns an HTTPRoute into a VirtualService without retries, which gets the default retry
    # policy (istio/istio pilot/pkg/config/kube/gateway/conversion.go; route/retry/retry.go).
    action["retry_policy"] = default_retry_policy()
    request_timeout = (rule.get("timeouts") or {}).get("request")
    if request_timeout is not None and NO_TIMEOUTS not in mutants:
        # "0s" disables the timeout, which is Envoy's meaning of 0 too.
        action["timeout"] = envoy_duration(str(request_timeout), f"{where}.timeouts.request")
    return {"route": action}


def _backend_cluster(ref: Doc, route: Doc, where: str) -> str:
    """A backend Service of the route's namespace (check_supported refused any other)."""
    if ref.get("port") is None:
        raise ManifestError(f"{where}: a Service backend needs port")
    return outbound_cluster_name(int(ref["port"]), resolve_host(ref["name"], namespace_of(route)))
