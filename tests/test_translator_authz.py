"""AuthorizationPolicy as Envoy's RBAC HTTP filters on a sidecar's inbound listeners, by value: checked
against what istiod generates (istio/istio tag 1.28.0 pilot/pkg/security/authz/builder/testdata/http/
*-in.yaml and *-out.yaml, the builder's golden files), and which workloads each policy applies to.
What the local mesh admits, and Envoy running the filters, are in tests/test_authz_envoy.py."""

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from conformance.targets.local.model import Pod
from conformance.targets.local.translator import translate
from conformance.targets.local.translator.authorization import (
    MATCH_NEVER,
    RBAC_FILTER,
    RBAC_TYPE,
    SHADOW_RULES_STAT_PREFIX,
    port_number,
)
from tests.builders import CURL, GATEWAY_NS, INGRESS, PRODUCTPAGE, RATINGS, gateway, make_pod
from tests.security_builders import DENY_ALL, IGNORED, filters_of, policy, secured


ANY_PERMISSION = {"and_rules": {"rules": [{"any": True}]}}
ANY_PRINCIPAL = {"and_ids": {"ids": [{"any": True}]}}


def rbac(action: str, policies: Mapping[str, Any]) -> dict:
    """An RBAC filter as istiod writes it (shadow_rules_stat_prefix on every one of them)."""
    return {"name": RBAC_FILTER, "typed_config": {"@type": RBAC_TYPE, "rules": {"action": action, "policies": dict(policies)},
                                                  "shadow_rules_stat_prefix": SHADOW_RULES_STAT_PREFIX}}


def only_policy(filters: list[dict]) -> dict:
    """The one Envoy policy of the one filter."""
    [one] = filters
    [envoy_policy] = one["typed_config"]["rules"]["policies"].values()
    return envoy_policy


def authenticated(matcher: dict) -> dict:
    return {"authenticated": {"principal_name": matcher}}


def method(matcher: dict) -> dict:
    return {"header": {"name": ":method", **matcher}}


HTTPBIN = {"selector": {"matchLabels": {"app": "productpage", "version": "v1"}}}


# ---------------------------------------------------------------------------------------------
# By value, against istiod's golden files


def test_deny_all_is_a_deny_filter_matching_everything() -> None:
    """deny-empty-rule-in.yaml -> deny-empty-rule-out.yaml: `action: DENY, rules: [{}]`."""
    filters = filters_of(PRODUCTPAGE, secured(policy("deny-all", {**HTTPBIN, "action": "DENY", "rules": [{}]})))
    assert filters == [rbac("DENY", {"ns[bookinfo]-policy[deny-all]-rule[0]": {
        "permissions": [ANY_PERMISSION], "principals": [ANY_PRINCIPAL]}})]


def test_allow_nothing_is_an_allow_filter_whose_policy_never_matches() -> None:
    """allow-nil-rule-in.yaml -> allow-nil-rule-out.yaml: an ALLOW policy without rules (`spec: {}`
    with a selector) is builder.go's rbacPolicyMatchNever, so no request is allowed."""
    filters = filters_of(PRODUCTPAGE, secured(policy("allow-none", HTTPBIN)))
    assert MATCH_NEVER == {"permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}
    assert filters == [rbac("ALLOW", {"ns[bookinfo]-policy[allow-none]-rule[0]": MATCH_NEVER})]
    # The bare `spec: {}` of the docs' allow-nothing is the same, for the whole namespace.
    assert filters_of(PRODUCTPAGE, secured(policy("allow-none", {}))) == filters


def test_allow_all_is_an_allow_filter_matching_everything() -> None:
    """allow-empty-rule-in.yaml -> allow-empty-rule-out.yaml: `rules: [{}]`."""
    filters = filters_of(PRODUCTPAGE, secured(policy("allow-all", {**HTTPBIN, "rules": [{}]})))
    assert filters == [rbac("ALLOW", {"ns[bookinfo]-policy[allow-all]-rule[0]": {
        "permissions": [ANY_PERMISSION], "principals": [ANY_PRINCIPAL]}})]


def test_deny_and_allow_are_two_filters_deny_first() -> None:
    """deny-and-allow-in.yaml -> deny-and-allow-out1.yaml (DENY) then -out2.yaml (ALLOW), whatever the
    policies' order; principals become the peer's authenticated SPIFFE URI."""
    allow = policy("httpbin-allow", {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["allow"]}}]}]})
    deny = policy("httpbin-deny", {"action": "DENY", "rules": [{"from": [{"source": {"principals": ["deny"]}}]}]})

    def from_principal(name: str) -> dict:
        return {"permissions": [ANY_PERMISSION], "principals": [{"and_ids": {"ids": [
            {"or_ids": {"ids": [authenticated({"exact": f"spiffe://{name}"})]}}]}}]}

    assert filters_of(PRODUCTPAGE, secured(allow, deny)) == [
        rbac("DENY", {"ns[bookinfo]-policy[httpbin-deny]-rule[0]": from_principal("deny")}),
        rbac("ALLOW", {"ns[bookinfo]-policy[httpbin-allow]-rule[0]": from_principal("allow")}),
    ]


