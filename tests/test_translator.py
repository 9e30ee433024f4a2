"""The local mesh's translator: MeshState -> Envoy resources, checked by value and by real Envoy."""

import http.client
import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import ConformanceError, UnsupportedResource
from conformance.targets.local.istio_subset import check_supported
from conformance.settings import RunSettings
from conformance.targets.local.model import OUTBOUND_PORT, MeshState, Pod, Service, ServicePort, app_port
from conformance.targets.local.target import LocalTarget
from conformance.targets.local.translator import KNOWN_MUTANTS, ProxyConfig, rds_file_name, translate
from conformance.targets.local.translator.durations import envoy_duration
from conformance.targets.local.translator.resources import rds_config_source
from tests.builders import (
    ALL_V1_DR,
    BOOKINFO_PODS,
    BOOKINFO_SERVICES,
    CONFIG_DIR,
    CURL,
    INGRESS,
    ISTIO_API,
    ISTIO_DEFAULT_RETRY,
    ISTIO_INBOUND_RETRY,
    NS,
    PRODUCTPAGE,
    REVIEWS_HOST,
    REVIEWS_VHOST,
    destination_rule,
    discovery_response,
    dynamic_bootstrap,
    envoy_validate,
    eventually,
    gateway,
    hcm_of,
    load_reference,
    make_pod,
    make_service,
    mesh,
    metadata,
    outbound_routes,
    sidecar,
    start_upstream,
    static_bootstrap,
    to,
    virtual_hosts,
    virtual_service,
    write_atomically,
    write_proxy_files,
)
from tests.crd_schema import UPSTREAM

# Inputs (a Bookinfo mesh, Istio documents, the upstream samples) are built with tests/builders.py.

# ---------------------------------------------------------------------------------------------
# Reading outputs


def cluster(config: ProxyConfig, name: str) -> dict:
    matching = [c for c in config.clusters if c["name"] == name]
    assert len(matching) == 1, f"{name} in {[c['name'] for c in config.clusters]}"
    return matching[0]


def endpoints(config: ProxyConfig, name: str) -> list[str]:
    groups = cluster(config, name)["load_assignment"]["endpoints"]
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
    assert hcm["rds"] == {"route_config_name": "outbound", "config_source": rds_config_source("outbound", CONFIG_DIR)}
    assert hcm["http_protocol_options"] == {"allow_absolute_url": True}
    assert hcm["normalize_path"] is True and hcm["generate_request_id"] is True


def test_rds_config_source_is_a_watched_file_with_a_safe_name() -> None:
    """The file alone is watched: a watched directory would make every subscription in it read
    its file again on any write, and Envoy's refusal counts could not be told apart."""
    assert rds_config_source("inbound|9080||", "/tmp/p") == {
        "path_config_source": {"path": "/tmp/p/rds_inbound_9080__.json"},
        "resource_api_version": "V3",
    }
    assert rds_file_name("http.8080") == "rds_http.8080.json"


def test_every_referenced_route_config_is_provided() -> None:
    for config in (sidecar(mesh()), translate(INGRESS, mesh(gateway("gw", ["*"])), CONFIG_DIR)):
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


