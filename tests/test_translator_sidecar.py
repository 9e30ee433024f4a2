"""The translator's sidecar resources (clusters, listeners, VirtualService routes), by value."""

import json

from conformance.targets.local.model import OUTBOUND_PORT, ServicePort, app_port
from conformance.targets.local.translator import ProxyConfig, translate
from conformance.targets.local.translator.durations import envoy_duration
from tests.builders import (
    ALL_V1_DR,
    BOOKINFO_PODS,
    BOOKINFO_SERVICES,
    CURL,
    INGRESS,
    ISTIO_DEFAULT_RETRY,
    ISTIO_INBOUND_RETRY,
    NS,
    PRODUCTPAGE,
    REVIEWS_HOST,
    REVIEWS_VHOST,
    destination_rule,
    gateway,
    hcm_of,
    make_pod,
    make_service,
    mesh,
    outbound_routes,
    sidecar,
    to,
    virtual_hosts,
    virtual_service,
)

# ---------------------------------------------------------------------------------------------
# Reading outputs


def cluster(config: ProxyConfig, name: str) -> dict:
    matching = [c for c in config.clusters if c["name"] == name]
    assert len(matching) == 1, f"{name} in {[c['name'] for c in config.clusters]}"
    return matching[0]


def endpoints(config: ProxyConfig, name: str) -> list[str]:
    found = cluster(config, name)
    assignment = config.endpoints[name] if found["type"] == "EDS" else found["load_assignment"]
    groups = assignment["endpoints"]
    return sorted(
        f"{e['endpoint']['address']['socket_address']['address']}:"
        f"{e['endpoint']['address']['socket_address']['port_value']}"
        for group in groups for e in group["lb_endpoints"]
    )


# ---------------------------------------------------------------------------------------------
# Sidecar: clusters


def test_outbound_clusters_have_istio_names() -> None:
    config = sidecar(mesh(ALL_V1_DR))
    names = {c["name"] for c in config.clusters}
    assert {
        "outbound|9080||reviews.bookinfo.svc.cluster.local",
        "outbound|9080|v1|reviews.bookinfo.svc.cluster.local",
        "outbound|9080|v2|reviews.bookinfo.svc.cluster.local",
        "outbound|9080|v3|reviews.bookinfo.svc.cluster.local",
        "outbound|9080||ratings.bookinfo.svc.cluster.local",
        "inbound|9080||",
    } <= names
    assert len(names) == len(config.clusters), "cluster names must be unique"
    assert all(c["@type"].endswith("envoy.config.cluster.v3.Cluster") for c in config.clusters)


def test_subset_clusters_hold_only_matching_endpoints() -> None:
    config = sidecar(mesh(ALL_V1_DR))
    assert endpoints(config, f"outbound|9080||{REVIEWS_HOST}") == ["127.0.1.2:9080", "127.0.1.3:9080", "127.0.1.4:9080"]
    assert endpoints(config, f"outbound|9080|v2|{REVIEWS_HOST}") == ["127.0.1.3:9080"]
    assert cluster(config, f"outbound|9080|v1|{REVIEWS_HOST}")["lb_policy"] == "LEAST_REQUEST"


def test_subset_without_pods_is_an_empty_cluster() -> None:
    config = sidecar(mesh(destination_rule("reviews", ["v1", "v9"])))
    assert endpoints(config, f"outbound|9080|v9|{REVIEWS_HOST}") == []


def test_service_selects_pods_of_its_own_namespace_only() -> None:
    stray = make_pod("reviews-elsewhere", "127.0.1.9", {"app": "reviews", "version": "v1"}, namespace="tools")
    config = sidecar(mesh(pods=(*BOOKINFO_PODS, stray)))
    assert "127.0.1.9:9080" not in endpoints(config, f"outbound|9080||{REVIEWS_HOST}")


def test_target_port_is_the_endpoint_port() -> None:
    httpbin = make_service("httpbin", NS, ServicePort("http", 8000, 8080))
    pod = make_pod("httpbin", "127.0.1.20", {"app": "httpbin"}, ports=(8080,))
    config = sidecar(mesh(services=(httpbin,), pods=(PRODUCTPAGE, pod)))
    assert endpoints(config, "outbound|8000||httpbin.bookinfo.svc.cluster.local") == ["127.0.1.20:8080"]


# ---------------------------------------------------------------------------------------------
# Sidecar: listeners


def test_inbound_listener_owns_the_container_port_and_forwards_to_the_app() -> None:
    config = sidecar(mesh())
    listener = next(item for item in config.listeners if item["name"] == "inbound_127.0.1.1_9080")
    assert listener["address"]["socket_address"] == {"address": "127.0.1.1", "port_value": 9080}
    hcm = hcm_of(listener)
    assert hcm["stat_prefix"] == "inbound_0.0.0.0_9080;"
    assert hcm["server_name"] == "istio-envoy"
    assert hcm["rds"]["route_config_name"] == "inbound|9080||"
    assert endpoints(config, "inbound|9080||") == [f"127.0.1.1:{app_port(9080)}"]
    routes = config.routes["inbound|9080||"]["virtual_hosts"][0]["routes"]
    assert routes == [{"match": {"prefix": "/"}, "route": {
        "cluster": "inbound|9080||", "timeout": "0s", "retry_policy": ISTIO_INBOUND_RETRY,
    }}]


