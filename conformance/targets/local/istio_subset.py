"""The Istio networking and Gateway API subset the local mesh implements; a check refuses the rest.

The translator reads only the fields allowed here. Anything else in a document
(a mirror, a retry backoff, a trafficPolicy...) would be ignored by it, and a check
could then pass on the local mesh for a configuration it never applied. So
every field outside this allow-list is refused with its exact path.

Of the Gateway API, only HTTPRoutes whose parents are Services (GAMMA, routing
inside the mesh) are implemented.
"""

from collections.abc import Collection, Mapping
from typing import Any

from conformance.errors import ManifestError, UnsupportedResource
from conformance.names import GATEWAY_API_GROUP, ISTIO_NETWORKING_GROUP, MESH_GATEWAY
from conformance.targets.local.fields import ANY, MapOf, Node, check_fields
from conformance.targets.local.istio_values import duration_nanos, is_http_status
from conformance.targets.local.model import CLUSTER_DOMAIN

API_VERSIONS = frozenset({f"{ISTIO_NETWORKING_GROUP}/v1", f"{ISTIO_NETWORKING_GROUP}/v1beta1",
                          f"{ISTIO_NETWORKING_GROUP}/v1alpha3"})
GATEWAY_API_VERSIONS = frozenset({f"{GATEWAY_API_GROUP}/v1", f"{GATEWAY_API_GROUP}/v1beta1"})
# Istio's security kinds (security.istio.io).
ISTIO_SECURITY_GROUP = "security.istio.io"
SECURITY_API_VERSIONS = frozenset({f"{ISTIO_SECURITY_GROUP}/v1", f"{ISTIO_SECURITY_GROUP}/v1beta1"})

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

# AuthorizationPolicy, as Envoy's RBAC filter on sidecars (translator/authorization.py); its values
# are checked by _check_authorization_policy. Refused: targetRef(s), provider, the sources'
# requestPrincipals, serviceAccounts, ipBlocks, remoteIpBlocks (and their not* forms), the
# operations' hosts and notHosts.
_AUTHZ_RULE: Mapping[str, Node] = {
    "from": {"source": {"principals": ANY, "notPrincipals": ANY, "namespaces": ANY, "notNamespaces": ANY}},
    "to": {"operation": {"methods": ANY, "notMethods": ANY, "paths": ANY, "notPaths": ANY,
                         "ports": ANY, "notPorts": ANY}},
    "when": {"key": ANY, "values": ANY, "notValues": ANY},
}
# Its `when` keys implemented (istio/istio pilot/pkg/security/authz/model/model.go attributes):
# request.headers[<name>] and these.
WHEN_HEADER = "request.headers"
WHEN_PRINCIPAL = "source.principal"
WHEN_NAMESPACE = "source.namespace"
WHEN_PORT = "destination.port"
# Its actions implemented; without one, a policy is ALLOW.
ALLOW_ACTION = "ALLOW"
DENY_ACTION = "DENY"
AUTHZ_ACTIONS = (ALLOW_ACTION, DENY_ACTION)
# A policy annotated so is only logged, not enforced (istio/istio builder.go isDryRun).
DRY_RUN_ANNOTATION = "istio.io/dry-run"
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})

# A DestinationRule's trafficPolicy: its tls mode only, for every port or one (translator/mtls.py);
# the mode's values are checked by _check_client_tls. Refused: every other policy and tls field,
# and a subset's own trafficPolicy.
_CLIENT_TLS: Mapping[str, Node] = {"mode": ANY}
_TRAFFIC_POLICY_TLS: Mapping[str, Node] = {
    "tls": _CLIENT_TLS,
    "portLevelSettings": {"port": {"number": ANY}, "tls": _CLIENT_TLS},
}
# The ClientTLSSettings modes implemented: plaintext, and Istio's mutual TLS.
CLIENT_TLS_MODES = ("DISABLE", "ISTIO_MUTUAL")

# Top-level fields common to every kind; status is written by the cluster, not configuration.
_COMMON: Mapping[str, Node] = {"apiVersion": ANY, "kind": ANY, "metadata": ANY, "status": ANY}

