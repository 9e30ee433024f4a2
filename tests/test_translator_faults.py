"""The translator's fault injection and mutants, by value."""

from collections.abc import Mapping
from typing import Any

import pytest

from conformance.errors import ConformanceError, ManifestError, UnsupportedResource
from conformance.settings import RunSettings
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.target import LocalTarget
from conformance.targets.local.translator import KNOWN_MUTANTS, translate
from conformance.targets.local.validate import check_document
from tests.builders import (
    ALL_V1_DR,
    INGRESS,
    NS,
    PRODUCTPAGE,
    RATINGS_DR,
    RATINGS_VHOST,
    REVIEWS_HOST,
    REVIEWS_VHOST,
    backend,
    gamma,
    gateway,
    hcm_of,
    http_route,
    load_reference,
    mesh,
    outbound_routes,
    sidecar,
    to,
    version_cluster,
    virtual_service,
    weights,
)

FAULT = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
RATINGS_V1 = "outbound|9080|v1|ratings.bookinfo.svc.cluster.local"


def fault_of(route: Mapping[str, Any]) -> dict | None:
    return route.get("typed_per_filter_config", {}).get(FAULT)


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
    configs = [sidecar(mesh()), translate(INGRESS, mesh(gateway("gw", ["*"])))]
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
    config = translate(INGRESS, mesh(gateway("gw", ["*"]), vs))
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


def test_reference_fault_samples_are_accepted() -> None:
    for name in ("virtual-service-ratings-test-abort", "virtual-service-ratings-test-delay"):
        for doc in load_reference(name):
            check_supported(doc)
            check_document(doc, NS)


# ---------------------------------------------------------------------------------------------
# Mutants


def test_known_mutants_are_described_on_one_line() -> None:
    assert set(KNOWN_MUTANTS) == {
        "swap-subsets", "ignore-weights", "ignore-header-match", "no-fault-injection", "no-timeouts",
        "no-injection", "inject-opted-out", "validation-off", "webhook-fail-open", "revision-ignored",
        "authz-ignored", "strict-as-permissive", "no-peer-verification", "shared-identity",
        "no-circuit-breaker", "no-outlier-detection", "no-retries", "metrics-swapped-labels", "metrics-undercount",
        "gateway-ignores-sni", "gateway-api-ignored", "switch-drops-requests",
    }
    assert all(text and "\n" not in text for text in KNOWN_MUTANTS.values())


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
    assert [weights(r) for r in plain[:2]] == [[(v["v1"], 80), (v["v2"], 20)], [(v["v1"], 100)]]
    assert [weights(r) for r in mutated[:2]] == [[(v["v1"], 1), (v["v2"], 1)], [(v["v1"], 1), (v["v3"], 1)]]
    assert plain[2] == mutated[2]  # one destination: nothing to weigh


def test_ignore_weights_applies_to_http_routes() -> None:
    route = http_route("reviews", [{"backendRefs": [backend("reviews-v1", 80), backend("reviews-v2", 20),
                                                    backend("reviews-v3", 0)]}])
    [plain] = outbound_routes(gamma(route), REVIEWS_VHOST)
    [mutated] = outbound_routes(gamma(route, mutants=frozenset({"ignore-weights"})), REVIEWS_VHOST)
    assert weights(plain) == [(version_cluster("v1"), 80), (version_cluster("v2"), 20)]
    assert weights(mutated) == [(version_cluster(v), 1) for v in ("v1", "v2", "v3")]


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


# Mutants of what every Istio mesh uses without configuration: mutual TLS between sidecars (auto
# mTLS toward PERMISSIVE servers, Istio's defaults) and the certificates behind it.
ALWAYS_IN_USE = {"no-peer-verification", "shared-identity"}


@pytest.mark.parametrize("mutant", sorted(set(KNOWN_MUTANTS) - ALWAYS_IN_USE))
def test_a_mutant_changes_nothing_where_its_feature_is_unused(mutant: str) -> None:
    # Single destinations, no headers, no faults, no timeouts, no subsets.
    vs = virtual_service("reviews", [{"match": [{"uri": {"prefix": "/a"}}], "route": [to("reviews")]}])
    route = http_route("ratings", [{"matches": [{"path": {"type": "Exact", "value": "/r"}}],
                                    "backendRefs": [backend("ratings")]}])
    for pod in (PRODUCTPAGE, INGRESS):
        plain = translate(pod, mesh(vs, route, gateway("gw", ["*"])))
        mutated = translate(pod, mesh(vs, route, gateway("gw", ["*"]), mutants=frozenset({mutant})))
        assert mutated == plain


def test_swap_subsets_mutant_routes_to_the_next_subset() -> None:
    def target(subset: str, mutants: frozenset[str]) -> str:
        vs = virtual_service("reviews", [{"route": [to("reviews", subset)]}])
        return outbound_routes(sidecar(mesh(ALL_V1_DR, vs, mutants=mutants)), REVIEWS_VHOST)[0]["route"]["cluster"]

    swapped = frozenset({"swap-subsets"})
    assert [target(s, frozenset()) for s in ("v1", "v2", "v3")] == [
        f"outbound|9080|{s}|{REVIEWS_HOST}" for s in ("v1", "v2", "v3")
    ]
    assert [target(s, swapped) for s in ("v1", "v2", "v3")] == [
        f"outbound|9080|{s}|{REVIEWS_HOST}" for s in ("v2", "v3", "v1")
    ]
    assert "swap-subsets" in KNOWN_MUTANTS


def test_unknown_mutant_is_refused_with_one_message_by_the_target_and_the_translator() -> None:
    """One check (mutants.check_mutants) for the local target and the translator."""
    message = f"unknown local mutant(s) ignore-everything; known: {', '.join(sorted(KNOWN_MUTANTS))}"
    with pytest.raises(ConformanceError) as refused:
        sidecar(mesh(mutants=frozenset({"ignore-everything"})))
    assert str(refused.value) == message
    with pytest.raises(ConformanceError) as refused:
        LocalTarget(RunSettings(target="local", mutants=("ignore-everything",)))
    assert str(refused.value) == message
