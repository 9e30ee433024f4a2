"""VirtualService http routes, their destinations, retries and faults, as Envoy routes."""

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from conformance.errors import ManifestError
from conformance.targets.base import Doc
from conformance.targets.local.istio_subset import describe
from conformance.targets.local.ingress_conversion import ingress_prefix
from conformance.targets.local.istio_values import duration_nanos
from conformance.targets.local.model import Service
from conformance.targets.local.translator.clusters_listeners import cluster_action, outbound_cluster_name
from conformance.targets.local.translator.durations import envoy_duration
from conformance.targets.local.translator.index import MeshIndex, namespace_of, resolve_host
from conformance.targets.local.translator.mutants import (
    IGNORE_HEADER_MATCH,
    IGNORE_WEIGHTS,
    NO_FAULT_INJECTION,
    NO_TIMEOUTS,
    SWAP_SUBSETS,
)
from conformance.targets.local.translator.resources import FAULT_FILTER, FAULT_TYPE, NO_TIMEOUT
from conformance.targets.local.translator.retries import route_retry_policy

def vs_routes(vs: Doc, index: MeshIndex, listener_port: int) -> list[dict]:
    """Envoy routes for the VirtualService's http list, in order: one per match entry.

    listener_port is the port the request came in on: the service port of a sidecar's
    virtual host, a gateway server's port. No catch-all is added: a request no http route
    matches gets 404, as in Istio.
    """
    mutants = index.state.mutants
    routes = []
    for position, http in enumerate(vs["spec"].get("http") or []):
        action = _route_action(vs, position, http, index, listener_port)
        fault = _fault_config(http.get("fault"), f"{describe(vs)}: spec.http[{position}].fault")
        for match in http.get("match") or [None]:
            # A VirtualService made from an Ingress matches prefixes by path segment.
            route: dict[str, Any] = {"match": ingress_prefix(_route_match(match, mutants), vs), "route": action}
            if http.get("name"):
                route["name"] = http["name"]
            if fault is not None and NO_FAULT_INJECTION not in mutants:
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
    if headers and IGNORE_HEADER_MATCH not in mutants:
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


def _route_action(vs: Doc, position: int, http: Doc, index: MeshIndex, listener_port: int) -> dict:
    where = f"{describe(vs)}: spec.http[{position}]"
    destinations = http.get("route") or []
    if not destinations:
        raise ManifestError(f"{where} has no route (the local mesh needs route destinations)")
    mutants = index.state.mutants
    clusters = [
        (_destination_cluster(d["destination"], vs, index, listener_port), d.get("weight"))
        for d in destinations
    ]
    if len(clusters) == 1:
        action = cluster_action(clusters[0][0])
    else:
        if IGNORE_WEIGHTS in mutants:
            clusters = [(name, 1) for name, _ in clusters]
        # Istio drops the destinations that get no traffic (weight omitted or 0).
        weighted = [{"name": name, "weight": int(w)} for name, w in clusters if w]
        if not weighted:
            raise ManifestError(f"{where}: the route weights add up to 0")
        action = {"weighted_clusters": {"clusters": weighted}, "timeout": NO_TIMEOUT}
    if http.get("timeout") is not None and NO_TIMEOUTS not in mutants:
        action["timeout"] = envoy_duration(str(http["timeout"]), f"{where}.timeout")
    # Istio's default retry policy unless `retries` replaces it; attempts 0: no retries
    # (istio/istio pilot/pkg/networking/core/route/route.go applyHTTPRouteDestination).
    retry_policy = route_retry_policy(http.get("retries"), f"{where}.retries", mutants)
    if retry_policy is not None:
        action["retry_policy"] = retry_policy
    return action


def _destination_cluster(destination: Doc, vs: Doc, index: MeshIndex, listener_port: int) -> str:
    fqdn = resolve_host(destination["host"], namespace_of(vs))
    port = _destination_port(destination, index.services.get(fqdn), listener_port)
    subset = destination.get("subset") or ""
    if subset and SWAP_SUBSETS in index.state.mutants:
        subset = _next_subset(index.subset_names(fqdn), subset)
    # A subset no DestinationRule defines still names a cluster, which does not exist:
    # Envoy answers 503 (NC), as Istio does.
    return outbound_cluster_name(port, fqdn, subset)


def _destination_port(destination: Doc, svc: Service | None, listener_port: int) -> int:
    """istio/istio pilot/pkg/networking/core/route/route.go GetDestinationCluster (tag 1.28.0):
    the destination's port, else the service's only port, else the listener's port, even
    when the service has no such port: the cluster then does not exist, and Envoy answers
    503 (NC), as with Istio."""
    number = (destination.get("port") or {}).get("number")
    if number is not None:
        return int(number)
    if svc is not None and len(svc.ports) == 1:
        return svc.ports[0].port
    return listener_port


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
