"""The translator's faults, mutants and Gateway API HTTPRoutes (GAMMA), by value and on real Envoy."""

import copy
import http.client
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import ManifestError, UnsupportedResource
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.model import OUTBOUND_PORT, Pod, Service, ServicePort
from conformance.targets.local.target import namespace_doc
from conformance.targets.local.translator import KNOWN_MUTANTS, ProxyConfig, translate
from conformance.targets.local.validate import check_document
from tests.builders import (
    RATINGS_VHOST,
    ALL_V1_DR,
    BOOKINFO_SERVICES,
    CONFIG_DIR,
    CURL,
    INGRESS,
    ISTIO_DEFAULT_RETRY,
    NS,
    PRODUCTPAGE,
    REVIEWS_HOST,
    REVIEWS_VHOST,
    destination_rule,
    dynamic_bootstrap,
    envoy_validate,
    eventually,
    gateway,
    hcm_of,
    load_reference,
    load_sample,
    make_pod,
    make_service,
    mesh,
    metadata,
    outbound_routes,
    sidecar,
    start_upstream,
    static_bootstrap,
    to,
    virtual_service,
    write_proxy_files,
)

GATEWAY_API = "gateway.networking.k8s.io/v1"
# How early Envoy's timers may fire (coarse event-loop clock): 5 ms covers what was observed.
TIMER_SLACK = 0.005
FAULT = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
RATINGS_V1 = "outbound|9080|v1|ratings.bookinfo.svc.cluster.local"
RATINGS_DR = destination_rule("ratings", ["v1"])
# Bookinfo's per-version Services (samples/bookinfo/platform/kube/bookinfo-versions.yaml).
VERSION_SERVICES = tuple(
    Service(f"reviews-{v}", NS, (ServicePort("http", 9080, 9080),), {"app": "reviews", "version": v})
    for v in ("v1", "v2", "v3")
)
WITH_VERSIONS = (*BOOKINFO_SERVICES, *VERSION_SERVICES)


def version_cluster(version: str) -> str:
    return f"outbound|9080||reviews-{version}.bookinfo.svc.cluster.local"


def fault_of(route: Mapping[str, Any]) -> dict | None:
    return route.get("typed_per_filter_config", {}).get(FAULT)


def http_route(name: str, rules: list[dict], parent: str | None = None, port: int | None = 9080,
               namespace: str = NS, parent_namespace: str | None = None) -> dict:
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": parent or name}
    if port is not None:
        ref["port"] = port
    if parent_namespace is not None:
        ref["namespace"] = parent_namespace
    return {"apiVersion": GATEWAY_API, "kind": "HTTPRoute", "metadata": metadata(name, namespace),
            "spec": {"parentRefs": [ref], "rules": rules}}


def backend(name: str, weight: int | None = None, port: int = 9080) -> dict:
    ref: dict[str, Any] = {"name": name, "port": port}
    if weight is not None:
        ref["weight"] = weight
    return ref


def gamma(*docs: Mapping[str, Any], pod: Pod = PRODUCTPAGE, mutants: frozenset[str] = frozenset(),
          services: tuple[Service, ...] = WITH_VERSIONS) -> ProxyConfig:
    return translate(pod, mesh(*docs, services=services, mutants=mutants), CONFIG_DIR)


# ---------------------------------------------------------------------------------------------
# Faults


def test_abort_sample_faults_only_the_matching_route() -> None:
    routes = outbound_routes(sidecar(mesh(RATINGS_DR, *load_reference("virtual-service-ratings-test-abort"))),
                             RATINGS_VHOST)
    assert [r["match"] for r in routes] == [
        {"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]},
        {"prefix": "/"},
    ]
    assert fault_of(routes[0]) == {
        "@type": FAULT_TYPE,
        "abort": {"http_status": 500, "percentage": {"numerator": 1000000, "denominator": "MILLION"}},
    }
    assert "typed_per_filter_config" not in routes[1]
    assert [r["route"]["cluster"] for r in routes] == [RATINGS_V1, RATINGS_V1]


def test_delay_sample_faults_only_the_matching_route() -> None:
    routes = outbound_routes(sidecar(mesh(RATINGS_DR, *load_reference("virtual-service-ratings-test-delay"))),
                             RATINGS_VHOST)
    assert fault_of(routes[0]) == {
        "@type": FAULT_TYPE,
        "delay": {"fixed_delay": "7s", "percentage": {"numerator": 1000000, "denominator": "MILLION"}},
    }
    assert fault_of(routes[1]) is None


def test_fault_covers_every_match_of_its_http_route_and_no_other() -> None:
    vs = virtual_service("ratings", [
        {"match": [{"uri": {"prefix": "/a"}}, {"uri": {"prefix": "/b"}}], "route": [to("ratings", "v1")],
         "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 10}},
                   "delay": {"fixedDelay": "250ms", "percentage": {"value": 0.1}}}},
        {"route": [to("ratings", "v1")]},
    ])
    routes = outbound_routes(sidecar(mesh(RATINGS_DR, vs)), RATINGS_VHOST)
    expected = {
        "@type": FAULT_TYPE,
        "abort": {"http_status": 503, "percentage": {"numerator": 100000, "denominator": "MILLION"}},
        "delay": {"fixed_delay": "0.250000000s", "percentage": {"numerator": 1000, "denominator": "MILLION"}},
    }
    assert [fault_of(r) for r in routes] == [expected, expected, None]


