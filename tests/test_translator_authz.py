"""AuthorizationPolicy as Envoy's RBAC HTTP filters on a sidecar's inbound listeners: by value, checked
against what istiod generates (istio/istio tag 1.28.0 pilot/pkg/security/authz/builder/testdata/http/
*-in.yaml and *-out.yaml, the builder's golden files), accepted by Envoy, and enforced by a real one."""

import copy
import dataclasses
import http.client
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import UnsupportedResource
from conformance.manifests import manifests_dir
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.model import MeshState, Pod, Service, ServicePort, app_port
from conformance.targets.local.objects import namespace_doc
from conformance.targets.local.translator import translate
from conformance.targets.local.translator.authorization import (
    MATCH_NEVER,
    RBAC_FILTER,
    RBAC_TYPE,
    SHADOW_RULES_STAT_PREFIX,
    inbound_filters,
    port_number,
)
from conformance.targets.local.translator.index import MeshIndex
from conformance.targets.local.translator.mutants import AUTHZ_IGNORED
from conformance.targets.local.translator.resources import HCM_FILTER
from conformance.verdicts.security import RBAC_DENIED, XFCC
from tests.builders import (
    BOOKINFO_PODS,
    BOOKINFO_SERVICES,
    CURL,
    GATEWAY_NS,
    INGRESS,
    NS,
    PRODUCTPAGE,
    RATINGS,
    WHOLE_MESH,
    eventually,
    gateway,
    http_get,
    make_pod,
    manifest_docs,
    mesh,
    running_local_mesh,
)
from tests.envoy_builders import (
    Proxies,
    SECURITY_API,
    RecordingUpstream,
    envoy_validate,
    injected_pod,
    static_bootstrap,
    through,
)

IGNORED = frozenset({AUTHZ_IGNORED})
ANY_PERMISSION = {"and_rules": {"rules": [{"any": True}]}}
ANY_PRINCIPAL = {"and_ids": {"ids": [{"any": True}]}}


