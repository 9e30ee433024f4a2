"""AuthorizationPolicy -> Envoy's RBAC HTTP filters on a sidecar's inbound listeners, as istiod builds them.

istio/istio, tag 1.28.0: which policies apply to a workload, pilot/pkg/model/authorization.go
ListAuthorizationPolicies and policyattachment.go ShouldAttachPolicy; the filters,
pilot/pkg/security/authz/builder/builder.go; each rule's Envoy policy, pilot/pkg/security/authz/
model/{model,generator,permission,principal}.go; value matching, pilot/pkg/security/authz/matcher/
{string,header}.go. istio_subset_security.py has refused every field and value not implemented here
(AUDIT, CUSTOM, dry-run, request principals, IP blocks, hosts, path templates, other `when` keys).
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conformance.names import SPIFFE_PREFIX
from conformance.targets.base import Doc
from conformance.targets.local.istio_subset_security import (
    ALLOW_ACTION,
    DENY_ACTION,
    WHEN_HEADER,
    WHEN_NAMESPACE,
    WHEN_PORT,
    WHEN_PRINCIPAL,
)
from conformance.targets.local.model import Pod
from conformance.targets.local.translator.index import ROOT_NAMESPACE, MeshIndex, name_of, namespace_of
from conformance.targets.local.translator.mutants import AUTHZ_IGNORED
from conformance.targets.local.translator.peer_authentication import has_labels, selector_of

RBAC_FILTER = "envoy.filters.http.rbac"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
# builder.go sets shadow_rules_stat_prefix from the shadow rules' action even when there are none (no
# dry-run policy): the zero action, ALLOW, gives this prefix on every filter, DENY ones included.
SHADOW_RULES_STAT_PREFIX = "istio_dry_run_allow_"

# builder.go rbacPolicyMatchNever: a policy without rules (the ALLOW "allow-nothing" spec {}).
MATCH_NEVER = {
    "permissions": [{"not_rule": {"any": True}}],
    "principals": [{"not_id": {"any": True}}],
}

Json = dict[str, Any]


def inbound_filters(pod: Pod, index: MeshIndex) -> list[dict]:
    """The RBAC filters the policies selecting `pod` put in its inbound HTTP filter chain, before
    the router, in Istio's order (none: every request allowed).

    builder.go build: one filter per action present, DENY before ALLOW (AUDIT before both, CUSTOM in
    a filter of its own before authentication: neither is implemented). A request is denied when a
    DENY policy matches it, and, if any ALLOW policy applies, unless one of them matches it.
    """
    if AUTHZ_IGNORED in index.state.mutants:
        return []
    policies = applying_policies(pod, index.state.authorization_policies)
    filters = []
    for action in (DENY_ACTION, ALLOW_ACTION):
        chosen = [policy for policy in policies if action_of(policy) == action]
        if chosen:
            filters.append(rbac_filter(action, chosen))
    return filters


def applying_policies(pod: Pod, policies: Iterable[Doc]) -> list[Doc]:
    """The policies of the root namespace, then of the pod's, whose selector the pod's labels
    match (no selector, or no matchLabels: every workload of the namespace, of the mesh for the
    root namespace), each namespace's in creation order (authorization.go, policyattachment.go)."""
    namespaces = list(dict.fromkeys((ROOT_NAMESPACE, pod.namespace)))
    return [
        policy for namespace in namespaces for policy in policies
        if namespace_of(policy) == namespace and has_labels(pod, selector_of(policy))
    ]


def action_of(policy: Doc) -> str:
    return (policy.get("spec") or {}).get("action") or ALLOW_ACTION


def rbac_filter(action: str, policies: Sequence[Doc]) -> dict:
    """One envoy.filters.http.rbac for `policies`, all of `action`: one Envoy policy per rule."""
    envoy_policies: dict[str, Json] = {}
    for policy in policies:
        rules = (policy.get("spec") or {}).get("rules") or []
        for number, rule in enumerate(rules):
            if rule is not None:  # builder.go skips a null rule
                envoy_policies[policy_name(policy, number)] = rule_policy(rule)
        if not rules:
            envoy_policies[policy_name(policy, 0)] = MATCH_NEVER
    return {
        "name": RBAC_FILTER,
        "typed_config": {
            "@type": RBAC_TYPE,
            "rules": {"action": action, "policies": envoy_policies},
            "shadow_rules_stat_prefix": SHADOW_RULES_STAT_PREFIX,
        },
    }


def policy_name(policy: Doc, rule: int) -> str:
    """builder.go policyName: also the policy id Envoy reports in its RBAC stats and logs."""
    return f"ns[{namespace_of(policy)}]-policy[{name_of(policy)}]-rule[{rule}]"


# ---------------------------------------------------------------------------------------------
# One rule: its `to` operations are Envoy permissions, its `from` sources Envoy principals, and each
# `when` condition joins every permission or every principal (model.go New and Generate).


@dataclass(frozen=True)
class _Condition:
    """One attribute of a rule: a request matches it if it matches one of `values` (when given)
    and none of `not_values` (when given)."""

    match: Callable[[str], Json]
    values: Sequence[str]
    not_values: Sequence[str]


@dataclass(frozen=True)
class _Side:
    """The keys of Envoy's boolean algebra on one side of an RBAC policy."""

    and_key: str
    or_key: str
    not_key: str
    list_key: str


_PERMISSION = _Side("and_rules", "or_rules", "not_rule", "rules")
_PRINCIPAL = _Side("and_ids", "or_ids", "not_id", "ids")