@pytest.mark.parametrize(
    ("value", "numerator"),
    [(100, 1000000), (100.0, 1000000), (50, 500000), (0.1, 1000), (0.29, 2900), (33.3333, 333333),
     (0.0001, 1), (0, 0), (None, 0)],
)
def test_percent_is_an_exact_per_million_numerator(value: float | None, numerator: int) -> None:
    # 0.29 * 10000 is 2899.9999999999995 in floating point: still 2900 per million here.
    abort: dict[str, Any] = {"httpStatus": 500}
    if value is not None:
        abort["percentage"] = {"value": value}
    vs = virtual_service("ratings", [{"route": [to("ratings", "v1")], "fault": {"abort": abort}}])
    [route] = outbound_routes(sidecar(mesh(RATINGS_DR, vs)), RATINGS_VHOST)
    assert fault_of(route)["abort"]["percentage"] == {"numerator": numerator, "denominator": "MILLION"}


def test_absent_percentage_faults_no_request_as_istio() -> None:
    # istio/api virtual_service.proto: "If not specified, no request will be aborted" (and delayed).
    vs = virtual_service("ratings", [{"route": [to("ratings", "v1")],
                                      "fault": {"abort": {"httpStatus": 500}, "delay": {"fixedDelay": "1s"}}}])
    [route] = outbound_routes(sidecar(mesh(RATINGS_DR, vs)), RATINGS_VHOST)
    none = {"numerator": 0, "denominator": "MILLION"}
    assert fault_of(route)["abort"]["percentage"] == none and fault_of(route)["delay"]["percentage"] == none


def _http_filters(listener: dict) -> list[dict]:
    return hcm_of(listener)["http_filters"]


def test_fault_filter_precedes_the_router_on_every_listener() -> None:
    configs = [sidecar(mesh()), translate(INGRESS, mesh(gateway("gw", ["*"])), CONFIG_DIR)]
    listeners = [listener for config in configs for listener in config.listeners]
    assert {item["name"] for item in listeners} >= {"outbound", "inbound_127.0.1.1_9080", "127.0.1.100_8080"}
    for listener in listeners:
        assert _http_filters(listener) == [
            {"name": FAULT, "typed_config": {"@type": FAULT_TYPE}},  # empty: the routes carry the faults
            {"name": "envoy.filters.http.router",
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ], listener["name"]


def test_gateway_routes_carry_faults_too() -> None:
    vs = virtual_service("front", [{"route": [to("productpage")], "fault": {"abort": {"httpStatus": 502}}}],
                         hosts=["*"], gateways=["istio-system/gw"])
    config = translate(INGRESS, mesh(gateway("gw", ["*"]), vs), CONFIG_DIR)
    [vhost] = config.routes["http.8080"]["virtual_hosts"]
    assert fault_of(vhost["routes"][0])["abort"]["http_status"] == 502


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({}, None),  # an empty fault is no fault
        ({"abort": {"httpStatus": 700}}, r"spec\.http\[0\]\.fault\.abort\.httpStatus: 700 is not an HTTP status"),
        ({"abort": {"percentage": {"value": 50}}}, r"fault\.abort\.httpStatus: None is not an HTTP status"),
        ({"abort": {"httpStatus": 500, "percentage": {"value": 100.5}}},
         r"fault\.abort\.percentage\.value: 100\.5 is not a percentage"),
        ({"delay": {"fixedDelay": "1s", "percentage": {"value": -1}}}, r"fault\.delay\.percentage\.value: -1"),
        ({"delay": {"fixedDelay": "500us"}}, r"fault\.delay\.fixedDelay '500us' must be at least 1ms"),
        ({"delay": {"fixedDelay": "soon"}}, r"fault\.delay\.fixedDelay: 'soon' is not a duration"),
        ({"delay": {"percentage": {"value": 5}}}, r"fault\.delay needs fixedDelay"),
        ({"abort": None, "delay": None}, r"fault needs an abort and/or a delay"),
    ],
)
def test_invalid_fault_values_are_manifest_errors(fault: dict, message: str | None) -> None:
    vs = virtual_service("ratings", [{"route": [to("ratings", "v1")], "fault": fault}])
    if message is None:
        [route] = outbound_routes(sidecar(mesh(RATINGS_DR, vs)), RATINGS_VHOST)
        assert fault_of(route) is None
        return
    with pytest.raises(ManifestError, match=message):
        sidecar(mesh(RATINGS_DR, vs))