_SCHEMAS: Mapping[str, Mapping[str, Node]] = {
    "VirtualService": {
        **_COMMON,
        "spec": {"hosts": ANY, "gateways": ANY, "exportTo": ANY, "http": _HTTP_ROUTE},
    },
    "DestinationRule": {
        **_COMMON,
        "spec": {"host": ANY, "exportTo": ANY, "subsets": {"name": ANY, "labels": ANY},
                 "trafficPolicy": _TRAFFIC_POLICY_TLS},
    },
    "PeerAuthentication": {
        **_COMMON,
        "spec": {"selector": {"matchLabels": ANY}, "mtls": {"mode": ANY}, "portLevelMtls": MapOf({"mode": ANY})},
    },
    "Gateway": {
        **_COMMON,
        "spec": {
            "selector": ANY,
            "servers": {"port": {"number": ANY, "name": ANY, "protocol": ANY}, "hosts": ANY, "name": ANY},
        },
    },
    "AuthorizationPolicy": {
        **_COMMON,
        "spec": {"selector": {"matchLabels": ANY}, "action": ANY, "rules": _AUTHZ_RULE},
    },
}
# The API versions of a kind outside Istio's networking group.
_KIND_API_VERSIONS: Mapping[str, frozenset[str]] = {"AuthorizationPolicy": SECURITY_API_VERSIONS,
                                                    "PeerAuthentication": SECURITY_API_VERSIONS}

SUPPORTED_KINDS = tuple(_SCHEMAS)

# Gateway API HTTPRoute for the mesh: parents are Services, backends are Services.
_GATEWAY_API_SCHEMAS: Mapping[str, Mapping[str, Node]] = {
    "HTTPRoute": {
        **_COMMON,
        "spec": {
            "parentRefs": {"group": ANY, "kind": ANY, "name": ANY, "namespace": ANY, "port": ANY},
            # Accepted and ignored: for a Service parent the Service names the host, as in Istio.
            "hostnames": ANY,
            "rules": {
                "name": ANY,
                "matches": {
                    "path": {"type": ANY, "value": ANY},
                    "headers": {"type": ANY, "name": ANY, "value": ANY},
                },
                "backendRefs": {"group": ANY, "kind": ANY, "name": ANY, "namespace": ANY, "port": ANY, "weight": ANY},
                "timeouts": {"request": ANY},
            },
        },
    },
}

GATEWAY_API_KINDS = tuple(_GATEWAY_API_SCHEMAS)


def describe(doc: Mapping[str, Any]) -> str:
    """`Kind ns/name` (or `Kind name` without a namespace), as messages name a document."""
    metadata = doc.get("metadata") or {}
    name = metadata.get("name", "<unnamed>")
    namespace = metadata.get("namespace")
    return f"{doc.get('kind')} {namespace}/{name}" if namespace else f"{doc.get('kind')} {name}"


def api_group(doc: Mapping[str, Any]) -> str:
    """The group of a document's apiVersion ("" for the core group, as in `v1`)."""
    api_version = str(doc.get("apiVersion") or "")
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def check_supported(doc: Mapping[str, Any]) -> None:
    """Raise UnsupportedResource unless the local mesh implements every field of `doc`."""
    if api_group(doc) == GATEWAY_API_GROUP:
        _check_gateway_api(doc)
        return
    kind = doc.get("kind")
    if kind not in _SCHEMAS:
        raise UnsupportedResource(
            f"kind {kind!r} ({doc.get('apiVersion')}) is not implemented by the local mesh; "
            f"it implements {', '.join(k for k in SUPPORTED_KINDS if k not in _KIND_API_VERSIONS)} of "
            f"{ISTIO_NETWORKING_GROUP}, {', '.join(_KIND_API_VERSIONS)} of {ISTIO_SECURITY_GROUP} "
            f"and {', '.join(GATEWAY_API_KINDS)} of {GATEWAY_API_GROUP}"
        )
    _require_api_version(doc, _KIND_API_VERSIONS.get(kind, API_VERSIONS))
    check_fields(doc, _SCHEMAS[kind], describe(doc))
    _check_values(doc)


def _check_gateway_api(doc: Mapping[str, Any]) -> None:
    kind = doc.get("kind")
    if kind == "Gateway":
        raise UnsupportedResource(
            f"{describe(doc)}: kind Gateway of apiVersion {doc.get('apiVersion')!r}: Gateway API Gateways "
            f"are not implemented by the local mesh yet (an Istio Gateway of {ISTIO_NETWORKING_GROUP} is)"
        )
    if kind not in _GATEWAY_API_SCHEMAS:
        raise UnsupportedResource(
            f"kind {kind!r} ({doc.get('apiVersion')}) is not implemented by the local mesh; of "
            f"{GATEWAY_API_GROUP} it implements {', '.join(GATEWAY_API_KINDS)} with Service parents"
        )
    _require_api_version(doc, GATEWAY_API_VERSIONS)
    check_fields(doc, _GATEWAY_API_SCHEMAS[kind], describe(doc))
    _check_http_route_refs(doc)


def _require_api_version(doc: Mapping[str, Any], versions: Collection[str]) -> None:
    if doc.get("apiVersion") not in versions:
        raise UnsupportedResource(
            f"{describe(doc)}: apiVersion {doc.get('apiVersion')!r} is not implemented by the "
            f"local mesh (use one of {', '.join(sorted(versions))})"
        )