def policy(name: str, spec: Mapping[str, Any], namespace: str = NS, api_version: str = SECURITY_API,
           **metadata: Any) -> dict:
    return {"apiVersion": api_version, "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace, **metadata}, "spec": dict(spec)}


def secured(*policies: Mapping[str, Any], pods: tuple[Pod, ...] = BOOKINFO_PODS,
            services: tuple[Service, ...] = BOOKINFO_SERVICES, mutants: frozenset[str] = frozenset()) -> MeshState:
    """The bookinfo mesh (or these pods and services) with `policies`, in creation order."""
    state = mesh(pods=pods, services=services, mutants=mutants)
    return dataclasses.replace(state, authorization_policies=tuple(policies))


def filters_of(pod: Pod, state: MeshState) -> list[dict]:
    for doc in state.authorization_policies:
        check_supported(doc)  # what the mesh admits before it translates
    return inbound_filters(pod, MeshIndex.build(state, pod.namespace))


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
DENY_ALL = {"action": "DENY", "rules": [{}]}


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


# ---------------------------------------------------------------------------------------------
# The implemented subset: admitted field by field, the rest refused by name


EVERY_FIELD = policy("every-field", {
    "selector": {"matchLabels": {"app": "productpage"}},
    "action": "ALLOW",
    "rules": [{
        "from": [{"source": {"principals": ["cluster.local/ns/tools/sa/curl"], "notPrincipals": ["*/sa/intruder"],
                             "namespaces": ["tools"], "notNamespaces": ["kube-*"]}}],
        "to": [{"operation": {"methods": ["GET"], "notMethods": ["DELETE"], "paths": ["/api/*"], "notPaths": ["*.php"],
                              "ports": ["9080"], "notPorts": ["15000"]}}],
        "when": [{"key": "request.headers[x-user]", "values": ["jason"]}, {"key": "source.principal", "values": ["*"]},
                 {"key": "source.namespace", "notValues": ["other"]}, {"key": "destination.port", "values": ["9080"]}],
    }],
})


def test_every_implemented_field_and_the_security_manifests_are_admitted() -> None:
    check_supported(EVERY_FIELD)
    files = sorted(path.relative_to(manifests_dir()) for path in (manifests_dir() / "security").glob("*.yaml"))
    docs = [d for name in files for d in manifest_docs(str(name), "AuthorizationPolicy")]
    assert len(docs) >= 4
    for doc in docs:
        check_supported({**doc, "metadata": {**doc["metadata"], "namespace": NS}})


def _with(path: str, value: Any) -> dict:
    """EVERY_FIELD with `value` at the dotted `path` (a number indexes a list)."""
    out = copy.deepcopy(EVERY_FIELD)
    *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
    node: Any = out
    for part in parents:
        node = node[part]
    node[last] = value
    return out


@pytest.mark.parametrize(("path", "value", "refusal"), [
    ("spec.action", "AUDIT", "field spec.action AUDIT is not implemented by the local mesh (only ALLOW, DENY)"),
    ("spec.action", "CUSTOM", "field spec.action CUSTOM is not implemented"),
    ("spec.provider", {"name": "ext"}, "field spec.provider is not implemented"),
    ("spec.targetRefs", [{"kind": "Gateway", "name": "gw"}], "field spec.targetRefs is not implemented"),
    ("spec.rules.0.from.0.source.requestPrincipals", ["*"], "field spec.rules[0].from[0].source.requestPrincipals is"),
    ("spec.rules.0.from.0.source.serviceAccounts", ["curl"], "field spec.rules[0].from[0].source.serviceAccounts is"),
    ("spec.rules.0.from.0.source.ipBlocks", ["10.0.0.0/8"], "field spec.rules[0].from[0].source.ipBlocks is"),
    ("spec.rules.0.from.0.source.notRemoteIpBlocks", ["1.2.3.4"], "source.notRemoteIpBlocks is not implemented"),
    ("spec.rules.0.to.0.operation.hosts", ["a.com"], "field spec.rules[0].to[0].operation.hosts is not implemented"),
    ("spec.rules.0.to.0.operation.paths", ["/a/{*}"], "field spec.rules[0].to[0].operation.paths: path templates"),
    ("spec.rules.0.to.0.operation.notPaths", ["/{**}/x"], "operation.notPaths: path templates ({*}, {**}) are not"),
    ("spec.rules.0.when.1.key", "request.auth.claims[iss]",
     "field spec.rules[0].when[1].key 'request.auth.claims[iss]' is not implemented by the local mesh"),
    ("spec.rules.0.when.0.key", "source.ip", "when[0].key 'source.ip' is not implemented"),
    ("spec.rules.0.when.0.key", "request.headers[]", "when[0].key 'request.headers[]' is not implemented"),
    ("metadata.annotations", {"istio.io/dry-run": "true"}, "annotation istio.io/dry-run is not implemented"),
    ("apiVersion", "networking.istio.io/v1", "apiVersion 'networking.istio.io/v1' is not implemented"),
])
def test_what_is_not_implemented_is_refused_by_name(path: str, value: Any, refusal: str) -> None:
    with pytest.raises(UnsupportedResource) as refused:
        check_supported(_with(path, value))
    assert refusal in str(refused.value)
    assert "AuthorizationPolicy bookinfo/every-field" in str(refused.value)


def test_dry_run_false_is_an_enforced_policy() -> None:
    check_supported(_with("metadata.annotations", {"istio.io/dry-run": "false"}))


def http_connection_managers(listener: dict) -> list[dict]:
    """The HTTP connection manager of each of a listener's filter chains."""
    managers = [f["typed_config"] for chain in listener["filter_chains"] for f in chain["filters"]
                if f["name"] == HCM_FILTER]
    assert managers, listener["name"]
    return managers


# ---------------------------------------------------------------------------------------------
# Real Envoy: the filters sit first in each inbound HTTP filter chain, and Envoy accepts them


def test_envoy_accepts_the_filters_first_in_every_inbound_chain(tmp_path: Path) -> None:
    """Istio places the RBAC filters after authentication and before the fault filter and the router
    (istio/istio pilot/pkg/networking/core/listener_builder.go buildHTTPConnectionManager); never on
    the outbound listener (plugin/authz/authorization.go BuildHTTP)."""
    docs = [EVERY_FIELD, policy("deny", {"action": "DENY", "rules": [
        {"to": [{"operation": {"paths": ["*"], "notMethods": ["*"]}}], "when": [{"key": "request.headers[a]",
                                                                                 "notValues": ["*x", "y*"]}]}]}),
            policy("nothing", {}, namespace=GATEWAY_NS), policy("all", {"rules": [{}]})]
    pod = make_pod("productpage-v1", "127.0.1.1", {"app": "productpage"}, ports=(9080, 9443))
    state = secured(*docs, pods=(pod, RATINGS))
    config = translate(pod, state)
    expected = filters_of(pod, state)
    assert [f["typed_config"]["rules"]["action"] for f in expected] == ["DENY", "ALLOW"]
    inbound = [item for item in config.listeners if item["traffic_direction"] == "INBOUND"]
    assert len(inbound) == 2
    for listener in inbound:
        for hcm in http_connection_managers(listener):  # every chain: plaintext and mutual TLS
            assert hcm["http_filters"][:2] == expected
    outbound = [item for item in config.listeners if item["traffic_direction"] == "OUTBOUND"]
    assert outbound and all(f["name"] != RBAC_FILTER for item in outbound
                            for hcm in http_connection_managers(item) for f in hcm["http_filters"])
    envoy_validate(static_bootstrap(pod, config), tmp_path)


# ---------------------------------------------------------------------------------------------
# Live: a request to a real sidecar's inbound listener, the app behind it


def request(ip: str, port: int, method_name: str, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        conn.request(method_name, path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


PORT = 9080


@contextmanager
def serve(run_dir: Path, server: Pod, *docs: Mapping[str, Any], mutants: frozenset[str] = frozenset()) -> Iterator[None]:
    """`server`'s sidecar running with `docs` applied, for the block (the app behind it, on
    server.ip:app_port, is the caller's)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with Proxies(run_dir) as proxies:
        proxies.start(server, secured(*docs, pods=(server,), mutants=mutants))
        yield


def server_pod(ip: str, labels: Mapping[str, str] | None = None) -> Pod:
    return make_pod("httpbin", ip, labels or {"app": "httpbin"}, ports=(PORT,))


DENY_STATUS = policy("httpbin-deny-status", {"selector": {"matchLabels": {"app": "httpbin"}}, "action": "DENY",
                                             "rules": [{"to": [{"operation": {"paths": ["/status/*"]}}]}]})


@pytest.mark.parametrize("mutants", [frozenset(), IGNORED], ids=["istio", "authz-ignored"])
def test_live_deny_by_path(tmp_path: Path, loopback_ips: list[str], mutants: frozenset[str]) -> None:
    """Istio: 403 `RBAC: access denied` for the path the DENY policy names, and the app never sees it;
    200 from the app elsewhere. With authz-ignored, the denied path reaches the app."""
    ip = loopback_ips[0]
    with RecordingUpstream(ip, app_port(PORT), body="from-app") as app, serve(tmp_path, server_pod(ip), DENY_STATUS,
                                                                              mutants=mutants):
        assert request(ip, PORT, "GET", "/headers") == (200, "from-app")
        denied = request(ip, PORT, "GET", "/status/418")
        if mutants:
            assert denied == (200, "from-app")
            assert len(app.seen) == 2
        else:
            assert denied == (403, RBAC_DENIED)
            assert len(app.seen) == 1  # only /headers got through


def test_live_allow_nothing_denies_everything(tmp_path: Path, loopback_ips: list[str]) -> None:
    ip = loopback_ips[0]
    with RecordingUpstream(ip, app_port(PORT), body="from-app") as app, \
            serve(tmp_path, server_pod(ip), policy("allow-nothing", {})):
        for method_name, path in (("GET", "/"), ("GET", "/headers"), ("POST", "/post"), ("DELETE", "/x")):
            assert request(ip, PORT, method_name, path) == (403, RBAC_DENIED), (method_name, path)
        assert app.seen == []


def test_live_namespace_wide_deny_all(tmp_path: Path, loopback_ips: list[str]) -> None:
    """No selector: every workload of the namespace, this one (whatever its labels) included."""
    ip = loopback_ips[0]
    with RecordingUpstream(ip, app_port(PORT), body="from-app") as app, \
            serve(tmp_path, server_pod(ip, {"app": "anything"}), policy("deny-all", DENY_ALL)):
        for path in ("/", "/headers", "/status/200"):
            assert request(ip, PORT, "GET", path) == (403, RBAC_DENIED), path
        assert app.seen == []


def test_live_allow_by_method(tmp_path: Path, loopback_ips: list[str]) -> None:
    """An ALLOW policy applies: what none of its rules matches is denied (here, every method but GET)."""
    ip = loopback_ips[0]
    allow_get = policy("allow-get", {"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})
    with RecordingUpstream(ip, app_port(PORT), body="from-app") as app, serve(tmp_path, server_pod(ip), allow_get):
        assert request(ip, PORT, "GET", "/anything") == (200, "from-app")
        for method_name in ("POST", "PUT", "DELETE"):
            assert request(ip, PORT, method_name, "/anything") == (403, RBAC_DENIED), method_name
        assert len(app.seen) == 1


def test_live_a_principal_rule_denies_a_plaintext_client(tmp_path: Path, loopback_ips: list[str]) -> None:
    """A client without a certificate has no principal: an ALLOW naming one denies it, a DENY naming
    one does not apply to it (the peer identity comes only from mutual TLS)."""
    ip = loopback_ips[0]
    only_curl = policy("only-curl", {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/tools/sa/curl"]}}]}]})
    deny_curl = policy("deny-curl", {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["*"]}}]}]})
    with RecordingUpstream(ip, app_port(PORT), body="from-app"):
        with serve(tmp_path / "allow", server_pod(ip), only_curl):
            assert request(ip, PORT, "GET", "/") == (403, RBAC_DENIED)
        with serve(tmp_path / "deny", server_pod(ip), deny_curl):
            assert request(ip, PORT, "GET", "/") == (200, "from-app")


def test_live_only_the_allowed_service_accounts_sidecar_gets_through(tmp_path: Path, loopback_ips: list[str]) -> None:
    """Mutual TLS between sidecars (auto mTLS to an injected server, PERMISSIVE by default) gives the
    server's RBAC filter the client's certificate: the curl service account's sidecar gets 200, the
    intruder's sidecar and a plaintext client 403 (istio.io docs: tasks/security/authorization/authz-http)."""
    server_ip, curl_ip, intruder_ip = loopback_ips
    server = injected_pod("httpbin", server_ip, (PORT,))
    curl, intruder = injected_pod("curl", curl_ip, ()), injected_pod("intruder", intruder_ip, ())
    assert (curl.service_account, intruder.service_account) == ("curl", "intruder")
    service = Service("httpbin", NS, (ServicePort("http", 8000, PORT),), {"app": "httpbin"})
    only_curl = policy("httpbin-allow-curl", {"selector": {"matchLabels": {"app": "httpbin"}}, "rules": [
        {"from": [{"source": {"principals": [f"cluster.local/ns/{NS}/sa/curl"]}}]}]})
    state = secured(only_curl, pods=(server, curl, intruder), services=(service,))
    with RecordingUpstream(server_ip, app_port(PORT), body="from-app") as app, Proxies(tmp_path) as proxies:
        for pod in (server, curl, intruder):
            proxies.start(pod, state)
        allowed = through(curl_ip, "http://httpbin:8000/headers")
        assert (allowed.status, allowed.body) == (200, "from-app")
        denied = through(intruder_ip, "http://httpbin:8000/headers")
        assert (denied.status, denied.body) == (403, RBAC_DENIED)
        assert request(server_ip, PORT, "GET", "/headers") == (403, RBAC_DENIED)
        assert len(app.seen) == 1
        assert app.seen[0][XFCC.lower()].endswith(f"URI=spiffe://cluster.local/ns/{NS}/sa/curl")


@WHOLE_MESH
def test_local_mesh_admits_and_enforces_the_security_manifests(tmp_path: Path) -> None:
    """The whole path on a LocalMesh: the policies are admitted (CRD schema, Istio's webhook, the
    subset), translated and pushed; the httpbin sidecar enforces each one as soon as it is applied."""
    namespace = "secured"
    with running_local_mesh(tmp_path) as local:
        local.apply([namespace_doc(namespace, {"istio-injection": "enabled"})], namespace)
        local.apply(manifest_docs("clients/httpbin.yaml"), namespace)
        local.wait_ready(namespace, 30, 0.05)
        (pod,) = local.running()
        ip, port = pod.model.ip, pod.model.container_ports[0]

        def get(path: str) -> tuple[int, str]:
            status, _, body = http_get(ip, port, path)
            return status, body

        assert get("/status/418")[0] == 418
        local.apply(manifest_docs("security/authz-deny-status.yaml"), namespace)
        eventually(lambda: get("/status/418") == (403, RBAC_DENIED), "the DENY policy")
        assert get("/headers")[0] == 200
        local.apply(manifest_docs("security/authz-allow-nothing.yaml"), namespace)
        eventually(lambda: get("/headers") == (403, RBAC_DENIED), "the allow-nothing policy")
        local.delete(manifest_docs("security/authz-allow-nothing.yaml"), namespace)
        eventually(lambda: get("/headers")[0] == 200, "allow-nothing's removal")