@pytest.mark.parametrize(
    ("fault", "path"),
    [
        ({"abort": {"grpcStatus": "UNAVAILABLE"}}, "fault.abort.grpcStatus"),
        ({"abort": {"http2Error": "REFUSED_STREAM"}}, "fault.abort.http2Error"),
        ({"delay": {"exponentialDelay": "1s"}}, "fault.delay.exponentialDelay"),
        ({"delay": {"fixedDelay": "1s", "percent": 50}}, "fault.delay.percent"),
        ({"abort": {"httpStatus": 500, "percentage": {"value": 1, "scale": 2}}}, "fault.abort.percentage.scale"),
        ({"abort": {"httpStatus": 500}, "retry": True}, "fault.retry"),
    ],
)
def test_unimplemented_fault_fields_are_refused_by_path(fault: dict, path: str) -> None:
    vs = virtual_service("ratings", [{"route": [to("ratings", "v1")], "fault": fault}])
    with pytest.raises(UnsupportedResource) as refused:
        check_supported(vs)
    assert str(refused.value) == (
        f"VirtualService bookinfo/ratings: field spec.http[0].{path} is not implemented by the local mesh"
    )


# ---------------------------------------------------------------------------------------------
# Mutants


def test_known_mutants_are_described_on_one_line() -> None:
    assert set(KNOWN_MUTANTS) == {
        "swap-subsets", "ignore-weights", "ignore-header-match", "no-fault-injection", "no-timeouts",
    }
    assert all(text and "\n" not in text for text in KNOWN_MUTANTS.values())


def _weights(route: dict) -> list[tuple[str, int]]:
    return [(c["name"], c["weight"]) for c in route["route"]["weighted_clusters"]["clusters"]]


def test_ignore_weights_gives_every_destination_the_same_weight() -> None:
    def routes(mutants: frozenset[str]) -> list[dict]:
        vs = virtual_service("reviews", [
            {"match": [{"uri": {"prefix": "/a"}}], "route": [to("reviews", "v1", 80), to("reviews", "v2", 20)]},
            {"match": [{"uri": {"prefix": "/b"}}], "route": [to("reviews", "v1", 100), to("reviews", "v3", 0)]},
            {"route": [to("reviews", "v1")]},
        ])
        return outbound_routes(sidecar(mesh(ALL_V1_DR, vs, mutants=mutants)), REVIEWS_VHOST)

    v = {s: f"outbound|9080|{s}|{REVIEWS_HOST}" for s in ("v1", "v2", "v3")}
    plain, mutated = routes(frozenset()), routes(frozenset({"ignore-weights"}))
    assert [_weights(r) for r in plain[:2]] == [[(v["v1"], 80), (v["v2"], 20)], [(v["v1"], 100)]]
    assert [_weights(r) for r in mutated[:2]] == [[(v["v1"], 1), (v["v2"], 1)], [(v["v1"], 1), (v["v3"], 1)]]
    assert plain[2] == mutated[2]  # one destination: nothing to weigh


def test_ignore_weights_applies_to_http_routes() -> None:
    route = http_route("reviews", [{"backendRefs": [backend("reviews-v1", 80), backend("reviews-v2", 20),
                                                    backend("reviews-v3", 0)]}])
    [plain] = outbound_routes(gamma(route), REVIEWS_VHOST)
    [mutated] = outbound_routes(gamma(route, mutants=frozenset({"ignore-weights"})), REVIEWS_VHOST)
    assert _weights(plain) == [(version_cluster("v1"), 80), (version_cluster("v2"), 20)]
    assert _weights(mutated) == [(version_cluster(v), 1) for v in ("v1", "v2", "v3")]