def test_principals_and_namespaces_with_istio_wildcards() -> None:
    """allow-full-rule-out.yaml, rule[1]'s principals and namespaces: exact, `x*` a prefix, `*x` a
    regex after spiffe://, `*` any; not* values negated together; principals before namespaces."""
    source = {"principals": ["principal", "principal-prefix-*", "*-suffix-principal", "*"],
              "notPrincipals": ["not-principal", "not-principal-prefix-*", "*-not-suffix-principal", "*"],
              "namespaces": ["ns", "ns-prefix-*", "*-ns-suffix", "*"],
              "notNamespaces": ["not-ns", "not-ns-prefix-*", "*-not-ns-suffix", "*"]}
    envoy_policy = only_policy(filters_of(PRODUCTPAGE, secured(policy("p", {"rules": [{"from": [{"source": source}]}]}))))

    def principals(prefix: str) -> list[dict]:
        return [authenticated({"exact": f"spiffe://{prefix}principal"}),
                authenticated({"prefix": f"spiffe://{prefix}principal-prefix-"}),
                authenticated({"safe_regex": {"regex": f"spiffe://.*-{prefix}suffix-principal"}}),
                authenticated({"safe_regex": {"regex": ".+"}})]

    def namespaces(prefix: str) -> list[dict]:
        return [authenticated({"safe_regex": {"regex": f".*/ns/{prefix}ns/.*"}}),
                authenticated({"safe_regex": {"regex": f".*/ns/{prefix}ns-prefix-.*/.*"}}),
                authenticated({"safe_regex": {"regex": f".*/ns/.*-{prefix}ns-suffix/.*"}}),
                authenticated({"safe_regex": {"regex": ".*/ns/.*/.*"}})]

    assert envoy_policy == {"permissions": [ANY_PERMISSION], "principals": [{"and_ids": {"ids": [
        {"or_ids": {"ids": principals("")}}, {"not_id": {"or_ids": {"ids": principals("not-")}}},
        {"or_ids": {"ids": namespaces("")}}, {"not_id": {"or_ids": {"ids": namespaces("not-")}}},
    ]}}]}


