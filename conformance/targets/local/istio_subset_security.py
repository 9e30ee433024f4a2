"""The Istio security kinds (AuthorizationPolicy, PeerAuthentication) the local mesh implements.

Their allow-trees (SPECS, the `spec` of each kind) and the checks of the allowed fields' values;
istio_subset.py runs them. `name` in every check is the document as messages name it
(istio_subset.describe).
"""

from collections.abc import Mapping
from typing import Any

from conformance.errors import ManifestError, UnsupportedResource
from conformance.targets.local.fields import ANY, MapOf, Node

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

SPECS: Mapping[str, Mapping[str, Node]] = {
    "AuthorizationPolicy": {"selector": {"matchLabels": ANY}, "action": ANY, "rules": _AUTHZ_RULE},
    "PeerAuthentication": {"selector": {"matchLabels": ANY}, "mtls": {"mode": ANY},
                           "portLevelMtls": MapOf({"mode": ANY})},
}


def check_values(doc: Mapping[str, Any], name: str) -> None:
    """Allowed fields whose other values would change meaning the translator ignores."""
    if doc.get("kind") == "AuthorizationPolicy":
        _check_authorization_policy(doc, name)
    if doc.get("kind") == "PeerAuthentication":
        _check_peer_authentication(doc, name)


def _check_authorization_policy(doc: Mapping[str, Any], name: str) -> None:
    """The values of an AuthorizationPolicy's allowed fields that the translator does not implement."""
    spec = doc.get("spec") or {}
    # Go's strconv.ParseBool true values, as builder.go parses the annotation.
    if str(((doc.get("metadata") or {}).get("annotations") or {}).get(DRY_RUN_ANNOTATION)) in _GO_TRUE:
        raise UnsupportedResource(f"{name}: annotation {DRY_RUN_ANNOTATION} is not implemented by the "
                                  f"local mesh (every policy is enforced)")
    action = spec.get("action") or ALLOW_ACTION
    if action not in AUTHZ_ACTIONS:
        raise UnsupportedResource(f"{name}: field spec.action {action} is not implemented by the local "
                                  f"mesh (only {', '.join(AUTHZ_ACTIONS)})")
    for index, rule in enumerate(spec.get("rules") or []):
        for to_index, to in enumerate((rule or {}).get("to") or []):
            operation = (to or {}).get("operation") or {}
            for field in ("paths", "notPaths"):
                where = f"spec.rules[{index}].to[{to_index}].operation.{field}"
                _check_no_path_template(operation.get(field) or [], where, name)
        for when_index, condition in enumerate((rule or {}).get("when") or []):
            _check_when_key(str((condition or {}).get("key", "")), f"spec.rules[{index}].when[{when_index}].key", name)


def _check_no_path_template(paths: list[Any], field: str, name: str) -> None:
    # {*} and {**} make a path a URI template (istio/istio pkg/config/security ContainsPathTemplate).
    if any("{*}" in str(path) or "{**}" in str(path) for path in paths):
        raise UnsupportedResource(
            f"{name}: field {field}: path templates ({{*}}, {{**}}) are not implemented by the local mesh")


def _check_when_key(key: str, field: str, name: str) -> None:
    header = key.startswith(WHEN_HEADER + "[") and key.endswith("]") and len(key) > len(WHEN_HEADER) + 2
    if not header and key not in (WHEN_PRINCIPAL, WHEN_NAMESPACE, WHEN_PORT):
        raise UnsupportedResource(
            f"{name}: field {field} {key!r} is not implemented by the local mesh (only "
            f"{WHEN_HEADER}[<name>], {WHEN_PRINCIPAL}, {WHEN_NAMESPACE}, {WHEN_PORT})")


def _check_peer_authentication(doc: Mapping[str, Any], name: str) -> None:
    """Istio's validation of a PeerAuthentication (istio/istio pkg/config/validation/validation.go
    ValidatePeerAuthentication, tag 1.28.0), in its words: the translator reads port-level modes by
    port number, of a workload's policy only."""
    spec = doc.get("spec") or {}
    ports = spec.get("portLevelMtls")
    where = f"{name}: spec.portLevelMtls"
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