def test_ignore_header_match_drops_header_conditions() -> None:
    vs = virtual_service("reviews", [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}},
                   {"uri": {"prefix": "/api"}, "headers": {"x-a": {"prefix": "p"}}}],
         "route": [to("reviews", "v2")]},
        {"route": [to("reviews", "v1")]},
    ])

    def matches(mutants: frozenset[str]) -> list[dict]:
        return [r["match"] for r in outbound_routes(sidecar(mesh(ALL_V1_DR, vs, mutants=mutants)), REVIEWS_VHOST)]

    assert matches(frozenset()) == [
        {"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]},
        {"prefix": "/api", "headers": [{"name": "x-a", "string_match": {"prefix": "p"}}]},
        {"prefix": "/"},
    ]
    # The jason-only match now matches every request: everything goes to v2.
    assert matches(frozenset({"ignore-header-match"})) == [{"prefix": "/"}, {"prefix": "/api"}, {"prefix": "/"}]


def test_ignore_header_match_applies_to_http_routes() -> None:
    route = http_route("reviews", [
        {"matches": [{"headers": [{"name": "end-user", "value": "jason"}]}], "backendRefs": [backend("reviews-v2")]},
        {"backendRefs": [backend("reviews-v1")]},
    ])
    plain = outbound_routes(gamma(route), REVIEWS_VHOST)
    mutated = outbound_routes(gamma(route, mutants=frozenset({"ignore-header-match"})), REVIEWS_VHOST)
    assert plain[0]["match"] == {"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]}
    assert mutated[0]["match"] == {"prefix": "/"}
    assert [r["route"]["cluster"] for r in mutated] == [version_cluster("v2"), version_cluster("v1")]


def test_no_fault_injection_leaves_routes_without_faults() -> None:
    docs = (RATINGS_DR, *load_reference("virtual-service-ratings-test-abort"))
    mutated = sidecar(mesh(*docs, mutants=frozenset({"no-fault-injection"})))
    assert fault_of(outbound_routes(sidecar(mesh(*docs)), RATINGS_VHOST)[0]) is not None
    assert [fault_of(r) for r in outbound_routes(mutated, RATINGS_VHOST)] == [None, None]
    # The filter stays in the chain: only the routes' configuration is missing.
    assert _http_filters(next(item for item in mutated.listeners if item["name"] == "outbound"))[0]["name"] == FAULT


def test_no_timeouts_leaves_routes_without_timeout() -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1")], "timeout": "2s"}])
    route = http_route("ratings", [{"backendRefs": [backend("ratings")], "timeouts": {"request": "3s"}}])
    plain = gamma(ALL_V1_DR, vs, route)
    mutated = gamma(ALL_V1_DR, vs, route, mutants=frozenset({"no-timeouts"}))
    assert outbound_routes(plain, REVIEWS_VHOST)[0]["route"]["timeout"] == "2s"
    assert outbound_routes(plain, RATINGS_VHOST)[0]["route"]["timeout"] == "3s"
    assert outbound_routes(mutated, REVIEWS_VHOST)[0]["route"]["timeout"] == "0s"
    assert outbound_routes(mutated, RATINGS_VHOST)[0]["route"]["timeout"] == "0s"


@pytest.mark.parametrize("mutant", sorted(KNOWN_MUTANTS))
def test_a_mutant_changes_nothing_where_its_feature_is_unused(mutant: str) -> None:
    # Single destinations, no headers, no faults, no timeouts, no subsets.
    vs = virtual_service("reviews", [{"match": [{"uri": {"prefix": "/a"}}], "route": [to("reviews")]}])
    route = http_route("ratings", [{"matches": [{"path": {"type": "Exact", "value": "/r"}}],
                                    "backendRefs": [backend("ratings")]}])
    for pod in (PRODUCTPAGE, INGRESS):
        plain = translate(pod, mesh(vs, route, gateway("gw", ["*"])), CONFIG_DIR)
        mutated = translate(pod, mesh(vs, route, gateway("gw", ["*"]), mutants=frozenset({mutant})), CONFIG_DIR)
        assert mutated == plain


# ---------------------------------------------------------------------------------------------
# Gateway API HTTPRoute for the mesh (GAMMA)


def load_gateway_api_sample(name: str, namespace: str = NS) -> list[dict]:
    return load_sample(f"bookinfo__gateway-api__{name}", namespace)


def test_bookinfo_route_reviews_50_v3_sample_splits_between_version_services() -> None:
    [route] = load_gateway_api_sample("route-reviews-50-v3")
    check_supported(route)
    config = gamma(route)
    assert outbound_routes(config, REVIEWS_VHOST) == [{
        "name": "bookinfo.reviews.0",  # Istio's name for an unnamed rule: <namespace>.<route>.<rule index>
        "match": {"prefix": "/"},
        "route": {
            "weighted_clusters": {"clusters": [
                {"name": "outbound|9080||reviews-v1.bookinfo.svc.cluster.local", "weight": 50},
                {"name": "outbound|9080||reviews-v3.bookinfo.svc.cluster.local", "weight": 50},
            ]},
            "timeout": "0s",
            "cluster_not_found_response_code": "INTERNAL_SERVER_ERROR",
            # An HTTPRoute without retry gets Istio's default policy (conversion.go, retry.go).
            "retry_policy": ISTIO_DEFAULT_RETRY,
        },
    }]
    names = {c["name"] for c in config.clusters}
    assert {version_cluster("v1"), version_cluster("v3")} <= names
    # Only the parent's default route is replaced.
    assert outbound_routes(config, "reviews-v1.bookinfo.svc.cluster.local:9080")[0]["route"]["cluster"] == (
        version_cluster("v1")
    )


def test_single_backend_is_a_plain_cluster_and_weight_0_gets_nothing() -> None:
    def action(refs: list[dict]) -> dict:
        [route] = outbound_routes(gamma(http_route("reviews", [{"backendRefs": refs}])), REVIEWS_VHOST)
        return {k: v for k, v in route.items() if k in ("route", "direct_response")}

    assert action([backend("reviews-v1")])["route"]["cluster"] == version_cluster("v1")
    assert action([backend("reviews-v1", 1), backend("reviews-v2", 0)])["route"]["cluster"] == version_cluster("v1")
    assert _weights(action([backend("reviews-v1", 2), backend("reviews-v2", 0), backend("reviews-v3")])) == [
        (version_cluster("v1"), 2), (version_cluster("v3"), 1),  # weight defaults to 1
    ]
    # No backend with weight > 0, or none at all: 500, as the Gateway API requires.
    assert action([backend("reviews-v1", 0)]) == {"direct_response": {"status": 500}}
    assert action([]) == {"direct_response": {"status": 500}}


def test_http_route_matches_and_gateway_api_precedence() -> None:
    route = http_route("reviews", [
        {"name": "catch-all", "backendRefs": [backend("reviews-v1")]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/reviews/"}}], "backendRefs": [backend("reviews-v2")]},
        {"matches": [{"path": {"type": "RegularExpression", "value": "/r[0-9]+"}},
                     {"path": {"type": "Exact", "value": "/reviews/0"}}],
         "backendRefs": [backend("reviews-v3")]},
        {"matches": [{"headers": [{"name": "end-user", "value": "jason"},
                                  {"type": "RegularExpression", "name": "x-v", "value": "v[23]"}]}],
         "backendRefs": [backend("reviews-v2")]},
        {"matches": [{"path": {"value": "/"}, "headers": [{"type": "Exact", "name": "end-user", "value": "kim"}]}],
         "backendRefs": [backend("reviews-v3")]},
    ])
    routes = outbound_routes(gamma(route), REVIEWS_VHOST)
    assert [(r["name"], r["match"], r["route"]["cluster"]) for r in routes] == [
        # Exact first, then the longest prefix, then the most headers; regexes last (as Istio).
        ("bookinfo.reviews.2", {"path": "/reviews/0"}, version_cluster("v3")),
        ("bookinfo.reviews.1", {"path_separated_prefix": "/reviews"}, version_cluster("v2")),
        ("bookinfo.reviews.3", {"prefix": "/", "headers": [
            {"name": "end-user", "string_match": {"exact": "jason"}},
            {"name": "x-v", "string_match": {"safe_regex": {"regex": "v[23]"}}},
        ]}, version_cluster("v2")),
        ("bookinfo.reviews.4", {"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "kim"}}]},
         version_cluster("v3")),
        ("catch-all", {"prefix": "/"}, version_cluster("v1")),
        ("bookinfo.reviews.2", {"safe_regex": {"regex": "/r[0-9]+"}}, version_cluster("v3")),
    ]


def test_routes_attached_to_one_service_are_merged_in_creation_order() -> None:
    first = http_route("a", [{"matches": [{"path": {"value": "/x"}}], "backendRefs": [backend("reviews-v1")]}],
                       parent="reviews")
    second = http_route("b", [{"matches": [{"path": {"value": "/x"}}], "backendRefs": [backend("reviews-v2")]},
                              {"matches": [{"path": {"value": "/longer"}}], "backendRefs": [backend("reviews-v3")]}],
                        parent="reviews")
    routes = outbound_routes(gamma(first, second), REVIEWS_VHOST)
    assert [(r["name"], r["route"]["cluster"]) for r in routes] == [
        ("bookinfo.b.1", version_cluster("v3")), ("bookinfo.a.0", version_cluster("v1")),
        ("bookinfo.b.0", version_cluster("v2")),
    ]


def test_request_timeout() -> None:
    route = http_route("reviews", [
        {"matches": [{"path": {"value": "/slow"}}], "backendRefs": [backend("reviews-v1")],
         "timeouts": {"request": "1m500ms"}},
        {"backendRefs": [backend("reviews-v1")], "timeouts": {"request": "0s"}},  # 0s: no timeout
    ])
    assert [r["route"]["timeout"] for r in outbound_routes(gamma(route), REVIEWS_VHOST)] == [
        "60.500000000s", "0s",
    ]


def test_parent_port_limits_the_route_to_that_service_port() -> None:
    multi = make_service("multi", NS, ServicePort("http", 9080, 9080), ServicePort("http-admin", 9090, 9090))
    services = (*WITH_VERSIONS, multi)

    def clusters(port: int | None) -> dict[int, str]:
        route = http_route("multi", [{"backendRefs": [backend("reviews-v1")]}], port=port)
        config = gamma(route, services=services)
        return {p: outbound_routes(config, f"multi.bookinfo.svc.cluster.local:{p}")[0]["route"]["cluster"]
                for p in (9080, 9090)}

    assert clusters(9090) == {9080: "outbound|9080||multi.bookinfo.svc.cluster.local", 9090: version_cluster("v1")}
    assert clusters(None) == {9080: version_cluster("v1"), 9090: version_cluster("v1")}


def test_consumer_route_applies_to_its_own_namespace_only_and_wins_there() -> None:
    producer = http_route("reviews", [{"backendRefs": [backend("reviews-v1")]}])
    # In namespace tools, naming the bookinfo Service; its backends resolve in tools.
    consumer = http_route("reviews", [{"backendRefs": [backend("reviews-v2")]}], namespace="tools",
                          parent_namespace=NS)

    def target(pod: Pod, *docs: dict) -> str:
        return outbound_routes(gamma(*docs, pod=pod), REVIEWS_VHOST)[0]["route"]["cluster"]

    assert target(PRODUCTPAGE, consumer) == f"outbound|9080||{REVIEWS_HOST}"  # default route
    assert target(CURL, consumer) == "outbound|9080||reviews-v2.tools.svc.cluster.local"
    assert target(PRODUCTPAGE, producer, consumer) == version_cluster("v1")
    assert target(CURL, producer, consumer) == "outbound|9080||reviews-v2.tools.svc.cluster.local"
    assert target(CURL, producer) == version_cluster("v1")


def test_route_for_an_unknown_service_attaches_nowhere() -> None:
    plain = gamma()
    assert gamma(http_route("nosuch", [{"backendRefs": [backend("reviews-v1")]}])) == plain
    # Short names in parentRefs resolve in the route's namespace: tools/reviews does not exist.
    assert gamma(http_route("reviews", [{"backendRefs": [backend("reviews-v1")]}], namespace="tools")) == plain


def test_virtual_service_wins_over_http_route_for_one_service() -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews", "v3")]}])
    route = http_route("reviews", [{"backendRefs": [backend("reviews-v1")]}])
    for docs in ((vs, route), (route, vs)):
        assert outbound_routes(gamma(ALL_V1_DR, *docs), REVIEWS_VHOST)[0]["route"]["cluster"] == (
            f"outbound|9080|v3|{REVIEWS_HOST}"
        )


def test_http_routes_with_service_parents_do_not_apply_to_gateways() -> None:
    route = http_route("reviews", [{"backendRefs": [backend("reviews-v1")]}])
    vs = virtual_service("front", [{"route": [to("reviews")]}], hosts=["*"], gateways=["istio-system/gw"])
    with_route = translate(INGRESS, mesh(gateway("gw", ["*"]), vs, route, services=WITH_VERSIONS), CONFIG_DIR)
    without = translate(INGRESS, mesh(gateway("gw", ["*"]), vs, services=WITH_VERSIONS), CONFIG_DIR)
    assert with_route == without


def test_hostnames_are_accepted_and_ignored_for_service_parents() -> None:
    route = http_route("reviews", [{"backendRefs": [backend("reviews-v1")]}])
    named = copy.deepcopy(route)
    named["spec"]["hostnames"] = ["reviews.example.com"]
    assert gamma(named) == gamma(route)


def test_backend_without_port_is_a_manifest_error() -> None:
    route = http_route("reviews", [{"backendRefs": [{"name": "reviews-v1"}]}])
    with pytest.raises(ManifestError, match=r"HTTPRoute bookinfo/reviews: spec\.rules\[0\]\.backendRefs\[0\]: "
                                            "a Service backend needs port"):
        gamma(route)


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        ({"filters": [{"type": "RequestHeaderModifier"}]}, "spec.rules[0].filters"),
        ({"sessionPersistence": {"sessionName": "s"}}, "spec.rules[0].sessionPersistence"),
        ({"retry": {"attempts": 2}}, "spec.rules[0].retry"),
        ({"timeouts": {"backendRequest": "1s"}}, "spec.rules[0].timeouts.backendRequest"),
        ({"matches": [{"method": "GET"}]}, "spec.rules[0].matches[0].method"),
        ({"matches": [{"queryParams": [{"name": "q", "value": "1"}]}]}, "spec.rules[0].matches[0].queryParams"),
        ({"backendRefs": [{"name": "reviews-v1", "port": 9080, "filters": []}]},
         "spec.rules[0].backendRefs[0].filters"),
    ],
)
def test_unimplemented_http_route_fields_are_refused_by_path(rule: dict, path: str) -> None:
    route = http_route("reviews", [rule])
    with pytest.raises(UnsupportedResource) as refused:
        check_supported(route)
    assert str(refused.value) == f"HTTPRoute bookinfo/reviews: field {path} is not implemented by the local mesh"
    with pytest.raises(UnsupportedResource):  # the translator checks again
        gamma(route)


def test_parent_section_name_is_refused() -> None:
    route = http_route("reviews", [])
    route["spec"]["parentRefs"][0]["sectionName"] = "http"
    with pytest.raises(UnsupportedResource, match=r"field spec\.parentRefs\[0\]\.sectionName is not implemented"):
        check_supported(route)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"name": "bookinfo-gateway"},  # group and kind default to a Gateway API Gateway
         r"field spec\.parentRefs\[1\] names Gateway 'bookinfo-gateway': Gateway API Gateways are not "
         r"implemented by the local mesh yet"),
        ({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
         r"field spec\.parentRefs\[1\] names Gateway 'gw': Gateway API Gateways are not implemented"),
        ({"kind": "Service", "name": "reviews"},  # the group defaults to the Gateway API's
         r"field spec\.parentRefs\[1\] of group 'gateway\.networking\.k8s\.io' kind 'Service' is not implemented"),
        ({"group": "networking.istio.io", "kind": "ServiceEntry", "name": "x"},
         r"field spec\.parentRefs\[1\] of group 'networking\.istio\.io' kind 'ServiceEntry'"),
    ],
)
def test_parents_other_than_services_are_refused(ref: dict, message: str) -> None:
    route = http_route("reviews", [{"backendRefs": [backend("reviews-v1")]}])
    route["spec"]["parentRefs"].append(ref)
    with pytest.raises(UnsupportedResource, match=f"^HTTPRoute bookinfo/reviews: {message}"):
        check_supported(route)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"group": "", "kind": "ServiceImport", "name": "x", "port": 1},
         r"field spec\.rules\[0\]\.backendRefs\[0\] of group '' kind 'ServiceImport' is not implemented"),
        ({"group": "multicluster.x-k8s.io", "name": "x", "port": 1},
         r"field spec\.rules\[0\]\.backendRefs\[0\] of group 'multicluster\.x-k8s\.io' kind 'Service'"),
        ({"name": "reviews-v1", "namespace": "tools", "port": 9080},
         r"field spec\.rules\[0\]\.backendRefs\[0\]\.namespace 'tools' is not implemented"),
    ],
)
def test_backends_other_than_services_of_the_namespace_are_refused(ref: dict, message: str) -> None:
    with pytest.raises(UnsupportedResource, match=message):
        check_supported(http_route("reviews", [{"backendRefs": [ref]}]))


