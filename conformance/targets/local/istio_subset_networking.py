"""The Istio networking kinds (VirtualService, DestinationRule, Gateway) the local mesh implements.

Their allow-trees (SPECS, the `spec` of each kind) and the checks of the allowed fields' values;
istio_subset.py runs them. `name` in every check is the document as messages name it
(istio_subset.describe).
"""

from collections.abc import Mapping
from typing import Any

from conformance.errors import ManifestError, UnsupportedResource
from conformance.names import MESH_GATEWAY
from conformance.targets.local.fields import ANY, MapOf, Node
from conformance.targets.local.istio_subset_gateway_servers import SERVER_TLS, check_servers
from conformance.targets.local.istio_values import duration_nanos, is_http_status
from conformance.targets.local.model import CLUSTER_DOMAIN

# Allow-trees (conformance.targets.local.fields): a list field's node is its items' node.

# Istio StringMatch: one of exact, prefix, regex.
_STRING_MATCH: Mapping[str, Node] = {"exact": ANY, "prefix": ANY, "regex": ANY}

_HTTP_MATCH: Mapping[str, Node] = {
    "name": ANY,
    "uri": _STRING_MATCH,
    "headers": MapOf(_STRING_MATCH),
}

_HTTP_ROUTE_DESTINATION: Mapping[str, Node] = {
    "destination": {"host": ANY, "subset": ANY, "port": {"number": ANY}},
    "weight": ANY,
}

# An HTTP status abort and a fixed delay, each with an optional percentage. Refused:
# grpcStatus, http2Error, exponentialDelay and the deprecated integer delay.percent.
_PERCENT: Mapping[str, Node] = {"value": ANY}
_HTTP_FAULT: Mapping[str, Node] = {
    "abort": {"httpStatus": ANY, "percentage": _PERCENT},
    "delay": {"fixedDelay": ANY, "percentage": _PERCENT},
}

# Refused: retryIgnorePreviousHosts, backoff (and retryRemoteLocalities has one locality here).
_HTTP_RETRY: Mapping[str, Node] = {
    "attempts": ANY, "perTryTimeout": ANY, "retryOn": ANY, "retryRemoteLocalities": ANY,
}

_HTTP_ROUTE: Mapping[str, Node] = {
    "name": ANY,
    "match": _HTTP_MATCH,
    "route": _HTTP_ROUTE_DESTINATION,
    "timeout": ANY,
    "fault": _HTTP_FAULT,
    "retries": _HTTP_RETRY,
}

# A DestinationRule's trafficPolicy, for every port or one: its tls mode (translator/mtls.py), its
# connection pool and outlier detection (translator/traffic_policy.py); the values are checked by
# _check_client_tls and _check_resilience. Refused: every other policy field (loadBalancer, tunnel,
# proxyProtocol, retryBudget), the pool's tcp.maxConnectionDuration, tcp.idleTimeout, tcp.tcpKeepalive,
# http.idleTimeout, http.h2UpgradePolicy, http.useClientProtocol, http.maxConcurrentStreams, the
# detection's consecutiveErrors (deprecated), splitExternalLocalOriginErrors and
# consecutiveLocalOriginFailures, every tls field but mode, and a subset's own trafficPolicy.
_CLIENT_TLS: Mapping[str, Node] = {"mode": ANY}
_CONNECTION_POOL: Mapping[str, Node] = {
    "tcp": {"maxConnections": ANY, "connectTimeout": ANY},
    "http": {"http1MaxPendingRequests": ANY, "http2MaxRequests": ANY, "maxRequestsPerConnection": ANY,
             "maxRetries": ANY},
}
_OUTLIER_DETECTION: Mapping[str, Node] = {
    "consecutive5xxErrors": ANY, "consecutiveGatewayErrors": ANY, "interval": ANY, "baseEjectionTime": ANY,
    "maxEjectionPercent": ANY, "minHealthPercent": ANY,
}
_PORT_TRAFFIC_POLICY: Mapping[str, Node] = {
    "tls": _CLIENT_TLS, "connectionPool": _CONNECTION_POOL, "outlierDetection": _OUTLIER_DETECTION,
}
_TRAFFIC_POLICY: Mapping[str, Node] = {
    **_PORT_TRAFFIC_POLICY,
    "portLevelSettings": {"port": {"number": ANY}, **_PORT_TRAFFIC_POLICY},
}
# The ClientTLSSettings modes implemented: plaintext, and Istio's mutual TLS.
TLS_DISABLE = "DISABLE"
ISTIO_MUTUAL = "ISTIO_MUTUAL"
CLIENT_TLS_MODES = (TLS_DISABLE, ISTIO_MUTUAL)