def _check_http_route_refs(doc: Mapping[str, Any]) -> None:
    """Parents must be Services (GAMMA) and backends Services of the route's own namespace."""
    spec = doc.get("spec") or {}
    for index, ref in enumerate(spec.get("parentRefs") or []):
        # Gateway API defaults: group gateway.networking.k8s.io, kind Gateway.
        group = ref.get("group", GATEWAY_API_GROUP)
        kind = ref.get("kind", "Gateway")
        if (group, kind) == (GATEWAY_API_GROUP, "Gateway"):
            raise UnsupportedResource(
                f"{describe(doc)}: field spec.parentRefs[{index}] names Gateway {ref.get('name')!r}: "
                f"Gateway API Gateways are not implemented by the local mesh yet (only Service parents, "
                f"group \"\" kind Service)"
            )
        if (group, kind) != ("", "Service"):
            raise UnsupportedResource(
                f"{describe(doc)}: field spec.parentRefs[{index}] of group {group!r} kind {kind!r} is not "
                f"implemented by the local mesh (only Service parents, group \"\" kind Service)"
            )
    namespace = (doc.get("metadata") or {}).get("namespace")
    for rule_index, rule in enumerate(spec.get("rules") or []):
        for index, ref in enumerate(rule.get("backendRefs") or []):
            path = f"spec.rules[{rule_index}].backendRefs[{index}]"
            # Gateway API defaults for a backend: the core group, kind Service.
            group, kind = ref.get("group", ""), ref.get("kind", "Service")
            if (group, kind) != ("", "Service"):
                raise UnsupportedResource(
                    f"{describe(doc)}: field {path} of group {group!r} kind {kind!r} is not implemented "
                    f"by the local mesh (only Services)"
                )
            if ref.get("namespace") not in (None, namespace):
                # Another namespace needs a ReferenceGrant, which the local mesh does not implement.
                raise UnsupportedResource(
                    f"{describe(doc)}: field {path}.namespace {ref['namespace']!r} is not implemented by the "
                    f"local mesh (only the route's own namespace)"
                )


def _check_values(doc: Mapping[str, Any]) -> None:
    """Allowed fields whose other values would change meaning the translator ignores."""
    spec = doc.get("spec") or {}
    export_to = spec.get("exportTo")
    if export_to is not None and list(export_to) != ["*"]:
        # The local mesh makes every resource visible to every namespace.
        raise UnsupportedResource(
            f"{describe(doc)}: field spec.exportTo {list(export_to)} is not implemented by the "
            f"local mesh (only [\"*\"])"
        )
    if doc.get("kind") == "VirtualService":
        _check_mesh_hosts(doc)
        for index, http in enumerate(spec.get("http") or []):
            if http.get("retries") is not None:
                _check_retries(http["retries"], f"{describe(doc)}: spec.http[{index}].retries")
    if doc.get("kind") == "AuthorizationPolicy":
        _check_authorization_policy(doc)
    if doc.get("kind") == "DestinationRule":
        _check_client_tls(doc)
    if doc.get("kind") == "PeerAuthentication":
        _check_peer_authentication(doc)
    if doc.get("kind") == "Gateway":
        for index, server in enumerate(spec.get("servers") or []):
            protocol = str((server.get("port") or {}).get("protocol", ""))
            if protocol.upper() != "HTTP":
                raise UnsupportedResource(
                    f"{describe(doc)}: field spec.servers[{index}].port.protocol {protocol} is not "
                    f"implemented by the local mesh (only HTTP)"
                )


def _check_authorization_policy(doc: Mapping[str, Any]) -> None:
    """The values of an AuthorizationPolicy's allowed fields that the translator does not implement."""
    spec = doc.get("spec") or {}
    # Go's strconv.ParseBool true values, as builder.go parses the annotation.
    if str(((doc.get("metadata") or {}).get("annotations") or {}).get(DRY_RUN_ANNOTATION)) in _GO_TRUE:
        raise UnsupportedResource(f"{describe(doc)}: annotation {DRY_RUN_ANNOTATION} is not implemented by the "
                                  f"local mesh (every policy is enforced)")
    action = spec.get("action") or ALLOW_ACTION
    if action not in AUTHZ_ACTIONS:
        raise UnsupportedResource(f"{describe(doc)}: field spec.action {action} is not implemented by the local "
                                  f"mesh (only {', '.join(AUTHZ_ACTIONS)})")
    for index, rule in enumerate(spec.get("rules") or []):
        for to_index, to in enumerate((rule or {}).get("to") or []):
            operation = (to or {}).get("operation") or {}
            for field in ("paths", "notPaths"):
                where = f"spec.rules[{index}].to[{to_index}].operation.{field}"
                _check_no_path_template(operation.get(field) or [], where, doc)
        for when_index, condition in enumerate((rule or {}).get("when") or []):
            _check_when_key(str((condition or {}).get("key", "")), f"spec.rules[{index}].when[{when_index}].key", doc)