def rule_policy(rule: Mapping[str, Any]) -> Json:
    """An Envoy RBAC policy: a request matches it if it matches one permission and one principal."""
    permission_when, principal_when = _when_conditions(rule.get("when") or [])
    # model.go inserts the operation's and source's fields before the `when` conditions, hosts first
    # (not implemented), then methods, paths and ports; principals first, then namespaces.
    permissions = [_conjunction([*_operation_conditions(to.get("operation") or {}), *permission_when], _PERMISSION)
                   for to in rule.get("to") or []]
    principals = [_conjunction([*_source_conditions(source.get("source") or {}), *principal_when], _PRINCIPAL)
                  for source in rule.get("from") or []]
    return {
        "permissions": permissions or [_conjunction(permission_when, _PERMISSION)],
        "principals": principals or [_conjunction(principal_when, _PRINCIPAL)],
    }


def _operation_conditions(operation: Mapping[str, Any]) -> list[_Condition]:
    return _present([
        _Condition(_method, operation.get("methods") or [], operation.get("notMethods") or []),
        _Condition(_path, operation.get("paths") or [], operation.get("notPaths") or []),
        _Condition(_port, operation.get("ports") or [], operation.get("notPorts") or []),
    ])


def _source_conditions(source: Mapping[str, Any]) -> list[_Condition]:
    return _present([
        _Condition(_principal, source.get("principals") or [], source.get("notPrincipals") or []),
        _Condition(_namespace, source.get("namespaces") or [], source.get("notNamespaces") or []),
    ])


def _when_conditions(when: Iterable[Mapping[str, Any]]) -> tuple[list[_Condition], list[_Condition]]:
    """The `when` conditions on the permission side (destination.port) and on the principal side
    (the others), each in the rule's order."""
    permissions, principals = [], []
    for condition in when:
        key, values, not_values = condition["key"], condition.get("values") or [], condition.get("notValues") or []
        if key == WHEN_PORT:
            permissions.append(_Condition(_port, values, not_values))
        elif key == WHEN_PRINCIPAL:
            principals.append(_Condition(_principal, values, not_values))
        elif key == WHEN_NAMESPACE:
            principals.append(_Condition(_namespace, values, not_values))
        else:  # request.headers[<name>]: istio_subset_security.py has refused every other key
            principals.append(_Condition(_request_header(header_name(key)), values, not_values))
    return _present(permissions), _present(principals)


def header_name(key: str) -> str:
    """The <name> of a `request.headers[<name>]` key (util.go extractNameInBrackets)."""
    return key[len(WHEN_HEADER) + 1:-1]


def _present(conditions: list[_Condition]) -> list[_Condition]:
    """model.go leaves out an attribute with neither values nor notValues."""
    return [c for c in conditions if c.values or c.not_values]


def _conjunction(conditions: Sequence[_Condition], side: _Side) -> Json:
    """model.go generatePermission / generatePrincipal: every condition's clauses, or `any`."""
    clauses: list[Json] = []
    for condition in conditions:
        if condition.values:
            clauses.append(_disjunction(condition.match, condition.values, side))
        if condition.not_values:
            clauses.append({side.not_key: _disjunction(condition.match, condition.not_values, side)})
    return {side.and_key: {side.list_key: clauses or [{"any": True}]}}


def _disjunction(match: Callable[[str], Json], values: Sequence[str], side: _Side) -> Json:
    return {side.or_key: {side.list_key: [match(str(value)) for value in values]}}


# ---------------------------------------------------------------------------------------------
# Values (generator.go): Istio's `*` matching, a prefix, a suffix, or presence


def _method(value: str) -> Json:
    return {"header": header_matcher(":method", value)}


def _path(value: str) -> Json:
    return {"url_path": {"path": string_matcher(value)}}


def _port(value: str) -> Json:
    return {"destination_port": port_number(value)}


def _principal(value: str) -> Json:
    """A source principal, `<trust domain>/ns/<ns>/sa/<sa>`, is the peer's SPIFFE URI without
    spiffe://. The mesh's one trust domain has no aliases, so model.go MigrateTrustDomain changes none."""
    return _authenticated(string_matcher(value, SPIFFE_PREFIX))


def _namespace(value: str) -> Json:
    """Any identity of that namespace; `*` in the value matches anything."""
    return _authenticated({"safe_regex": {"regex": f".*/ns/{value.replace('*', '.*')}/.*"}})


def _authenticated(principal_name: Json) -> Json:
    """The peer certificate's URI SAN (sidecars match it directly: principal.go principalAuthenticated
    with useAuthenticated; a plaintext request has no peer certificate and matches none)."""
    return {"authenticated": {"principal_name": principal_name}}


def _request_header(name: str) -> Callable[[str], Json]:
    return lambda value: {"header": header_matcher(name, value)}


def string_matcher(value: str, prefix: str = "") -> Json:
    """matcher/string.go StringMatcherWithPrefix: `*` alone is any non-empty value, a leading `*`
    a suffix, a trailing `*` a prefix, else the exact value; `prefix` goes before the value."""
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.startswith("*"):
        if not prefix:
            return {"suffix": value[1:]}
        return {"safe_regex": {"regex": f"{prefix}.*{value[1:]}"}}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    return {"exact": prefix + value}


def header_matcher(name: str, value: str) -> Json:
    """matcher/header.go HeaderMatcher: `*` is the header's presence."""
    if value == "*":
        return {"name": name, "present_match": True}
    if value.startswith("*"):
        return {"name": name, "string_match": {"suffix": value[1:]}}
    if value.endswith("*"):
        return {"name": name, "string_match": {"prefix": value[:-1]}}
    return {"name": name, "string_match": {"exact": value}}


def port_number(value: str) -> int:
    """util.go convertToPort. Istio's validation refuses a policy with another port value."""
    if not (value.isascii() and value.isdigit()) or int(value) > 65535:
        raise ValueError(f"AuthorizationPolicy port {value!r} is not a port number (0-65535)")
    return int(value)
