"""The translator's output on real Envoy: accepted by Envoy's validation, and served live by the control plane."""

import http.client
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from conformance.targets.local.model import OUTBOUND_PORT, MeshState, Pod, Service, ServicePort
from conformance.targets.local.translator import KNOWN_MUTANTS, translate
from conformance.verdicts.replies import ENVOY_TIMER_EARLY
from tests.builders import (
    ALL_V1_DR,
    CURL,
    INGRESS,
    NS,
    PRODUCTPAGE,
    RATINGS_DR,
    WITH_VERSIONS,
    backend,
    destination_rule,
    eventually,
    gateway,
    gateway_vs,
    http_route,
    load_gateway_api_sample,
    load_reference,
    make_pod,
    mesh,
    metadata,
    sidecar,
    to,
    virtual_service,
)
from tests.envoy_builders import Proxies, envoy_validate, start_upstream, static_bootstrap

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
    config = translate(pod, state)
    assert config.listeners and config.clusters
    envoy_validate(static_bootstrap(pod, config), tmp_path)


def test_envoy_accepts_bookinfo_samples(tmp_path: Path) -> None:
    docs = [*load_reference("bookinfo-gateway"), *load_reference("destination-rule-all"),
            *load_reference("virtual-service-reviews-test-v2")]
    for pod in (PRODUCTPAGE, INGRESS):
        envoy_validate(static_bootstrap(pod, translate(pod, mesh(*docs))), tmp_path)


def test_envoy_accepts_an_empty_mesh(tmp_path: Path) -> None:
    envoy_validate(static_bootstrap(PRODUCTPAGE, sidecar(mesh(services=(), pods=(PRODUCTPAGE,)))), tmp_path)


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
            envoy_validate(static_bootstrap(pod, translate(pod, state)), tmp_path)


# ---------------------------------------------------------------------------------------------
# Live: a real Envoy fed over ADS; a route swap reaches an open keep-alive connection


def _get(conn: http.client.HTTPConnection, url: str) -> tuple[int, str]:
    conn.request("GET", url)  # absolute form, as an app using the sidecar as its HTTP proxy
    response = conn.getresponse()
    return response.status, response.read().decode()


def test_route_swap_reaches_an_open_keep_alive_connection(tmp_path: Path, loopback_ips: list[str]) -> None:
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

        url = "http://reviews:9080/reviews/0"
        with Proxies(tmp_path) as proxies:
            proxy = proxies.start(client, routed_to("v1"))
            conn = http.client.HTTPConnection(client_ip, OUTBOUND_PORT, timeout=5)
            try:
                assert _get(conn, url) == (200, "reviews-v1")
                sock = conn.sock
                local = sock.getsockname()
                pushes = proxies.control_plane.pushes(proxy.node_id)

                # Only the route changes: the listener, and so the connection, stay. The push
                # returns once Envoy ACKed it.
                assert proxies.push(proxy, translate(client, routed_to("v2"))) == [proxy.node_id]
                assert proxies.control_plane.pushes(proxy.node_id) == pushes + 1  # RDS alone
                assert proxy.sync_status() == {"CDS": "SYNCED", "EDS": "SYNCED", "LDS": "SYNCED", "RDS": "SYNCED",
                                               "SDS": "SYNCED"}
                assert _get(conn, url) == (200, "reviews-v2")
                assert conn.sock is sock and sock.getsockname() == local, "the connection was re-opened"
            finally:
                conn.close()
    finally:
        v1.shutdown()
        v2.shutdown()
        v1.server_close()
        v2.server_close()


# ---------------------------------------------------------------------------------------------
# Live: a real Envoy injects the faults and routes by HTTPRoute


def test_live_faults_and_http_route(tmp_path: Path, loopback_ips: list[str]) -> None:
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

        with Proxies(tmp_path) as proxies:
            proxies.start(client, state)

            def request(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, str, float]:
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
                # Envoy's delay timer fires a few ms early (ENVOY_TIMER_EARLY says why).
                assert (status, body) == (200, "reviews-v1") and elapsed >= delay_s - ENVOY_TIMER_EARLY, elapsed
            assert min(request(faulty)[2] for _ in range(5)) < delay_s / 2  # the delay is the fault's

            reviews = "http://reviews:9080/reviews/0"
            assert {request(reviews, {"end-user": "jason"})[1] for _ in range(10)} == {"reviews-v2"}
            assert {request(reviews)[1] for _ in range(20)} == {"reviews-v1"}  # weight 0: reviews-v2 gets none
    finally:
        for server in (v1, v2):
            server.shutdown()
            server.server_close()