def _check_no_path_template(paths: list[Any], field: str, doc: Mapping[str, Any]) -> None:
    # {*} and {**} make a path a URI template (istio/istio pkg/config/security ContainsPathTemplate).
    if any("{*}" in str(path) or "{**}" in str(path) for path in paths):
        raise UnsupportedResource(
            f"{describe(doc)}: field {field}: path templates ({{*}}, {{**}}) are not implemented by the local mesh")


def _check_when_key(key: str, field: str, doc: Mapping[str, Any]) -> None:
    header = key.startswith(WHEN_HEADER + "[") and key.endswith("]") and len(key) > len(WHEN_HEADER) + 2
    if not header and key not in (WHEN_PRINCIPAL, WHEN_NAMESPACE, WHEN_PORT):
        raise UnsupportedResource(
            f"{describe(doc)}: field {field} {key!r} is not implemented by the local mesh (only "
            f"{WHEN_HEADER}[<name>], {WHEN_PRINCIPAL}, {WHEN_NAMESPACE}, {WHEN_PORT})")


def _check_client_tls(doc: Mapping[str, Any]) -> None:
    """A DestinationRule's tls modes: SIMPLE and MUTUAL (TLS with the user's certificates) are not implemented."""
    policy = (doc.get("spec") or {}).get("trafficPolicy") or {}
    settings = [("spec.trafficPolicy.tls", policy.get("tls"))]
    settings += [(f"spec.trafficPolicy.portLevelSettings[{index}].tls", port.get("tls"))
                 for index, port in enumerate(policy.get("portLevelSettings") or [])]
    for field, tls in settings:
        mode = (tls or {}).get("mode")
        if tls is not None and mode not in CLIENT_TLS_MODES:
            raise UnsupportedResource(
                f"{describe(doc)}: field {field}.mode {mode} is not implemented by the local mesh "
                f"(only {', '.join(CLIENT_TLS_MODES)})")


def _check_peer_authentication(doc: Mapping[str, Any]) -> None:
    """Istio's validation of a PeerAuthentication (istio/istio pkg/config/validation/validation.go
    ValidatePeerAuthentication, tag 1.28.0), in its words: the translator reads port-level modes by
    port number, of a workload's policy only."""
    spec = doc.get("spec") or {}
    ports = spec.get("portLevelMtls")
    where = f"{describe(doc)}: spec.portLevelMtls"
    if ports is None:
        return
    if not ((spec.get("selector") or {}).get("matchLabels")):
        raise ManifestError(f"{where}: mesh/namespace peer authentication cannot have port level mTLS")
    if not ports:
        raise ManifestError(f"{where}: port level mTLS, if defined, must have at least one element")
    for port in ports:
        number = str(port)
        if not number.isdigit() or not 0 < int(number) <= 65535:
            raise ManifestError(f"{where}: port must be in range 1..65535")


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
        # agent.ValidateDuration: at least 1ms, in whole milliseconds.
        nanos = duration_nanos(str(retries["perTryTimeout"]), f"{where}.perTryTimeout")
        if nanos < 10**6:
            raise ManifestError(f"{where}.perTryTimeout: duration must be greater than 1ms")
        if nanos % 10**6:
            raise ManifestError(f"{where}.perTryTimeout: only durations to ms precision are supported")
    retry_on = retries.get("retryOn")
    if retry_on:
        # Split on "," alone, as Istio's validation does: " 503" is refused.
        for policy in str(retry_on).split(","):
            if not is_http_status(policy) and policy not in RETRY_ON_CONDITIONS:
                raise ManifestError(f'{where}.retryOn: "{policy}" is not a valid retryOn policy')


_SERVICE_SUFFIX = f".svc.{CLUSTER_DOMAIN}"


def _check_mesh_hosts(doc: Mapping[str, Any]) -> None:
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
        name = str(host).lower()
        short = "." not in name and "*" not in name
        wildcard = name.startswith("*.") and "*" not in name[1:]
        if name == "*" or short:
            continue
        if wildcard and (name.endswith(_SERVICE_SUFFIX) or _SERVICE_SUFFIX.endswith(name[1:])):
            continue
        if "*" not in name and name.endswith(_SERVICE_SUFFIX):
            continue
        raise UnsupportedResource(
            f"{describe(doc)}: field spec.hosts[{index}] {host!r} for gateway mesh is not implemented by "
            f"the local mesh (only hosts that can name a Service: a short name, <name>.<namespace>{_SERVICE_SUFFIX}, "
            f"*, or a wildcard such as *.<namespace>{_SERVICE_SUFFIX})"
        )