def test_backend_namespace_of_the_route_itself_is_accepted() -> None:
    route = http_route("reviews", [{"backendRefs": [{"name": "reviews-v1", "namespace": NS, "port": 9080}]}])
    check_supported(route)
    assert outbound_routes(gamma(route), REVIEWS_VHOST)[0]["route"]["cluster"] == version_cluster("v1")


def test_bookinfo_gateway_api_gateway_sample_is_refused() -> None:
    gateway_doc, route = load_gateway_api_sample("bookinfo-gateway")
    with pytest.raises(UnsupportedResource, match="Gateway API Gateways are not implemented by the local mesh yet"):
        check_supported(gateway_doc)
    with pytest.raises(UnsupportedResource, match=r"spec\.parentRefs\[0\] names Gateway 'bookinfo-gateway'"):
        check_supported(route)


def test_v1beta1_http_route_is_accepted() -> None:
    route = http_route("reviews", [{"backendRefs": [backend("reviews-v1")]}])
    check_supported({**route, "apiVersion": "gateway.networking.k8s.io/v1beta1"})


def test_validate_dispatches_gateway_api_kinds() -> None:
    [route] = load_gateway_api_sample("route-reviews-50-v3")
    check_document(route, NS)
    gateway_doc, _ = load_gateway_api_sample("bookinfo-gateway")
    with pytest.raises(UnsupportedResource, match="Gateway API Gateways are not implemented by the local mesh yet"):
        check_document(gateway_doc, NS)
    with pytest.raises(UnsupportedResource, match="kind 'ReferenceGrant'.*implements HTTPRoute"):
        check_document({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                        "metadata": metadata("x", NS)}, NS)
    with pytest.raises(UnsupportedResource, match=r"field spec\.rules\[0\]\.filters"):
        check_document(http_route("reviews", [{"filters": []}]), NS)


