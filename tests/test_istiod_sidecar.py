"""The local mesh's sidecars configured as istiod configures them, by value and on real Envoy.

Each test names the istio/istio source (tag 1.28.0) it follows. The real-Envoy tests run the
local mesh's own Envoy launcher (conformance.targets.local.envoy) on the translator's output,
with upstreams in this process on random loopback addresses.
"""

import http.client
import http.server
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from conformance.errors import ManifestError, UnsupportedResource
from conformance.probes import envoy_stats
from conformance.targets.local.envoy import EnvoyProxy
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.model import OUTBOUND_PORT, MeshState, Pod, Service, ServicePort, app_port
from conformance.targets.local.processes import Supervisor
from conformance.targets.local.translator import rds_file_name, translate
from tests.builders import (
    ALL_V1_DR,
    BOOKINFO_SERVICES,
    CONFIG_DIR,
    CURL,
    INGRESS,
    ISTIO_DEFAULT_RETRY,
    ISTIO_INBOUND_RETRY,
    NS,
    PRODUCTPAGE,
    REVIEWS_HOST,
    REVIEWS_VHOST,
    destination_rule,
    eventually,
    gateway,
    hcm_of,
    make_pod,
    make_service,
    mesh,
    outbound_routes,
    sidecar,
    to,
    virtual_service,
)

RATINGS_VHOST = "ratings.bookinfo.svc.cluster.local:9080"
DETAILS_VHOST = "details.bookinfo.svc.cluster.local:9080"


# ---------------------------------------------------------------------------------------------
# Real Envoy: proxies, upstreams, requests


class Proxies:
    """Real Envoys started by the local mesh's launcher and fed the translator's resources."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.supervisor = Supervisor()

    def __enter__(self) -> "Proxies":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.supervisor.stop_all()

    def start(self, pod: Pod, state: MeshState) -> EnvoyProxy:
        proxy = EnvoyProxy(pod, self.run_dir)
        proxy.start(self.supervisor)
        config = translate(pod, state, str(proxy.config_dir))
        routes = {rds_file_name(name): (name, route) for name, route in config.routes.items()}
        proxy.push(1, config.listeners, config.clusters, routes)
        names = [listener["name"] for listener in config.listeners]
        eventually(lambda: _listening(proxy, names), f"{pod.name}'s listeners {names}")
        return proxy


def _listening(proxy: EnvoyProxy, names: list[str]) -> bool:
    """Whether every listener is active: a listener is, once its routes are loaded."""
    assert proxy.child is not None and proxy.child.alive(), f"Envoy exited:\n{proxy.child and proxy.child.log_tail()}"
    try:
        active = proxy.admin("/listeners").text
    except httpx.HTTPError:  # the admin port is not open yet
        return False
    return all(f"{name}::" in active for name in names)


class Upstream:
    """An HTTP/1.1 server on ip:port answering `status` with `body`; records each request's headers."""

    def __init__(self, ip: str, port: int, status: int = 200, body: str = "") -> None:
        self.seen: list[dict[str, str]] = []
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                upstream.seen.append({name.lower(): value for name, value in self.headers.items()})
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((ip, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> "Upstream":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: str


def through(proxy_ip: str, url: str, port: int = OUTBOUND_PORT) -> Reply:
    """GET `url` in absolute form through the sidecar at proxy_ip, as the local apps do."""
    conn = http.client.HTTPConnection(proxy_ip, port, timeout=10)
    try:
        conn.request("GET", url)
        response = conn.getresponse()
        body = response.read().decode()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


def stats(proxy: EnvoyProxy) -> dict[str, int]:
    return envoy_stats.parse(proxy.stats())


def addresses(loopback_ips: list[str], count: int) -> list[str]:
    """`count` addresses of the random 127.a.b.0/24 the loopback_ips fixture picked."""
    base = loopback_ips[0].rsplit(".", 1)[0]
    return [f"{base}.{n}" for n in range(1, count + 1)]


def direct_pod(name: str, ip: str, labels: dict[str, str], port: int, namespace: str = NS) -> Pod:
    """A pod without sidecar: its Service endpoints are ip:port."""
    return make_pod(name, ip, labels, namespace=namespace, proxy="none", ports=(port,))


def service(name: str, target_port: int, port: int = 9080, namespace: str = NS,
            selector: dict[str, str] | None = None) -> Service:
    return Service(name, namespace, (ServicePort("http", port, target_port),), selector or {"app": name})


# ---------------------------------------------------------------------------------------------
# 1. Retries: Istio's default outbound policy, a VirtualService's retries, the inbound policy


def test_every_outbound_route_gets_istios_default_retry_policy() -> None:
    """retry.go DefaultPolicy via route.go (VirtualService routes, default routes); an HTTPRoute
    without retry becomes a VirtualService without retries (gateway/conversion.go); gateways build
    their routes with the same route.go code (gateway.go)."""
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1", 80), to("reviews", "v2", 20)]}])
    config = sidecar(mesh(ALL_V1_DR, vs))
    assert outbound_routes(config, REVIEWS_VHOST)[0]["route"]["retry_policy"] == ISTIO_DEFAULT_RETRY
    assert outbound_routes(config, RATINGS_VHOST)[0]["route"]["retry_policy"] == ISTIO_DEFAULT_RETRY
    front = virtual_service("front", [{"route": [to("productpage")]}], hosts=["*"], gateways=["istio-system/gw"])
    ingress = translate(INGRESS, mesh(gateway("gw", ["*"]), front), CONFIG_DIR)
    [vhost] = ingress.routes["http.8080"]["virtual_hosts"]
    assert vhost["routes"][0]["route"]["retry_policy"] == ISTIO_DEFAULT_RETRY
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "details", "namespace": NS},
             "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "details", "port": 9080}],
                      "rules": [{"backendRefs": [{"name": "details", "port": 9080}]}]}}
    assert outbound_routes(sidecar(mesh(route)), DETAILS_VHOST)[0]["route"]["retry_policy"] == ISTIO_DEFAULT_RETRY


