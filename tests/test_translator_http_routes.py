"""The translator's Gateway API HTTPRoutes for the mesh (GAMMA), by value."""

import copy
from pathlib import Path

import pytest

from conformance.errors import ManifestError, UnsupportedResource
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.model import MeshState, Pod, ServicePort
from conformance.targets.local.objects import namespace_doc
from conformance.targets.local.translator import translate
from conformance.targets.local.translator.gateway_api_routes import mesh_http_routes
from conformance.targets.local.translator.index import MeshIndex
from conformance.targets.local.validate import check_document
from tests.builders import (
    ALL_V1_DR,
    CURL,
    INGRESS,
    ISTIO_DEFAULT_RETRY,
    NS,
    PRODUCTPAGE,
    REVIEWS_HOST,
    REVIEWS_VHOST,
    WITH_VERSIONS,
    backend,
    gamma,
    gateway,
    http_route,
    load_gateway_api_sample,
    make_service,
    mesh,
    metadata,
    outbound_routes,
    to,
    version_cluster,
    virtual_service,
    weights,
)

# ---------------------------------------------------------------------------------------------
# Gateway API HTTPRoute for the mesh (GAMMA)


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
    assert weights(action([backend("reviews-v1", 2), backend("reviews-v2", 0), backend("reviews-v3")])) == [
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
    with_route = translate(INGRESS, mesh(gateway("gw", ["*"]), vs, route, services=WITH_VERSIONS))
    without = translate(INGRESS, mesh(gateway("gw", ["*"]), vs, services=WITH_VERSIONS))
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
        ({"kind": "Service", "name": "reviews"},  # the group defaults to the Gateway API's
         r"field spec\.parentRefs\[1\] of group 'gateway\.networking\.k8s\.io' kind 'Service' is not implemented"),
        ({"group": "networking.istio.io", "kind": "ServiceEntry", "name": "x"},
         r"field spec\.parentRefs\[1\] of group 'networking\.istio\.io' kind 'ServiceEntry'"),
    ],
)
def test_parents_other_than_services_and_gateways_are_refused(ref: dict, message: str) -> None:
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


def test_bookinfo_gateway_api_gateway_sample_is_accepted() -> None:
    gateway_doc, route = load_gateway_api_sample("bookinfo-gateway")
    check_supported(gateway_doc)
    check_supported(route)


def test_gateway_parent_routes_are_not_mesh_routes() -> None:
    """An HTTPRoute whose parent is a Gateway routes at that gateway, never in the sidecars."""
    _, route = load_gateway_api_sample("bookinfo-gateway")
    assert mesh_http_routes(NS, MeshIndex.build(MeshState(http_routes=(route,)), NS)) == {}


def test_v1beta1_http_route_is_accepted() -> None:
    route = http_route("reviews", [{"backendRefs": [backend("reviews-v1")]}])
    check_supported({**route, "apiVersion": "gateway.networking.k8s.io/v1beta1"})


def test_validate_dispatches_gateway_api_kinds() -> None:
    [route] = load_gateway_api_sample("route-reviews-50-v3")
    check_document(route, NS)
    gateway_doc, _ = load_gateway_api_sample("bookinfo-gateway")
    check_document(gateway_doc, NS)
    with pytest.raises(UnsupportedResource, match="field spec.listeners.0..protocol 'HTTPS'"):
        listener = {**gateway_doc["spec"]["listeners"][0], "protocol": "HTTPS"}
        check_document({**gateway_doc, "spec": {**gateway_doc["spec"], "listeners": [listener]}}, NS)
    with pytest.raises(UnsupportedResource, match="kind 'ReferenceGrant'.*implements Gateway, HTTPRoute"):
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