def test_a_mesh_identity_is_matched_as_its_spiffe_uri() -> None:
    """A principal as policies name workloads, cluster.local/ns/<ns>/sa/<sa>: the trust domain has no
    aliases, so Istio's trust domain migration leaves it as written."""
    spec = {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/tools/sa/curl", "*/sa/curl"]}}]}]}
    [ids] = only_policy(filters_of(PRODUCTPAGE, secured(policy("p", spec))))["principals"]
    assert ids["and_ids"]["ids"] == [{"or_ids": {"ids": [
        authenticated({"exact": "spiffe://cluster.local/ns/tools/sa/curl"}),
        authenticated({"safe_regex": {"regex": "spiffe://.*/sa/curl"}}),
    ]}}]


def test_operation_methods_paths_and_ports() -> None:
    """allow-full-rule-out.yaml rule[1]'s methods, paths (allow-path-out.yaml, without templates) and
    ports: methods first, then paths, then ports, each not* right after its values."""
    operation = {"methods": ["method", "method-prefix-*", "*-suffix-method", "*"],
                 "notMethods": ["not-method", "not-method-prefix-*", "*-not-suffix-method", "*"],
                 "paths": ["/exact", "/prefix/*", "*/suffix", "*"],
                 "notPaths": ["/not-exact", "/not-prefix/*", "*/not-suffix", "*"],
                 "ports": ["80", "90"], "notPorts": ["8000", "9000"]}
    envoy_policy = only_policy(filters_of(PRODUCTPAGE, secured(policy("p", {"rules": [{"to": [{"operation": operation}]}]}))))

    def methods(prefix: str) -> list[dict]:
        return [method({"string_match": {"exact": f"{prefix}method"}}),
                method({"string_match": {"prefix": f"{prefix}method-prefix-"}}),
                method({"string_match": {"suffix": f"-{prefix}suffix-method"}}),
                method({"present_match": True})]

    def paths(prefix: str) -> list[dict]:
        return [{"url_path": {"path": matcher}} for matcher in (
            {"exact": f"/{prefix}exact"}, {"prefix": f"/{prefix}prefix/"}, {"suffix": f"/{prefix}suffix"},
            {"safe_regex": {"regex": ".+"}})]

    assert envoy_policy == {"permissions": [{"and_rules": {"rules": [
        {"or_rules": {"rules": methods("")}}, {"not_rule": {"or_rules": {"rules": methods("not-")}}},
        {"or_rules": {"rules": paths("")}}, {"not_rule": {"or_rules": {"rules": paths("not-")}}},
        {"or_rules": {"rules": [{"destination_port": 80}, {"destination_port": 90}]}},
        {"not_rule": {"or_rules": {"rules": [{"destination_port": 8000}, {"destination_port": 9000}]}}},
    ]}}], "principals": [ANY_PRINCIPAL]}


def test_each_source_and_operation_is_one_principal_and_one_permission() -> None:
    """simple-policy-principal-with-wildcard-out.yaml: two sources, two principals (either matches);
    rules are policies of their own, named by index (builder.go policyName)."""
    spec = {"rules": [
        {"from": [{"source": {"principals": ["*"]}}, {"source": {"principals": ["*/ns/foo/sa/a"]}}],
         "to": [{"operation": {"methods": ["GET"]}}, {"operation": {"paths": ["/p"]}}]},
        {"to": [{"operation": {"ports": ["9080"]}}]},
    ]}
    [one] = filters_of(PRODUCTPAGE, secured(policy("httpbin", spec)))
    policies = one["typed_config"]["rules"]["policies"]
    assert list(policies) == ["ns[bookinfo]-policy[httpbin]-rule[0]", "ns[bookinfo]-policy[httpbin]-rule[1]"]
    first = policies["ns[bookinfo]-policy[httpbin]-rule[0]"]
    assert first["principals"] == [
        {"and_ids": {"ids": [{"or_ids": {"ids": [authenticated({"safe_regex": {"regex": ".+"}})]}}]}},
        {"and_ids": {"ids": [{"or_ids": {"ids": [
            authenticated({"safe_regex": {"regex": "spiffe://.*/ns/foo/sa/a"}})]}}]}},
    ]
    assert first["permissions"] == [
        {"and_rules": {"rules": [{"or_rules": {"rules": [method({"string_match": {"exact": "GET"}})]}}]}},
        {"and_rules": {"rules": [{"or_rules": {"rules": [{"url_path": {"path": {"exact": "/p"}}}]}}]}},
    ]
    assert policies["ns[bookinfo]-policy[httpbin]-rule[1]"] == {
        "permissions": [{"and_rules": {"rules": [{"or_rules": {"rules": [{"destination_port": 9080}]}}]}}],
        "principals": [ANY_PRINCIPAL]}


def test_when_conditions_join_every_source_and_operation_after_their_own_fields() -> None:
    """model.go: a `when` condition is appended to every principal (request.headers, source.*) or
    every permission (destination.port), after the source's or operation's fields, in its order."""
    spec = {"action": "DENY", "rules": [{
        "from": [{"source": {"namespaces": ["tools"]}}, {"source": {"principals": ["x"]}}],
        "to": [{"operation": {"methods": ["POST"]}}],
        "when": [{"key": "request.headers[X-Token]", "values": ["*"], "notValues": ["admin-*"]},
                 {"key": "destination.port", "values": ["9080"]},
                 {"key": "source.principal", "notValues": ["*/sa/curl"]},
                 {"key": "source.namespace", "values": ["too*"]}],
    }]}
    envoy_policy = only_policy(filters_of(PRODUCTPAGE, secured(policy("p", spec))))
    when_principals = [
        {"or_ids": {"ids": [{"header": {"name": "X-Token", "present_match": True}}]}},
        {"not_id": {"or_ids": {"ids": [{"header": {"name": "X-Token", "string_match": {"prefix": "admin-"}}}]}}},
        {"not_id": {"or_ids": {"ids": [authenticated({"safe_regex": {"regex": "spiffe://.*/sa/curl"}})]}}},
        {"or_ids": {"ids": [authenticated({"safe_regex": {"regex": ".*/ns/too.*/.*"}})]}},
    ]
    assert envoy_policy["principals"] == [
        {"and_ids": {"ids": [{"or_ids": {"ids": [authenticated({"safe_regex": {"regex": ".*/ns/tools/.*"}})]}},
                             *when_principals]}},
        {"and_ids": {"ids": [{"or_ids": {"ids": [authenticated({"exact": "spiffe://x"})]}}, *when_principals]}},
    ]
    assert envoy_policy["permissions"] == [{"and_rules": {"rules": [
        {"or_rules": {"rules": [method({"string_match": {"exact": "POST"}})]}},
        {"or_rules": {"rules": [{"destination_port": 9080}]}},
    ]}}]
    # Without from or to, the conditions alone make the one principal and permission.
    bare = only_policy(filters_of(PRODUCTPAGE, secured(policy("p", {"rules": [{"when": spec["rules"][0]["when"]}]}))))
    assert bare["principals"] == [{"and_ids": {"ids": when_principals}}]
    assert bare["permissions"] == [{"and_rules": {"rules": [{"or_rules": {"rules": [{"destination_port": 9080}]}}]}}]


def test_v1beta1_is_the_same_policy() -> None:
    spec = {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}
    v1 = filters_of(PRODUCTPAGE, secured(policy("p", spec)))
    assert filters_of(PRODUCTPAGE, secured(policy("p", spec, api_version="security.istio.io/v1beta1"))) == v1
    assert v1 and v1[0]["typed_config"]["rules"]["action"] == "DENY"


def test_a_port_that_is_not_a_number_is_refused() -> None:
    assert port_number("65535") == 65535
    for bad in ("http", "65536", "-1", ""):
        with pytest.raises(ValueError, match="is not a port number"):
            port_number(bad)


# ---------------------------------------------------------------------------------------------
# Which workloads a policy applies to (istio/istio pilot/pkg/model/authorization.go, policyattachment.go)


OTHER_NS_POD = make_pod("productpage-v1", "127.0.1.60", {"app": "productpage", "version": "v1"}, namespace="other")


def applies_to(doc: Mapping[str, Any], pod: Pod) -> bool:
    state = secured(doc, pods=(PRODUCTPAGE, RATINGS, CURL, OTHER_NS_POD))
    return bool(filters_of(pod, state))


def test_a_selector_picks_the_workloads_of_its_namespace_by_labels() -> None:
    doc = policy("p", {"selector": {"matchLabels": {"app": "productpage"}}, **DENY_ALL})
    assert applies_to(doc, PRODUCTPAGE)
    assert not applies_to(doc, RATINGS)
    assert not applies_to(doc, OTHER_NS_POD)  # same labels, another namespace


def test_without_selector_a_policy_applies_to_its_whole_namespace() -> None:
    for spec in (DENY_ALL, {"selector": {}, **DENY_ALL}, {"selector": {"matchLabels": {}}, **DENY_ALL}):
        doc = policy("p", spec)
        assert applies_to(doc, PRODUCTPAGE) and applies_to(doc, RATINGS)
        assert not applies_to(doc, CURL)  # namespace tools
        assert not applies_to(doc, OTHER_NS_POD)


def test_a_policy_of_the_root_namespace_applies_to_the_whole_mesh() -> None:
    mesh_wide = policy("p", DENY_ALL, namespace=GATEWAY_NS)
    # The ingress gateway too (its namespace is the root): istiod builds the same filters for a gateway.
    assert all(applies_to(mesh_wide, pod) for pod in (PRODUCTPAGE, RATINGS, CURL, OTHER_NS_POD, INGRESS))
    # With a selector: its workloads in every namespace.
    selected = policy("p", {"selector": {"matchLabels": {"app": "productpage"}}, **DENY_ALL}, namespace=GATEWAY_NS)
    assert applies_to(selected, PRODUCTPAGE) and applies_to(selected, OTHER_NS_POD)
    assert not applies_to(selected, RATINGS)


def test_the_gateways_listeners_run_the_policies_that_select_it() -> None:
    """A gateway's HTTP connection managers carry the same RBAC filters as a sidecar's inbound ones
    (istio/istio pilot/pkg/networking/core/listener_builder.go buildHTTPConnectionManager), before
    Istio's fault filter and router."""
    state = secured(policy("p", DENY_ALL, namespace=GATEWAY_NS), pods=(PRODUCTPAGE, INGRESS))
    state = dataclasses.replace(state, gateways=(gateway("ingress", ["*"]),))
    [listener] = translate(INGRESS, state).listeners
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    assert names[0] == "envoy.filters.http.rbac" and names[-1] == "envoy.filters.http.router"
    assert hcm["http_filters"][0] == filters_of(INGRESS, state)[0]


def test_root_namespace_policies_come_first_then_the_workloads_in_creation_order() -> None:
    docs = [policy("b", DENY_ALL), policy("root", DENY_ALL, namespace=GATEWAY_NS), policy("a", DENY_ALL)]
    [deny] = filters_of(PRODUCTPAGE, secured(*docs))
    assert list(deny["typed_config"]["rules"]["policies"]) == [
        "ns[istio-system]-policy[root]-rule[0]", "ns[bookinfo]-policy[b]-rule[0]", "ns[bookinfo]-policy[a]-rule[0]"]


def test_no_policy_no_filter_and_the_mutant_drops_them_all() -> None:
    assert filters_of(PRODUCTPAGE, secured()) == []
    docs = [policy("deny", DENY_ALL), policy("allow", {"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})]
    assert len(filters_of(PRODUCTPAGE, secured(*docs))) == 2
    assert filters_of(PRODUCTPAGE, secured(*docs, mutants=IGNORED)) == []