def test_inbound_route_gets_the_inbound_retry_policy_and_no_attempt_count() -> None:
    """route.go BuildDefaultHTTPInboundRoute: reset-before-request, 2 retries; httproute.go
    buildSidecarInboundHTTPRouteConfig sets no include_request_attempt_count."""
    [vhost] = sidecar(mesh()).routes["inbound|9080||"]["virtual_hosts"]
    assert vhost["routes"][0]["route"]["retry_policy"] == ISTIO_INBOUND_RETRY
    assert "include_request_attempt_count" not in vhost


@pytest.mark.parametrize(
    ("retries", "policy"),
    [
        # retry.go ConvertPolicy: the default with the fields the VirtualService sets.
        ({"attempts": 3}, {**ISTIO_DEFAULT_RETRY, "num_retries": 3}),
        ({"attempts": 1, "perTryTimeout": "1.5s", "retryOn": "gateway-error,503"},
         {**ISTIO_DEFAULT_RETRY, "num_retries": 1, "per_try_timeout": "1.500000000s",
          "retry_on": "gateway-error,retriable-status-codes", "retriable_status_codes": [503]}),
        # parseRetryOn: codes only, "retriable-status-codes" appended to an empty condition list.
        ({"attempts": 2, "retryOn": "503,504"},
         {**ISTIO_DEFAULT_RETRY, "retry_on": ",retriable-status-codes", "retriable_status_codes": [503, 504]}),
        ({"attempts": 2, "retryOn": "5xx,retriable-status-codes,409"},
         {**ISTIO_DEFAULT_RETRY, "retry_on": "5xx,retriable-status-codes", "retriable_status_codes": [409]}),
        ({"attempts": 2, "retryRemoteLocalities": True},
         {**ISTIO_DEFAULT_RETRY, "retry_priority": {
             "name": "envoy.retry_priorities.previous_priorities",
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3."
                                       "PreviousPrioritiesConfig", "update_frequency": 2}}}),
        ({"attempts": 2, "retryRemoteLocalities": False}, ISTIO_DEFAULT_RETRY),
        # attempts 0 (or absent) disables retries: no retry_policy at all.
        ({"attempts": 0}, None),
        ({}, None),
    ],
)
def test_virtual_service_retries_replace_the_default(retries: dict, policy: dict | None) -> None:
    """retry.go ConvertPolicy and parseRetryOn."""
    vs = virtual_service("reviews", [{"route": [to("reviews")], "retries": retries}])
    check_supported(vs)
    [route] = outbound_routes(sidecar(mesh(vs)), REVIEWS_VHOST)
    assert route["route"].get("retry_policy") == policy