def test_mesh_state_carries_applied_http_routes(tmp_path: Path) -> None:
    mesh_ = LocalMesh(tmp_path / "run")
    try:
        mesh_.apply([namespace_doc(NS, {})], NS)
        [route] = load_gateway_api_sample("route-reviews-50-v3")
        del route["metadata"]["namespace"]  # placed by apply, as `kubectl apply -n`
        mesh_.apply([route], NS)
        state = mesh_.state()
        assert [(r["metadata"]["namespace"], r["metadata"]["name"]) for r in state.http_routes] == [(NS, "reviews")]
        assert state.virtual_services == () and state.gateways == ()
        mesh_.delete([route], NS)
        assert mesh_.state().http_routes == ()
    finally:
        mesh_.stop()


# ---------------------------------------------------------------------------------------------
# Real Envoy accepts configs with faults and HTTPRoutes


def test_envoy_accepts_fault_samples_and_http_routes(tmp_path: Path) -> None:
    docs = [*load_reference("destination-rule-all"), RATINGS_DR,
            *load_reference("virtual-service-ratings-test-abort"),
            *load_gateway_api_sample("route-reviews-50-v3"), *load_reference("bookinfo-gateway")]
    delay = load_reference("virtual-service-ratings-test-delay")[0]
    delay["metadata"]["name"] = "ratings-delay"
    delay["spec"]["hosts"] = ["details"]
    delay["spec"]["http"][0]["route"] = delay["spec"]["http"][1]["route"] = [to("details")]
    for pod in (PRODUCTPAGE, INGRESS):
        for mutants in (frozenset(), frozenset(KNOWN_MUTANTS)):
            state = mesh(*docs, delay, services=WITH_VERSIONS, mutants=mutants)
            envoy_validate(static_bootstrap(pod, translate(pod, state, str(tmp_path))), tmp_path)