def test_the_subset_check_loads_no_translator_module() -> None:
    """istio_subset.py and the translator parse durations and HTTP statuses with one module
    (istio_values.py) and name the mesh gateway once (conformance.names): checking a
    VirtualService's retries and hosts for sidecars needs no translator module."""
    vs = virtual_service("reviews", [{"route": [to("reviews")], "retries": {"attempts": 2, "perTryTimeout": "1s",
                                                                             "retryOn": "503,5xx"}}])
    code = ("import json, sys\n"
            "from conformance.targets.local.istio_subset import check_supported\n"
            f"check_supported(json.loads({json.dumps(json.dumps(vs))}))\n"
            "print(sorted(name for name in sys.modules if '.translator' in name))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


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


# ---------------------------------------------------------------------------------------------
# Mutants


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


# ---------------------------------------------------------------------------------------------
# Gateway


def ingress(*docs: Mapping[str, Any]) -> ProxyConfig:
    return translate(INGRESS, mesh(*docs), CONFIG_DIR)


def gateway_vs(name: str, hosts: list[str], gateways: list[str], namespace: str = NS) -> dict:
    return virtual_service(name, [{"route": [to("productpage", port=9080)]}], hosts=hosts,
                           namespace=namespace, gateways=gateways)


def test_gateway_listener_uses_rds_route_http_port() -> None:
    config = ingress(gateway("gw", ["*"]))
    [listener] = config.listeners
    assert listener["name"] == "127.0.1.100_8080"
    assert listener["address"]["socket_address"] == {"address": "127.0.1.100", "port_value": 8080}
    hcm = hcm_of(listener)
    assert hcm["server_name"] == "istio-envoy"
    assert hcm["rds"]["route_config_name"] == "http.8080"
    assert config.routes["http.8080"]["virtual_hosts"] == []  # nothing bound: every host gets 404
    assert f"outbound|9080||{REVIEWS_HOST}" in {c["name"] for c in config.clusters}


def test_bookinfo_gateway_sample() -> None:
    config = ingress(*load_reference("bookinfo-gateway"), ALL_V1_DR)
    [vhost] = config.routes["http.8080"]["virtual_hosts"]
    assert vhost["domains"] == ["*"]
    assert [r["match"] for r in vhost["routes"]] == [
        {"path": "/productpage"}, {"prefix": "/static"}, {"path": "/login"}, {"path": "/logout"},
        {"prefix": "/api/v1/products"},
    ]
    assert {r["route"]["cluster"] for r in vhost["routes"]} == {"outbound|9080||productpage.bookinfo.svc.cluster.local"}


@pytest.mark.parametrize(
    ("server_hosts", "vs_hosts", "admitted"),
    [
        (["*"], ["bookinfo.example.com"], ["bookinfo.example.com"]),
        (["bookinfo.example.com"], ["bookinfo.example.com", "other.example.com"], ["bookinfo.example.com"]),
        (["*.example.com"], ["a.example.com", "example.com", "a.example.org"], ["a.example.com"]),
        (["bookinfo.example.com"], ["*"], ["bookinfo.example.com"]),  # the narrower host is served
        (["bookinfo/*"], ["a.example.com"], ["a.example.com"]),  # VS namespace allowed
        (["tools/*"], ["a.example.com"], []),  # VS namespace not allowed
        (["./*"], ["a.example.com"], []),  # gateway namespace (istio-system) only
    ],
)
def test_gateway_host_admission(server_hosts: list[str], vs_hosts: list[str], admitted: list[str]) -> None:
    config = ingress(gateway("gw", server_hosts), gateway_vs("front", vs_hosts, ["istio-system/gw"]))
    vhosts = config.routes["http.8080"]["virtual_hosts"]
    assert [vh["name"] for vh in vhosts] == [f"{host}:8080" for host in admitted]
    for vh in vhosts:
        host = vh["name"].removesuffix(":8080")
        assert vh["domains"] == [host]  # the route config ignores the Host's port


def test_gateway_binding_by_name() -> None:
    def served(vs: dict) -> list[str]:
        config = ingress(gateway("gw", ["*"], namespace=NS), vs)
        return [vh["name"] for vh in config.routes["http.8080"]["virtual_hosts"]]

    assert served(gateway_vs("a", ["a.example.com"], ["gw"])) == ["a.example.com:8080"]
    assert served(gateway_vs("a", ["a.example.com"], [f"{NS}/gw"], namespace="tools")) == ["a.example.com:8080"]
    # A bare name means the gateway in the VirtualService's namespace: tools/gw does not exist.
    assert served(gateway_vs("a", ["a.example.com"], ["gw"], namespace="tools")) == []
    assert served(gateway_vs("a", ["a.example.com"], ["other-gw"])) == []
    # Without spec.gateways a VirtualService is for sidecars only.
    assert served(virtual_service("reviews", [{"route": [to("reviews")]}])) == []


def test_gateway_merges_virtual_services_for_one_host() -> None:
    first = virtual_service("a", [{"match": [{"uri": {"prefix": "/a"}}], "route": [to("reviews", "v1")]}],
                            hosts=["shop.example.com"], gateways=["istio-system/gw"])
    second = virtual_service("b", [{"route": [to("ratings")]}],
                             hosts=["shop.example.com"], gateways=["istio-system/gw"])
    config = ingress(gateway("gw", ["*"]), ALL_V1_DR, first, second)
    [vhost] = config.routes["http.8080"]["virtual_hosts"]
    assert [r["route"]["cluster"] for r in vhost["routes"]] == [
        f"outbound|9080|v1|{REVIEWS_HOST}", "outbound|9080||ratings.bookinfo.svc.cluster.local",
    ]


def test_gateway_refuses_non_http_servers() -> None:
    with pytest.raises(UnsupportedResource, match=r"spec\.servers\[0\]\.port\.protocol HTTPS"):
        ingress(gateway("gw", ["*"], port=8443, protocol="HTTPS"))


def test_gateway_for_other_selector_is_ignored() -> None:
    other = gateway("gw", ["*"])
    other["spec"]["selector"] = {"istio": "egressgateway"}
    assert ingress(other).listeners == []


# ---------------------------------------------------------------------------------------------
# check_supported


def test_refused_field_is_named_by_path() -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1")], "mirror": {"host": "reviews", "subset": "v2"}}])
    with pytest.raises(UnsupportedResource) as refused:
        check_supported(vs)
    assert str(refused.value) == (
        "VirtualService bookinfo/reviews: field spec.http[0].mirror is not implemented by the local mesh"
    )


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({**ALL_V1_DR, "spec": {**ALL_V1_DR["spec"], "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}},
         "spec.trafficPolicy"),
        (virtual_service("r", [{"match": [{"uri": {"exact": "/"}, "ignoreUriCase": True}], "route": [to("r")]}]),
         r"spec.http\[0\].match\[0\].ignoreUriCase"),
        (virtual_service("r", [{"match": [{"headers": {"end-user": {"exact": "x", "bogus": 1}}}], "route": [to("r")]}]),
         r"spec.http\[0\].match\[0\].headers.end-user.bogus"),
        (virtual_service("r", [{"route": [{"destination": {"host": "r", "port": {"name": "http"}}}]}]),
         r"spec.http\[0\].route\[0\].destination.port.name"),
        ({**virtual_service("r", []), "spec": {"hosts": ["r"], "tcp": []}}, "spec.tcp"),
        ({**gateway("gw", ["*"]), "spec": {"servers": [{"port": {"number": 1}, "tls": {"mode": "SIMPLE"}}]}},
         r"spec.servers\[0\].tls"),
    ],
)
def test_refused_fields(doc: dict, path: str) -> None:
    with pytest.raises(UnsupportedResource, match=f"field {path} is not implemented by the local mesh"):
        check_supported(doc)


def test_export_to_only_everywhere() -> None:
    check_supported({**ALL_V1_DR, "spec": {**ALL_V1_DR["spec"], "exportTo": ["*"]}})
    with pytest.raises(UnsupportedResource, match=r"spec\.exportTo"):
        check_supported({**ALL_V1_DR, "spec": {**ALL_V1_DR["spec"], "exportTo": ["."]}})


def test_unknown_kind_and_version_are_refused() -> None:
    with pytest.raises(UnsupportedResource, match="kind 'ServiceEntry'"):
        check_supported({"apiVersion": ISTIO_API, "kind": "ServiceEntry", "metadata": metadata("x", NS)})
    with pytest.raises(UnsupportedResource, match="apiVersion 'gateway.networking.k8s.io/v1'.*"
                                                  "Gateway API Gateways are not implemented by the local mesh yet"):
        check_supported({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": metadata("x", NS)})
    with pytest.raises(UnsupportedResource, match="kind 'GRPCRoute'"):
        check_supported({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute", "metadata": metadata("x", NS)})
    with pytest.raises(UnsupportedResource, match="apiVersion 'gateway.networking.k8s.io/v1alpha2'"):
        check_supported({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "HTTPRoute",
                         "metadata": metadata("x", NS)})


def test_translate_refuses_unimplemented_fields_too() -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews")], "retries": {"attempts": 3, "backoff": "1s"}}])
    with pytest.raises(UnsupportedResource, match=r"spec\.http\[0\]\.retries\.backoff"):
        sidecar(mesh(vs))


ACCEPTED_SAMPLES = [
    "bookinfo-gateway", "destination-rule-all", "virtual-service-all-v1", "virtual-service-reviews-80-20",
    "virtual-service-reviews-50-v3", "virtual-service-reviews-test-v2", "virtual-service-reviews-v3",
    "virtual-service-ratings-test-abort", "virtual-service-ratings-test-delay",
]
REFUSED_SAMPLES = {
    "destination-rule-all-mtls": "spec.trafficPolicy",
}


@pytest.mark.parametrize("sample", ACCEPTED_SAMPLES)
def test_bookinfo_samples_with_implemented_fields_are_accepted(sample: str) -> None:
    for doc in load_reference(sample):
        check_supported(doc)


@pytest.mark.parametrize(("sample", "path"), REFUSED_SAMPLES.items())
def test_bookinfo_samples_with_other_fields_are_refused(sample: str, path: str) -> None:
    with pytest.raises(UnsupportedResource, match=f"field {path} is not implemented"):
        for doc in load_reference(sample):
            check_supported(doc)


def test_reference_samples_are_all_classified() -> None:
    found = {p.name.removeprefix("bookinfo__networking__").removesuffix(".yaml")
             for p in (UPSTREAM / "istio").glob("bookinfo__networking__*.yaml")}
    assert found == set(ACCEPTED_SAMPLES) | set(REFUSED_SAMPLES)


# ---------------------------------------------------------------------------------------------
# Real Envoy accepts every generated config


def _everything() -> list[dict]:
    """Every feature the translator implements, in one state."""
    multi = virtual_service("ratings", [
        {"name": "jason",
         "match": [{"headers": {"end-user": {"exact": "jason"}, "x-flag": {}}, "uri": {"regex": "/r.*"}}],
         "route": [to("ratings", "v1")], "timeout": "250ms"},
        {"route": [to("ratings", "v1", 50), to("ratings", "nosuch", 50)]},
    ])
    shop = virtual_service("shop", [
        {"match": [{"uri": {"prefix": "/slow"}}], "route": [to("reviews", "v2")],
         "fault": {"delay": {"fixedDelay": "1.5s", "percentage": {"value": 0.1}}},
         "retries": {"attempts": 1, "retryOn": "503"}},  # status codes only
        {"match": [{"uri": {"prefix": "/"}}], "route": [to("reviews", "v2")],
         "fault": {"abort": {"httpStatus": 503}, "delay": {"fixedDelay": "1ms", "percentage": {"value": 100}}}},
    ], hosts=["shop.example.com", "*.example.org"], gateways=["istio-system/gw"])
    # For sidecars: a wildcard host, retries (and exact hosts win over it: ratings, reviews).
    wildcard = virtual_service("everything", [
        {"route": [to("details")], "retries": {"attempts": 3, "perTryTimeout": "250ms", "retryOn": "503,reset",
                                               "retryRemoteLocalities": True}},
    ], hosts=["*.bookinfo.svc.cluster.local"])
    multi["spec"]["http"][0]["retries"] = {"attempts": 0}
    multi["spec"]["http"][1]["fault"] = {"abort": {"httpStatus": 500, "percentage": {"value": 33.3333}}}
    # details: Gateway API for the mesh, every implemented field; no VirtualService names details.
    details = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": metadata("details", NS),
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "details", "port": 9080}],
            "hostnames": ["details"],
            "rules": [
                {"name": "exact", "matches": [{"path": {"type": "Exact", "value": "/details/0"},
                                               "headers": [{"name": "end-user", "value": "jason"},
                                                           {"type": "RegularExpression", "name": "x-v", "value": "v[12]"}]}],
                 "backendRefs": [{"name": "details", "port": 9080, "weight": 3},
                                 {"name": "nosuch", "port": 9080, "weight": 1},
                                 {"group": "", "kind": "Service", "name": "ratings", "port": 9080, "weight": 0}],
                 "timeouts": {"request": "1m30s"}},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api/"}},
                             {"path": {"type": "RegularExpression", "value": "/r[0-9]+"}}],
                 "backendRefs": [{"name": "details", "port": 9080}], "timeouts": {"request": "0s"}},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/empty"}}]},
                {"backendRefs": [{"name": "ratings", "port": 9080}]},
            ],
        },
    }
    return [
        ALL_V1_DR, destination_rule("ratings", ["v1", "v2"]), multi, shop, details, wildcard,
        virtual_service("reviews", [{"route": [to("reviews", "v1", 80), to("reviews", "v2", 20)]}]),
        gateway("gw", ["*.example.com", "*.example.org"]), gateway("gw80", ["*"], port=80),
        gateway_vs("any", ["*"], ["istio-system/gw80"]),
    ]