@pytest.mark.parametrize(
    ("retries", "message"),
    [
        # validation.go validateHTTPRetry and agent.ValidateDuration.
        ({"attempts": -1}, r"retries: attempts cannot be negative"),
        ({"attempts": 0, "retryOn": "5xx"}, r"http retry policy configured when attempts are set to 0 \(disabled\)"),
        ({"perTryTimeout": "1s"}, r"http retry policy configured when attempts are set to 0"),
        ({"attempts": 0, "retryRemoteLocalities": False}, r"configured when attempts are set to 0"),
        ({"attempts": 2, "retryOn": "5xx,bogus"}, r'retries\.retryOn: "bogus" is not a valid retryOn policy'),
        ({"attempts": 2, "retryOn": "5xx, 503"}, r'"\ 503" is not a valid retryOn policy'),
        ({"attempts": 2, "retryOn": "599"}, r'"599" is not a valid retryOn policy'),
        ({"attempts": 2, "perTryTimeout": "500us"}, r"perTryTimeout: duration must be greater than 1ms"),
        ({"attempts": 2, "perTryTimeout": "1500us"}, r"perTryTimeout: only durations to ms precision"),
        ({"attempts": 2, "perTryTimeout": "soon"}, r"perTryTimeout: 'soon' is not a duration"),
        ({"attempts": "3"}, r"retries\.attempts: '3' is not an integer"),
    ],
)
def test_invalid_retries_are_refused_as_istio_validates_them(retries: dict, message: str) -> None:
    vs = virtual_service("reviews", [{"route": [to("reviews")], "retries": retries}])
    with pytest.raises(ManifestError, match=message):
        check_supported(vs)


def test_unimplemented_retry_fields_are_refused_by_path() -> None:
    retries = {"attempts": 2, "retryIgnorePreviousHosts": False}
    vs = virtual_service("reviews", [{"route": [to("reviews")], "retries": retries}])
    with pytest.raises(UnsupportedResource, match=r"retries\.retryIgnorePreviousHosts is not implemented"):
        check_supported(vs)