# ---------------------------------------------------------------------------------------------
# Live: a real Envoy injects the faults and routes by HTTPRoute


def test_live_faults_and_http_route(
    tmp_path: Path, loopback_ips: list[str], running_envoy: Callable[[Path, Path], Any]
) -> None:
    client_ip, v1_ip, v2_ip = loopback_ips
    v1 = start_upstream(v1_ip, 0, "reviews-v1")
    port = v1.server_address[1]
    v2 = start_upstream(v2_ip, port, "reviews-v2")
    delay_s = 0.4
    try:
        client = make_pod("client", client_ip, {"app": "client"}, ports=())
        pods = (client, make_pod("reviews-v1", v1_ip, {"app": "reviews", "version": "v1"}, proxy="none", ports=(port,)),
                make_pod("reviews-v2", v2_ip, {"app": "reviews", "version": "v2"}, proxy="none", ports=(port,)))

        def svc(name: str, selector: dict[str, str]) -> Service:
            return Service(name, NS, (ServicePort("http", 9080, port),), selector)

        services = (svc("faulty", {"app": "reviews", "version": "v1"}), svc("reviews", {"app": "reviews"}),
                    svc("reviews-v1", {"app": "reviews", "version": "v1"}),
                    svc("reviews-v2", {"app": "reviews", "version": "v2"}))
        faults = virtual_service("faulty", [
            {"match": [{"headers": {"x-fault": {"exact": "abort"}}}], "route": [to("faulty")],
             "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}}},
            {"match": [{"headers": {"x-fault": {"exact": "delay"}}}], "route": [to("faulty")],
             "fault": {"delay": {"fixedDelay": f"{int(delay_s * 1000)}ms", "percentage": {"value": 100}}}},
            {"route": [to("faulty")]},
        ])
        route = http_route("reviews", [
            {"matches": [{"headers": [{"name": "end-user", "value": "jason"}]}], "backendRefs": [backend("reviews-v2")]},
            {"backendRefs": [backend("reviews-v1", 1), backend("reviews-v2", 0)]},
        ])
        state = mesh(faults, route, services=services, pods=pods)

        config_dir = tmp_path / "xds"
        config_dir.mkdir()
        write_proxy_files(config_dir, translate(client, state, str(config_dir)), "1")
        bootstrap = tmp_path / "bootstrap.json"
        bootstrap.write_text(json.dumps(dynamic_bootstrap(client, config_dir)))
        log = tmp_path / "envoy.log"
        process = running_envoy(bootstrap, log)

        def request(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, str, float]:
            assert process.poll() is None, f"Envoy exited:\n{log.read_text()}"
            conn = http.client.HTTPConnection(client_ip, OUTBOUND_PORT, timeout=10)
            try:
                started = time.monotonic()
                conn.request("GET", url, headers=dict(headers or {}))
                response = conn.getresponse()
                body = response.read().decode()
                return response.status, body, time.monotonic() - started
            finally:
                conn.close()

        faulty = "http://faulty:9080/reviews/0"
        eventually(lambda: request(faulty)[:2] == (200, "reviews-v1"), "Envoy to route faulty")

        for _ in range(5):  # 100%: every request
            status, body, _ = request(faulty, {"x-fault": "abort"})
            assert (status, body) == (418, "fault filter abort")
            status, body, elapsed = request(faulty, {"x-fault": "delay"})
            # Envoy's delay timer fires up to a few ms early (seen: 398.3 ms for 400 ms, client
            # side), so "at least the delay" holds only within that granularity.
            assert (status, body) == (200, "reviews-v1") and elapsed >= delay_s - TIMER_SLACK, elapsed
        assert min(request(faulty)[2] for _ in range(5)) < delay_s / 2  # the delay is the fault's

        reviews = "http://reviews:9080/reviews/0"
        assert {request(reviews, {"end-user": "jason"})[1] for _ in range(10)} == {"reviews-v2"}
        assert {request(reviews)[1] for _ in range(20)} == {"reviews-v1"}  # weight 0: reviews-v2 gets none
    finally:
        for server in (v1, v2):
            server.shutdown()
            server.server_close()


def test_reference_fault_samples_are_accepted() -> None:
    for name in ("virtual-service-ratings-test-abort", "virtual-service-ratings-test-delay"):
        for doc in load_reference(name):
            check_supported(doc)
            check_document(doc, NS)