@pytest.mark.parametrize("pod", [PRODUCTPAGE, CURL, INGRESS], ids=lambda p: p.name)
@pytest.mark.parametrize("mutants", [frozenset(), frozenset(KNOWN_MUTANTS)], ids=["plain", "mutants"])
def test_envoy_accepts_translation(pod: Pod, mutants: frozenset[str], tmp_path: Path) -> None:
    empty_subset = destination_rule("details", ["v1", "v7"])  # v7 has no pod: an empty cluster
    state = mesh(*_everything(), empty_subset, mutants=mutants)
    config = translate(pod, state, str(tmp_path))
    assert config.listeners and config.clusters
    envoy_validate(static_bootstrap(pod, config), tmp_path)


def test_envoy_accepts_bookinfo_samples(tmp_path: Path) -> None:
    docs = [*load_reference("bookinfo-gateway"), *load_reference("destination-rule-all"),
            *load_reference("virtual-service-reviews-test-v2")]
    for pod in (PRODUCTPAGE, INGRESS):
        envoy_validate(static_bootstrap(pod, translate(pod, mesh(*docs), str(tmp_path))), tmp_path)


def test_envoy_accepts_an_empty_mesh(tmp_path: Path) -> None:
    envoy_validate(static_bootstrap(PRODUCTPAGE, sidecar(mesh(services=(), pods=(PRODUCTPAGE,)))), tmp_path)