def test_outbound_listener_is_an_http_proxy_using_rds() -> None:
    config = sidecar(mesh())
    listener = next(item for item in config.listeners if item["name"] == "outbound")
    assert listener["address"]["socket_address"] == {"address": "127.0.1.1", "port_value": OUTBOUND_PORT}
    hcm = hcm_of(listener)
    assert "route_config" not in hcm
    assert hcm["rds"] == {"route_config_name": "outbound",
                          "config_source": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}}
    assert hcm["http_protocol_options"] == {"allow_absolute_url": True}
    assert hcm["normalize_path"] is True and hcm["generate_request_id"] is True


def test_routes_and_endpoints_come_over_ads() -> None:
    """As istiod: every listener's routes by RDS and every outbound cluster's endpoints by EDS,
    on the proxy's one ADS stream."""
    config = sidecar(mesh())
    assert {json.dumps(hcm_of(item)["rds"]["config_source"]) for item in config.listeners} == {
        json.dumps({"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"})}
    eds = [c for c in config.clusters if c["type"] == "EDS"]
    assert {c["eds_cluster_config"]["service_name"] for c in eds} == {c["name"] for c in eds} == set(config.endpoints)


def test_every_referenced_route_config_is_provided() -> None:
    for config in (sidecar(mesh()), translate(INGRESS, mesh(gateway("gw", ["*"])))):
        referenced = {hcm_of(item)["rds"]["route_config_name"] for item in config.listeners}
        assert referenced == set(config.routes)
        assert all(route["name"] == name for name, route in config.routes.items())


def test_virtual_host_domains_follow_kubernetes_dns() -> None:
    web = make_service("web", "tools", ServicePort("http", 80, 8080))
    config = sidecar(mesh(services=(*BOOKINFO_SERVICES, web)))
    domains = virtual_hosts(config, "outbound")
    assert domains[REVIEWS_VHOST]["domains"] == [
        "reviews.bookinfo.svc.cluster.local:9080", "reviews.bookinfo.svc:9080", "reviews.bookinfo:9080", "reviews:9080",
    ]
    # Another namespace: no bare short name; port 80 also without the port.
    assert domains["web.tools.svc.cluster.local:80"]["domains"] == [
        "web.tools.svc.cluster.local:80", "web.tools.svc:80", "web.tools:80",
        "web.tools.svc.cluster.local", "web.tools.svc", "web.tools",
    ]
    from_tools = sidecar(mesh(services=(*BOOKINFO_SERVICES, web)), pod=CURL)
    assert "web" in virtual_hosts(from_tools, "outbound")["web.tools.svc.cluster.local:80"]["domains"]
    assert "reviews:9080" not in virtual_hosts(from_tools, "outbound")[REVIEWS_VHOST]["domains"]


def test_default_route_goes_to_the_service_cluster_without_timeout() -> None:
    assert outbound_routes(sidecar(mesh()), REVIEWS_VHOST) == [
        {"match": {"prefix": "/"}, "route": {
            "cluster": f"outbound|9080||{REVIEWS_HOST}", "timeout": "0s", "retry_policy": ISTIO_DEFAULT_RETRY,
        }}
    ]


# ---------------------------------------------------------------------------------------------
# Sidecar: VirtualServices


def test_virtual_service_replaces_the_default_route() -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1")]}])
    assert outbound_routes(sidecar(mesh(ALL_V1_DR, vs)), REVIEWS_VHOST) == [
        {"match": {"prefix": "/"}, "route": {
            "cluster": f"outbound|9080|v1|{REVIEWS_HOST}", "timeout": "0s", "retry_policy": ISTIO_DEFAULT_RETRY,
        }}
    ]


def test_weighted_80_20_split() -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1", 80), to("reviews", "v2", 20)]}])
    [route] = outbound_routes(sidecar(mesh(ALL_V1_DR, vs)), REVIEWS_VHOST)
    assert route["route"]["weighted_clusters"] == {"clusters": [
        {"name": f"outbound|9080|v1|{REVIEWS_HOST}", "weight": 80},
        {"name": f"outbound|9080|v2|{REVIEWS_HOST}", "weight": 20},
    ]}


def test_zero_weight_destination_is_dropped() -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1", 100), to("reviews", "v2", 0)]}])
    [route] = outbound_routes(sidecar(mesh(ALL_V1_DR, vs)), REVIEWS_VHOST)
    assert route["route"]["weighted_clusters"]["clusters"] == [
        {"name": f"outbound|9080|v1|{REVIEWS_HOST}", "weight": 100}
    ]