SPECS: Mapping[str, Mapping[str, Node]] = {
    "VirtualService": {"hosts": ANY, "gateways": ANY, "exportTo": ANY, "http": _HTTP_ROUTE},
    "DestinationRule": {"host": ANY, "exportTo": ANY, "subsets": {"name": ANY, "labels": ANY},
                        "trafficPolicy": _TRAFFIC_POLICY},
    "Gateway": {
        "selector": ANY,
        "servers": {"port": {"number": ANY, "name": ANY, "protocol": ANY}, "hosts": ANY, "name": ANY,
                    "tls": SERVER_TLS},
    },
}


def check_values(doc: Mapping[str, Any], name: str) -> None:
    """Allowed fields whose other values would change meaning the translator ignores."""
    kind = doc.get("kind")
    if kind == "VirtualService":
        _check_mesh_hosts(doc, name)
        for index, http in enumerate((doc.get("spec") or {}).get("http") or []):
            if http.get("retries") is not None:
                _check_retries(http["retries"], f"{name}: spec.http[{index}].retries")
    if kind == "DestinationRule":
        _check_client_tls(doc, name)
        _check_resilience(doc, name)
    if kind == "Gateway":
        check_servers(doc, name)


def _check_client_tls(doc: Mapping[str, Any], name: str) -> None:
    """A DestinationRule's tls modes: SIMPLE and MUTUAL (TLS with the user's certificates) are not implemented."""
    policy = (doc.get("spec") or {}).get("trafficPolicy") or {}
    settings = [("spec.trafficPolicy.tls", policy.get("tls"))]
    settings += [(f"spec.trafficPolicy.portLevelSettings[{index}].tls", port.get("tls"))
                 for index, port in enumerate(policy.get("portLevelSettings") or [])]
    for field, tls in settings:
        mode = (tls or {}).get("mode")
        if tls is not None and mode not in CLIENT_TLS_MODES:
            raise UnsupportedResource(
                f"{name}: field {field}.mode {mode} is not implemented by the local mesh "
                f"(only {', '.join(CLIENT_TLS_MODES)})")


# The integer fields of a ConnectionPoolSettings (int32) and Istio's words for a negative one
# (istio/istio pkg/config/validation/validation.go validateConnectionPool, tag 1.28.0).
_POOL_COUNTS: tuple[tuple[str, str, str], ...] = (
    ("http", "http1MaxPendingRequests", "http1 max pending requests must be non-negative"),
    ("http", "http2MaxRequests", "http2 max requests must be non-negative"),
    ("http", "maxRequestsPerConnection", "max requests per connection must be non-negative"),
    ("http", "maxRetries", "max retries must be non-negative"),
    ("tcp", "maxConnections", "max connections must be non-negative"),
)
_INT32_MAX = 2**31 - 1
_UINT32_MAX = 2**32 - 1


def _check_resilience(doc: Mapping[str, Any], name: str) -> None:
    """A DestinationRule's connection pools and outlier detections (top level and per port) as
    Istio's validation checks them (validation.go validateConnectionPool, validateOutlierDetection)."""
    policy = (doc.get("spec") or {}).get("trafficPolicy") or {}
    policies = [("spec.trafficPolicy", policy)]
    policies += [(f"spec.trafficPolicy.portLevelSettings[{index}]", port)
                 for index, port in enumerate(policy.get("portLevelSettings") or [])]
    for field, settings in policies:
        if settings.get("connectionPool") is not None:
            _check_connection_pool(settings["connectionPool"], f"{name}: {field}.connectionPool")
        if settings.get("outlierDetection") is not None:
            _check_outlier_detection(settings["outlierDetection"], f"{name}: {field}.outlierDetection")


def _check_connection_pool(pool: Mapping[str, Any], where: str) -> None:
    if pool.get("http") is None and pool.get("tcp") is None:
        raise ManifestError(f"{where}: connection pool must have at least one field")
    for group, field, negative in _POOL_COUNTS:
        value = (pool.get(group) or {}).get(field)
        if value is not None:
            _check_integer(value, f"{where}.{group}.{field}", _INT32_MAX)
            if value < 0:
                raise ManifestError(f"{where}: {negative}")
    timeout = (pool.get("tcp") or {}).get("connectTimeout")
    if timeout is not None:
        _check_duration(timeout, f"{where}.tcp.connectTimeout")