# ---------------------------------------------------------------------------------------------
# Live: a real Envoy on file-based xDS; a route swap reaches an open keep-alive connection


def _admin(address_file: Path, path: str) -> str:
    """GET from Envoy's admin, whose port 0 Envoy resolved and wrote to address_file."""
    conn = http.client.HTTPConnection(address_file.read_text().strip(), timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _get(conn: http.client.HTTPConnection, url: str) -> tuple[int, str]:
    conn.request("GET", url)  # absolute form, as an app using the sidecar as its HTTP proxy
    response = conn.getresponse()
    return response.status, response.read().decode()


def test_route_swap_reaches_an_open_keep_alive_connection(
    tmp_path: Path, loopback_ips: list[str], running_envoy: Callable[[Path, Path], subprocess.Popen]
) -> None:
    client_ip, v1_ip, v2_ip = loopback_ips
    v1 = start_upstream(v1_ip, 0, "reviews-v1")
    port = v1.server_address[1]
    v2 = start_upstream(v2_ip, port, "reviews-v2")
    try:
        client = make_pod("client", client_ip, {"app": "client"}, ports=())
        pods = (client, make_pod("reviews-v1", v1_ip, {"app": "reviews", "version": "v1"}, proxy="none", ports=(port,)),
                make_pod("reviews-v2", v2_ip, {"app": "reviews", "version": "v2"}, proxy="none", ports=(port,)))
        services = (Service("reviews", NS, (ServicePort("http", 9080, port),), {"app": "reviews"}),)

        def routed_to(subset: str) -> MeshState:
            vs = virtual_service("reviews", [{"route": [to("reviews", subset)]}])
            return mesh(destination_rule("reviews", ["v1", "v2"]), vs, services=services, pods=pods)

        config_dir = tmp_path / "xds"
        config_dir.mkdir()
        write_proxy_files(config_dir, translate(client, routed_to("v1"), str(config_dir)), "1")
        bootstrap = tmp_path / "bootstrap.json"
        bootstrap.write_text(json.dumps(dynamic_bootstrap(client, config_dir)))
        log = tmp_path / "envoy.log"
        process = running_envoy(bootstrap, log)

        url = "http://reviews:9080/reviews/0"

        def fresh_request() -> tuple[int, str] | None:
            assert process.poll() is None, f"Envoy exited:\n{log.read_text()}"
            conn = http.client.HTTPConnection(client_ip, OUTBOUND_PORT, timeout=5)
            try:
                return _get(conn, url)
            finally:
                conn.close()

        assert eventually(lambda: fresh_request() == (200, "reviews-v1"), "Envoy to route to v1")

        conn = http.client.HTTPConnection(client_ip, OUTBOUND_PORT, timeout=5)
        try:
            assert _get(conn, url) == (200, "reviews-v1")
            sock = conn.sock
            local = sock.getsockname()

            # Only the route file changes: the listener, and so the connection, stay.
            config = translate(client, routed_to("v2"), str(config_dir))
            rds_file = config_dir / rds_file_name("outbound")
            write_atomically(rds_file, discovery_response("2", [config.routes["outbound"]]))
            # Envoy reports the applied route version in its stats (the local "proxy-status").
            applied = 'http.outbound_127.0.0.1_15001;.rds.outbound.version_text: "2"'
            eventually(lambda: applied in _admin(tmp_path / "admin.address", "/stats?filter=rds"), applied)

            assert eventually(lambda: _get(conn, url) == (200, "reviews-v2"), "the route swap on the open connection")
            assert conn.sock is sock and sock.getsockname() == local, "the connection was re-opened"
        finally:
            conn.close()
    finally:
        v1.shutdown()
        v2.shutdown()
        v1.server_close()
        v2.server_close()