def test_header_exact_match_then_fallback() -> None:
    vs = virtual_service("reviews", [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [to("reviews", "v2")]},
        {"route": [to("reviews", "v1")]},
    ])
    routes = outbound_routes(sidecar(mesh(ALL_V1_DR, vs)), REVIEWS_VHOST)
    assert [(r["match"], r["route"]["cluster"]) for r in routes] == [
        ({"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]},
         f"outbound|9080|v2|{REVIEWS_HOST}"),
        ({"prefix": "/"}, f"outbound|9080|v1|{REVIEWS_HOST}"),
    ]


def test_uri_matches_and_or_of_match_entries() -> None:
    vs = virtual_service("reviews", [{
        "match": [
            {"uri": {"exact": "/reviews/0"}, "headers": {"x-a": {"prefix": "p"}, "x-b": {"regex": "b+"}}},
            {"uri": {"prefix": "/api"}},
            {"uri": {"regex": "/r[0-9]+"}},
        ],
        "route": [to("reviews")],
    }])
    routes = outbound_routes(sidecar(mesh(vs)), REVIEWS_VHOST)
    assert [r["match"] for r in routes] == [
        {"path": "/reviews/0", "headers": [
            {"name": "x-a", "string_match": {"prefix": "p"}},
            {"name": "x-b", "string_match": {"safe_regex": {"regex": "b+"}}},
        ]},
        {"prefix": "/api"},
        {"safe_regex": {"regex": "/r[0-9]+"}},
    ]
    assert {r["route"]["cluster"] for r in routes} == {f"outbound|9080||{REVIEWS_HOST}"}


def test_virtual_service_applies_on_every_port_of_the_service() -> None:
    multi = make_service("multi", NS, ServicePort("http", 9080, 9080), ServicePort("http-admin", 9090, 9090))
    vs = virtual_service("multi", [
        {"match": [{"uri": {"prefix": "/admin"}}], "route": [to("multi", port=9090)]},
        {"route": [to("multi")]},  # no port: the port the request came in on
    ])
    config = sidecar(mesh(vs, services=(*BOOKINFO_SERVICES, multi)))
    for port in (9080, 9090):
        routes = outbound_routes(config, f"multi.bookinfo.svc.cluster.local:{port}")
        assert [r["route"]["cluster"] for r in routes] == [
            "outbound|9090||multi.bookinfo.svc.cluster.local",
            f"outbound|{port}||multi.bookinfo.svc.cluster.local",
        ]


def test_route_timeout_from_virtual_service() -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1")], "timeout": "2s"}])
    [route] = outbound_routes(sidecar(mesh(ALL_V1_DR, vs)), REVIEWS_VHOST)
    assert route["route"]["timeout"] == "2s"
    assert envoy_duration("500ms", "t") == "0.500000000s"
    assert envoy_duration("1m30s", "t") == "90s"
    assert envoy_duration("0.5s", "t") == "0.500000000s"


def test_short_names_resolve_in_the_namespace_of_the_rule() -> None:
    # In namespace tools, "reviews" means reviews.tools.svc.cluster.local: no such service.
    elsewhere = virtual_service("reviews", [{"route": [to("reviews", "v1")]}], namespace="tools")
    assert outbound_routes(sidecar(mesh(elsewhere)), REVIEWS_VHOST)[0]["route"]["cluster"] == (
        f"outbound|9080||{REVIEWS_HOST}"
    )
    # The same rule written with the FQDN applies, and its destination resolves by FQDN too.
    fqdn = virtual_service("reviews", [{"route": [to(REVIEWS_HOST, "v2")]}], hosts=[REVIEWS_HOST], namespace="tools")
    assert outbound_routes(sidecar(mesh(ALL_V1_DR, fqdn)), REVIEWS_VHOST)[0]["route"]["cluster"] == (
        f"outbound|9080|v2|{REVIEWS_HOST}"
    )
    # A DestinationRule short name also resolves in its own namespace.
    config = sidecar(mesh(destination_rule("reviews", ["v1"], namespace="tools")))
    assert not any("|v1|" in c["name"] for c in config.clusters)


def test_subset_no_destination_rule_defines_names_a_missing_cluster() -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1")]}])
    config = sidecar(mesh(vs))
    target = outbound_routes(config, REVIEWS_VHOST)[0]["route"]["cluster"]
    assert target == f"outbound|9080|v1|{REVIEWS_HOST}"
    assert target not in {c["name"] for c in config.clusters}  # Envoy answers 503 NC, as Istio


def test_gateway_only_virtual_service_does_not_apply_to_sidecars() -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1")]}], gateways=["istio-system/gw"])
    assert outbound_routes(sidecar(mesh(ALL_V1_DR, vs)), REVIEWS_VHOST)[0]["route"]["cluster"] == (
        f"outbound|9080||{REVIEWS_HOST}"
    )
    both = virtual_service("reviews", [{"route": [to("reviews", "v1")]}], gateways=["mesh", "istio-system/gw"])
    assert "|v1|" in outbound_routes(sidecar(mesh(ALL_V1_DR, both)), REVIEWS_VHOST)[0]["route"]["cluster"]