def _check_outlier_detection(outlier: Mapping[str, Any], where: str) -> None:
    for field in ("consecutive5xxErrors", "consecutiveGatewayErrors"):  # UInt32Value
        if outlier.get(field) is not None:
            _check_integer(outlier[field], f"{where}.{field}", _UINT32_MAX)
            if outlier[field] < 0:
                raise ManifestError(f"{where}.{field}: {outlier[field]} is negative")
    for field in ("baseEjectionTime", "interval"):
        if outlier.get(field) is not None:
            _check_duration(outlier[field], f"{where}.{field}")
    for field in ("maxEjectionPercent", "minHealthPercent"):
        value = outlier.get(field)
        if value is not None:
            _check_integer(value, f"{where}.{field}", _INT32_MAX)
            if not 0 <= value <= 100:  # validation.go ValidatePercent
                raise ManifestError(f"{where}.{field}: percentage {value} is not in range 0..100")


def _check_integer(value: Any, where: str, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"{where}: {value!r} is not an integer")
    if value > maximum:
        raise ManifestError(f"{where}: {value} is larger than {maximum}")


def _check_duration(value: Any, where: str) -> None:
    """agent.ValidateDuration (istio/istio pkg/config/validation/agent/validation.go): at least 1ms,
    in whole milliseconds."""
    nanos = duration_nanos(str(value), where)
    if nanos < 10**6:
        raise ManifestError(f"{where}: duration must be greater than 1ms")
    if nanos % 10**6:
        raise ManifestError(f"{where}: only durations to ms precision are supported")


# Istio's retryOn conditions (istio/istio pkg/config/validation/validation.go, tag 1.28.0:
# supportedRetryOnPolicies); an HTTP status code is accepted too.
RETRY_ON_CONDITIONS = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx",
    "refused-stream", "retriable-status-codes", "retriable-headers", "envoy-ratelimited",
    "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
    "unavailable",
})


def _check_retries(retries: Any, where: str) -> None:
    """An HTTPRetry as Istio's validation checks it (validation.go validateHTTPRetry, tag 1.28.0)."""
    if not isinstance(retries, Mapping):
        raise ManifestError(f"{where}: {retries!r} is not an HTTPRetry object")
    attempts = retries.get("attempts", 0)
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise ManifestError(f"{where}.attempts: {attempts!r} is not an integer")
    if attempts < 0:
        raise ManifestError(f"{where}: attempts cannot be negative")
    remote = retries.get("retryRemoteLocalities")
    if remote is not None and not isinstance(remote, bool):
        raise ManifestError(f"{where}.retryRemoteLocalities: {remote!r} is not a boolean")
    if attempts == 0 and (retries.get("perTryTimeout") is not None or retries.get("retryOn") or remote is not None):
        raise ManifestError(f"{where}: http retry policy configured when attempts are set to 0 (disabled)")
    if retries.get("perTryTimeout") is not None:
        _check_duration(retries["perTryTimeout"], f"{where}.perTryTimeout")
    retry_on = retries.get("retryOn")
    if retry_on:
        # Split on "," alone, as Istio's validation does: " 503" is refused.
        for policy in str(retry_on).split(","):
            if not is_http_status(policy) and policy not in RETRY_ON_CONDITIONS:
                raise ManifestError(f'{where}.retryOn: "{policy}" is not a valid retryOn policy')


_SERVICE_SUFFIX = f".svc.{CLUSTER_DOMAIN}"


def _check_mesh_hosts(doc: Mapping[str, Any], name: str) -> None:
    """A VirtualService for sidecars (gateway `mesh`) may only name hosts that can be Services.

    The local mesh has no ServiceEntry and no DNS for other names, so it does not implement
    Istio's virtual hosts for them (a route for `shop.example.com` on port 80): such a host is
    refused rather than ignored. Accepted: short names, `<name>.<ns>.svc.cluster.local`, and
    the wildcards that can cover one: `*`, `*.<ns>.svc.cluster.local`, `*.svc.cluster.local`,
    `*.cluster.local`, `*.local`.
    """
    spec = doc.get("spec") or {}
    if MESH_GATEWAY not in (spec.get("gateways") or [MESH_GATEWAY]):
        return
    for index, host in enumerate(spec.get("hosts") or []):
        lower = str(host).lower()
        short = "." not in lower and "*" not in lower
        wildcard = lower.startswith("*.") and "*" not in lower[1:]
        if lower == "*" or short:
            continue
        if wildcard and (lower.endswith(_SERVICE_SUFFIX) or _SERVICE_SUFFIX.endswith(lower[1:])):
            continue
        if "*" not in lower and lower.endswith(_SERVICE_SUFFIX):
            continue
        raise UnsupportedResource(
            f"{name}: field spec.hosts[{index}] {host!r} for gateway mesh is not implemented by "
            f"the local mesh (only hosts that can name a Service: a short name, <name>.<namespace>{_SERVICE_SUFFIX}, "
            f"*, or a wildcard such as *.<namespace>{_SERVICE_SUFFIX})"
        )