def test_a_refused_connection_is_retried_by_default_and_not_with_attempts_0(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """retry.go DefaultPolicy: connect-failure is retried twice, on another host first
    (previous_hosts); `retries: {attempts: 0}` disables retries (ConvertPolicy). The upstream
    sees x-envoy-attempt-count (httproute.go: include_request_attempt_count)."""
    client_ip, dead_ip, live_ip = addresses(loopback_ips, 3)
    with Upstream(live_ip, 0, body="live") as live:
        port = live.port  # dead_ip has nothing listening on it: the connection is refused
        pods = (make_pod("client", client_ip, {"app": "client"}, ports=()),
                direct_pod("web-dead", dead_ip, {"app": "web", "dead": "yes"}, port),
                direct_pod("web-live", live_ip, {"app": "web"}, port))
        services = (service("web", port, selector={"app": "web"}),
                    service("dead", port, selector={"dead": "yes"}),
                    service("dead-no-retries", port, selector={"dead": "yes"}),
                    service("dead-four-retries", port, selector={"dead": "yes"}))
        no_retries = virtual_service("dead-no-retries",
                                     [{"route": [to("dead-no-retries")], "retries": {"attempts": 0}}])
        four = virtual_service("dead-four-retries", [{"route": [to("dead-four-retries")], "retries": {"attempts": 4}}])
        state = mesh(no_retries, four, services=services, pods=pods)
        with Proxies(tmp_path) as proxies:
            proxy = proxies.start(pods[0], state)

            def counter(name: str, stat: str) -> int:
                return stats(proxy).get(f"cluster.outbound|9080||{name}.{NS}.svc.cluster.local;.{stat}", 0)

            # One endpoint only, refusing: every attempt fails; the count shows the retries.
            for name, attempts in (("dead", 3), ("dead-no-retries", 1), ("dead-four-retries", 5)):
                reply = through(client_ip, f"http://{name}:9080/")
                assert reply.status == 503 and reply.body.endswith("reset reason: remote connection failure")
                assert ("retried" in reply.body) is (attempts > 1), reply.body
                assert counter(name, "upstream_cx_connect_fail") == attempts, name

            # Two endpoints, one refusing: a request whose first attempt is refused is retried,
            # on the live one first (previous_hosts), and succeeds. Which endpoint comes first is
            # the balancer's choice: requests go until one was refused, then answered.
            def retried_and_answered() -> bool:
                reply = through(client_ip, "http://web:9080/")
                assert (reply.status, reply.body) == (200, "live")
                return live.seen[-1]["x-envoy-attempt-count"] == "2"

            eventually(retried_and_answered, "a request refused by web-dead, then answered by web-live")
            refused = counter("web", "upstream_cx_connect_fail")
            assert refused >= 1 and counter("web", "upstream_rq_retry") == refused


def test_a_503_is_not_retried_by_default_but_retry_on_503_retries_it(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """retry.go: retriable-status-codes without codes retries no status; a VirtualService's
    retryOn "503" adds the code (parseRetryOn); x-envoy-attempt-count counts the tries."""
    client_ip, web_ip = addresses(loopback_ips, 2)
    with Upstream(web_ip, 0, status=503, body="busy") as unavailable:
        pods = (make_pod("client", client_ip, {"app": "client"}, ports=()),
                direct_pod("web", web_ip, {"app": "web"}, unavailable.port))
        services = (service("web", unavailable.port), service("web-retried", unavailable.port, selector={"app": "web"}))
        retried = virtual_service("web-retried", [{"route": [to("web-retried")],
                                                   "retries": {"attempts": 2, "retryOn": "503"}}])
        with Proxies(tmp_path) as proxies:
            proxies.start(pods[0], mesh(retried, services=services, pods=pods))
            reply = through(client_ip, "http://web:9080/")
            assert (reply.status, reply.body) == (503, "busy")
            assert [seen["x-envoy-attempt-count"] for seen in unavailable.seen] == ["1"]
            unavailable.seen.clear()
            reply = through(client_ip, "http://web-retried:9080/")
            assert (reply.status, reply.body) == (503, "busy")
            assert [seen["x-envoy-attempt-count"] for seen in unavailable.seen] == ["1", "2", "3"]


def test_inbound_sidecar_retries_a_request_its_app_never_received(tmp_path: Path, loopback_ips: list[str]) -> None:
    """route.go BuildDefaultHTTPInboundRoute: reset-before-request, 2 retries. A connection the app
    refuses is reset before the request was sent, so the inbound sidecar tries three times."""
    [server_ip] = addresses(loopback_ips, 1)
    server = make_pod("web", server_ip, {"app": "web"}, ports=(9080,))  # no app on app_port(9080)
    with Proxies(tmp_path) as proxies:
        proxy = proxies.start(server, mesh(services=(service("web", 9080),), pods=(server,)))
        reply = through(server_ip, "/", port=9080)
        assert reply.status == 503
        counters = stats(proxy)
        assert counters["cluster.inbound|9080||;.upstream_cx_connect_fail"] == 3
        assert counters["cluster.inbound|9080||;.upstream_rq_retry"] == 2


# ---------------------------------------------------------------------------------------------
# 2. The Server header, 8. stat prefixes: the HTTP connection managers as listener.go builds them


def test_connection_managers_server_names_and_stat_prefixes() -> None:
    """util/proxy_headers.go GetProxyHeadersFromProxyConfig: inbound and gateway listeners say
    "istio-envoy", sidecar outbound listeners leave Envoy's "envoy". listener_inbound.go
    StatPrefix and listener.go (buildHTTPProxy, gateways): "inbound_0.0.0.0_<port>",
    "outbound_<listener name>", each ending with ";" (pkg/config/constants StatPrefixDelimiter)."""
    config = sidecar(mesh())
    by_name = {listener["name"]: hcm_of(listener) for listener in config.listeners}
    inbound, outbound = by_name["inbound_127.0.1.1_9080"], by_name["outbound"]
    assert (inbound["stat_prefix"], inbound["server_name"]) == ("inbound_0.0.0.0_9080;", "istio-envoy")
    assert outbound["stat_prefix"] == "outbound_127.0.0.1_15001;" and "server_name" not in outbound
    # Neither sets server_header_transformation: Envoy's default, OVERWRITE, is Istio's.
    assert "server_header_transformation" not in inbound and "server_header_transformation" not in outbound
    [gateway_listener] = translate(INGRESS, mesh(gateway("gw", ["*"])), CONFIG_DIR).listeners
    gateway_hcm = hcm_of(gateway_listener)
    assert (gateway_hcm["stat_prefix"], gateway_hcm["server_name"]) == ("outbound_0.0.0.0_8080;", "istio-envoy")


def test_client_sees_envoy_as_server_and_stats_carry_istios_names(tmp_path: Path, loopback_ips: list[str]) -> None:
    """proxy_headers.go: the server's inbound sidecar overwrites the app's Server header with
    "istio-envoy", then the client's outbound sidecar overwrites it with "envoy", which is what an
    in-mesh client of Istio sees. The stats are named with listener.go's prefixes and
    cluster_builder.go's cluster stat names, each ending with ";"."""
    client_ip, server_ip = addresses(loopback_ips, 2)
    client = make_pod("client", client_ip, {"app": "client"}, ports=())
    server = make_pod("web", server_ip, {"app": "web"}, ports=(9080,))
    with Upstream(server_ip, app_port(9080), body="web"):  # Python's server says "BaseHTTP/..."
        state = mesh(services=(service("web", 9080),), pods=(client, server))
        with Proxies(tmp_path) as proxies:
            client_proxy, server_proxy = proxies.start(client, state), proxies.start(server, state)
            direct = through(server_ip, "/", port=9080)
            assert (direct.status, direct.body, direct.headers["server"]) == (200, "web", "istio-envoy")
            reply = through(client_ip, "http://web:9080/")
            assert (reply.status, reply.body, reply.headers["server"]) == (200, "web", "envoy")
            assert stats(client_proxy)["http.outbound_127.0.0.1_15001;.downstream_rq_2xx"] == 1
            assert stats(client_proxy)[f"cluster.outbound|9080||web.{NS}.svc.cluster.local;.upstream_rq_200"] == 1
            assert stats(server_proxy)["http.inbound_0.0.0.0_9080;.downstream_rq_2xx"] == 2
            assert stats(server_proxy)["cluster.inbound|9080||;.upstream_rq_200"] == 2


# ---------------------------------------------------------------------------------------------
# 3. ALLOW_ANY: a host no service names goes to the PassthroughCluster


def test_outbound_route_config_ends_with_the_allow_any_virtual_host() -> None:
    """httproute.go buildCatchAllVirtualHost (ALLOW_ANY, Istio's default): virtual host and route
    `allow_any` to PassthroughCluster, no timeout, no retries; cluster_builder.go
    buildDefaultPassthroughCluster: ORIGINAL_DST. Every outbound virtual host counts attempts."""
    config = sidecar(mesh())
    vhosts = config.routes["outbound"]["virtual_hosts"]
    assert vhosts[-1] == {
        "name": "allow_any", "domains": ["*"], "include_request_attempt_count": True,
        "routes": [{"name": "allow_any", "match": {"prefix": "/"},
                    "route": {"cluster": "PassthroughCluster", "timeout": "0s"}}],
    }
    assert all(vhost["include_request_attempt_count"] is True for vhost in vhosts)
    [passthrough] = [c for c in config.clusters if c["name"] == "PassthroughCluster"]
    assert (passthrough["type"], passthrough["lb_policy"]) == ("ORIGINAL_DST", "CLUSTER_PROVIDED")
    assert "PassthroughCluster" not in {c["name"] for c in translate(INGRESS, mesh(), CONFIG_DIR).clusters}


def test_a_host_no_service_names_passes_through_to_the_address_it_names(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """httproute.go buildCatchAllVirtualHost: under ALLOW_ANY an unknown host reaches its original
    destination (here the host:port the request names) instead of a 404."""
    client_ip, outside_ip = addresses(loopback_ips, 2)
    with Upstream(outside_ip, 0, body="outside the mesh") as outside:
        client = make_pod("client", client_ip, {"app": "client"}, ports=())
        with Proxies(tmp_path) as proxies:
            proxy = proxies.start(client, mesh(pods=(client,)))
            reply = through(client_ip, f"http://{outside_ip}:{outside.port}/")
            assert (reply.status, reply.body) == (200, "outside the mesh")
            assert outside.seen[0]["x-envoy-attempt-count"] == "1"
            assert stats(proxy)["cluster.PassthroughCluster;.upstream_rq_200"] == 1
            # A name with no address behind it goes there too, and finds no host: 503, not 404.
            assert through(client_ip, "http://nowhere.example:8080/").status == 503


# ---------------------------------------------------------------------------------------------
# 4. A destination without a port


def test_destination_without_port_takes_the_only_port_else_the_listener_port() -> None:
    """route.go GetDestinationCluster: destination port, else the service's only port, else the
    listener's port, even when the destination service has no such port (the cluster is missing:
    503 NC). A sidecar's listener port is the service port; a gateway's, its server port."""
    multi = make_service("multi", NS, ServicePort("http", 9080, 9080), ServicePort("http-admin", 9090, 9090))
    pair = make_service("pair", NS, ServicePort("http", 7000, 7000), ServicePort("http-b", 7001, 7001))
    vs = virtual_service("multi", [
        {"match": [{"uri": {"prefix": "/pair"}}], "route": [to("pair")]},
        {"match": [{"uri": {"prefix": "/ratings"}}], "route": [to("ratings")]},
        {"route": [to("multi")]},
    ])
    config = sidecar(mesh(vs, services=(*BOOKINFO_SERVICES, multi, pair)))
    for port in (9080, 9090):
        routes = outbound_routes(config, f"multi.{NS}.svc.cluster.local:{port}")
        assert [r["route"]["cluster"] for r in routes] == [
            f"outbound|{port}||pair.{NS}.svc.cluster.local",  # pair has no such port: NC
            f"outbound|9080||ratings.{NS}.svc.cluster.local",  # the only port
            f"outbound|{port}||multi.{NS}.svc.cluster.local",
        ]
    assert f"outbound|9080||pair.{NS}.svc.cluster.local" not in {c["name"] for c in config.clusters}
    front = virtual_service("front", [{"route": [to("multi")]}], hosts=["*"], gateways=["istio-system/gw"])
    ingress = translate(INGRESS, mesh(gateway("gw", ["*"]), front, services=(*BOOKINFO_SERVICES, multi)), CONFIG_DIR)
    [vhost] = ingress.routes["http.8080"]["virtual_hosts"]
    assert vhost["routes"][0]["route"]["cluster"] == f"outbound|8080||multi.{NS}.svc.cluster.local"


def test_destination_port_the_service_lacks_answers_503_no_cluster(tmp_path: Path, loopback_ips: list[str]) -> None:
    """route.go GetDestinationCluster names outbound|<listener port>||<host>, which does not exist
    when the service lacks that port: Envoy answers 503 with no body (NC), not "no healthy upstream"."""
    client_ip, web_ip = addresses(loopback_ips, 2)
    with Upstream(web_ip, 0, body="web") as web:
        client = make_pod("client", client_ip, {"app": "client"}, ports=())
        pods = (client, direct_pod("web", web_ip, {"app": "web"}, web.port))
        two_ports = Service("web", NS, (ServicePort("http", 7000, web.port), ServicePort("http-b", 7001, web.port)),
                            {"app": "web"})
        front = make_service("front", NS, ServicePort("http", 9080, 9080))
        vs = virtual_service("front", [{"route": [to("web")]}])
        with Proxies(tmp_path) as proxies:
            proxies.start(client, mesh(vs, services=(two_ports, front), pods=pods))
            assert through(client_ip, "http://web:7001/").body == "web"
            reply = through(client_ip, "http://front:9080/")
            assert (reply.status, reply.body) == (503, "")
            assert web.seen and len(web.seen) == 1


# ---------------------------------------------------------------------------------------------
# 5. Wildcard VirtualService hosts for sidecars


def test_wildcard_hosts_cover_services_and_exact_hosts_win() -> None:
    """sidecar.go computeWildcardHostVirtualServiceIndex with config.go MostSpecificHostMatch: an
    exact host first, else the most specific wildcard; the oldest VirtualService for one host."""
    def target(*docs: dict, vhost: str = REVIEWS_VHOST) -> str:
        return outbound_routes(sidecar(mesh(ALL_V1_DR, *docs)), vhost)[0]["route"]["cluster"]

    def vs(name: str, host: str, subset: str) -> dict:
        return virtual_service(name, [{"route": [to(REVIEWS_HOST, subset)]}], hosts=[host])

    namespace_wide = vs("ns-wide", f"*.{NS}.svc.cluster.local", "v2")
    mesh_wide = vs("mesh-wide", "*.svc.cluster.local", "v3")
    everything = vs("everything", "*", "v1")
    assert target(namespace_wide) == f"outbound|9080|v2|{REVIEWS_HOST}"
    assert target(namespace_wide, vhost=RATINGS_VHOST) == f"outbound|9080|v2|{REVIEWS_HOST}"
    assert target(mesh_wide, everything) == f"outbound|9080|v3|{REVIEWS_HOST}"
    assert target(everything, mesh_wide, namespace_wide) == f"outbound|9080|v2|{REVIEWS_HOST}"
    assert target(everything, vhost=RATINGS_VHOST) == f"outbound|9080|v1|{REVIEWS_HOST}"
    # An exact host wins over any wildcard, whatever the order.
    assert target(namespace_wide, vs("exact", "reviews", "v3")) == f"outbound|9080|v3|{REVIEWS_HOST}"
    # For one wildcard host, the oldest VirtualService.
    assert target(namespace_wide, vs("later", f"*.{NS}.svc.cluster.local", "v3")) == f"outbound|9080|v2|{REVIEWS_HOST}"
    # A wildcard of another namespace covers nothing here: the default route stays.
    assert target(vs("tools", "*.tools.svc.cluster.local", "v2")) == f"outbound|9080||{REVIEWS_HOST}"


@pytest.mark.parametrize("host", ["shop.example.com", "*.example.com", "*.bookinfo", "reviews.bookinfo", "rev*ews"])
def test_mesh_hosts_that_can_name_no_service_are_refused(host: str) -> None:
    """Istio gives such hosts virtual hosts of their own (route.go separateVSHostsAndServices,
    port 80); the local mesh has no ServiceEntry or DNS for them, so it refuses them by name."""
    vs = virtual_service("shop", [{"route": [to("reviews")]}], hosts=["reviews", host])
    with pytest.raises(UnsupportedResource, match=rf"spec\.hosts\[1\] '{host.replace('*', '[*]')}' for gateway mesh"):
        check_supported(vs)
    check_supported({**vs, "spec": {**vs["spec"], "gateways": ["istio-system/gw"]}})  # a gateway's: fine


@pytest.mark.parametrize("host", ["*", "*.local", "*.cluster.local", "*.svc.cluster.local",
                                  "*.bookinfo.svc.cluster.local", "reviews", "reviews.bookinfo.svc.cluster.local"])
def test_mesh_hosts_that_can_name_a_service_are_accepted(host: str) -> None:
    check_supported(virtual_service("any", [{"route": [to("reviews")]}], hosts=[host]))


def test_wildcard_virtual_service_applies_on_real_envoy(tmp_path: Path, loopback_ips: list[str]) -> None:
    """sidecar.go computeWildcardHostVirtualServiceIndex: `*.bookinfo.svc.cluster.local` applies to
    every service of bookinfo that no exact host claims."""
    client_ip, web_ip = addresses(loopback_ips, 2)
    with Upstream(web_ip, 0, body="web") as web:
        client = make_pod("client", client_ip, {"app": "client"}, ports=())
        pods = (client, direct_pod("web", web_ip, {"app": "web"}, web.port))
        services = (service("web", web.port), service("other", web.port, selector={"app": "web"}))
        abort = {"abort": {"httpStatus": 418, "percentage": {"value": 100}}}
        teapot = virtual_service("all", [{"route": [to("web")], "fault": abort}], hosts=[f"*.{NS}.svc.cluster.local"])
        exact = virtual_service("web", [{"route": [to("web")]}])
        with Proxies(tmp_path) as proxies:
            proxies.start(client, mesh(teapot, exact, services=services, pods=pods))
            assert through(client_ip, "http://other:9080/").status == 418
            assert (through(client_ip, "http://web:9080/").body) == "web"


# ---------------------------------------------------------------------------------------------
# 6. LEAST_REQUEST


def test_default_load_balancer_is_least_request_on_real_envoy(tmp_path: Path, loopback_ips: list[str]) -> None:
    """cluster_traffic_policy.go defaultLBAlgorithm: LEAST_REQUEST for every service cluster."""
    [client_ip] = addresses(loopback_ips, 1)
    client = make_pod("client", client_ip, {"app": "client"}, ports=())
    config = sidecar(mesh(ALL_V1_DR, pods=(client,)), pod=client)
    assert {c["lb_policy"] for c in config.clusters if c["name"].startswith("outbound|")} == {"LEAST_REQUEST"}
    with Proxies(tmp_path) as proxies:
        proxy = proxies.start(client, mesh(ALL_V1_DR, pods=(client,)))
        dump = proxy.admin("/config_dump?resource=dynamic_active_clusters").json()
        policies = {c["cluster"]["name"]: c["cluster"].get("lb_policy") for c in dump["configs"]}
    assert policies[f"outbound|9080|v2|{REVIEWS_HOST}"] == "LEAST_REQUEST"
    assert policies[f"outbound|9080||{REVIEWS_HOST}"] == "LEAST_REQUEST"


# ---------------------------------------------------------------------------------------------
# 7. Which DestinationRule applies: the client's namespace, the service's, the root namespace


def _subset_labels(pod: Pod, *rules: dict) -> dict[str, str]:
    """The labels of subset "chosen" of reviews, as `pod`'s sidecar sees them."""
    config = sidecar(mesh(*rules), pod=pod)
    chosen = f"outbound|9080|chosen|{REVIEWS_HOST}"
    [cluster] = [c for c in config.clusters if c["name"] == chosen]
    ips = {e["endpoint"]["address"]["socket_address"]["address"]
           for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]}
    return {ip: version for ip, version in (("127.0.1.2", "v1"), ("127.0.1.3", "v2"), ("127.0.1.4", "v3")) if ip in ips}


def _chosen(version: str, namespace: str, host: str = REVIEWS_HOST) -> dict:
    rule = destination_rule(host, [], namespace=namespace)
    rule["metadata"]["name"] = f"reviews-{namespace}-{version}"
    rule["spec"]["subsets"] = [{"name": "chosen", "labels": {"version": version}}]
    return rule


@pytest.mark.parametrize(
    ("pod", "rules", "expected"),
    [
        # push_context.go destinationRule: the client's namespace first...
        (CURL, [_chosen("v1", NS), _chosen("v2", "tools"), _chosen("v3", "istio-system")], "v2"),
        (PRODUCTPAGE, [_chosen("v1", NS), _chosen("v2", "tools"), _chosen("v3", "istio-system")], "v1"),
        # ...then the service's namespace, then the root namespace.
        (CURL, [_chosen("v3", "istio-system"), _chosen("v1", NS)], "v1"),
        (CURL, [_chosen("v3", "istio-system")], "v3"),
        # A proxy in the root namespace does not look at its own namespace first.
        (INGRESS, [_chosen("v3", "istio-system"), _chosen("v1", NS)], "v1"),
        # Within a namespace, the exact host, else the most specific wildcard.
        (CURL, [_chosen("v1", "tools", "*.svc.cluster.local"),
                _chosen("v2", "tools", f"*.{NS}.svc.cluster.local")], "v2"),
        (CURL, [_chosen("v2", "tools", "*"), _chosen("v3", "tools")], "v3"),
        # A wildcard in the client's namespace still wins over the service's namespace.
        (CURL, [_chosen("v1", NS), _chosen("v2", "tools", "*.svc.cluster.local")], "v2"),
        # Rules for one host in one namespace merge; the first definition of a subset wins.
        (PRODUCTPAGE, [_chosen("v2", NS), _chosen("v1", NS)], "v2"),
    ],
    ids=["client-ns", "service-ns-client", "service-ns", "root-ns", "root-client", "wildcards", "exact-first",
         "client-wildcard", "merged"],
)
def test_destination_rule_lookup_order(pod: Pod, rules: list[dict], expected: str) -> None:
    assert list(_subset_labels(pod, *rules).values()) == [expected]


def test_subsets_follow_the_clients_namespace_on_real_envoy(tmp_path: Path, loopback_ips: list[str]) -> None:
    """push_context.go destinationRule: one VirtualService routes to subset "chosen"; the client in
    bookinfo uses bookinfo's DestinationRule (v1), the client in tools its own (v2)."""
    home_ip, tools_ip, v1_ip, v2_ip = addresses(loopback_ips, 4)
    with Upstream(v1_ip, 0, body="v1") as v1, Upstream(v2_ip, v1.port, body="v2") as v2:  # one target port
        home = make_pod("home", home_ip, {"app": "home"}, ports=())
        tools = make_pod("tools", tools_ip, {"app": "tools"}, namespace="tools", ports=())
        pods = (home, tools, direct_pod("web-v1", v1_ip, {"app": "web", "version": "v1"}, v1.port),
                direct_pod("web-v2", v2_ip, {"app": "web", "version": "v2"}, v2.port))
        services = (Service("web", NS, (ServicePort("http", 9080, v1.port),), {"app": "web"}),)
        rules = []
        for namespace, version in ((NS, "v1"), ("tools", "v2")):
            rule = destination_rule(f"web.{NS}.svc.cluster.local", [], namespace=namespace)
            rule["spec"]["subsets"] = [{"name": "chosen", "labels": {"version": version}}]
            rules.append(rule)
        vs = virtual_service("web", [{"route": [to("web", "chosen")]}])
        state = mesh(vs, *rules, services=services, pods=pods)
        with Proxies(tmp_path) as proxies:
            proxies.start(home, state)
            proxies.start(tools, state)
            url = f"http://web.{NS}:9080/"
            assert {through(home_ip, url).body for _ in range(5)} == {"v1"}
            assert {through(tools_ip, url).body for _ in range(5)} == {"v2"}
