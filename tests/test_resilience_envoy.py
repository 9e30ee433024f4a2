"""Resilience on real Envoys fed by the local control plane (tests/envoy_builders.py Proxies) in front of
upstreams in the test process: connection pools, outlier detection and retries as istiod configures
them (istio/istio, tag 1.28.0), and the mutants that drop each, counting what a client gets against
the proxy's own counters. The translation by value is tests/test_translator_resilience.py.
"""

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from conformance.targets.local.apps.httpbin import httpbin_app
from conformance.targets.local.apps.server import App, AppReply, AppServer, Request
from conformance.targets.local.envoy import EnvoyProxy
from conformance.targets.local.model import MeshState, Pod, Service, app_port
from conformance.targets.local.translator import translate
from tests.builders import (
    ALL_V1_DR,
    ISTIO_DEFAULT_RETRY,
    NS,
    REVIEWS_VHOST,
    eventually,
    make_pod,
    mesh,
    outbound_routes,
    sidecar,
    to,
    virtual_service,
)
from tests.envoy_builders import (
    Proxies,
    RecordingUpstream,
    direct_pod,
    envoy_counters,
    loopback_addresses,
    one_port_service,
    through,
)
from tests.resilience_builders import TASK_POOL, WEB_CLUSTER, traffic_rule

# ---------------------------------------------------------------------------------------------
# On real Envoy: the connection pool


def web_state(ips: list[str], port: int, *docs: dict, mutants: frozenset[str] = frozenset(),
              services: tuple[Service, ...] | None = None) -> tuple[Pod, MeshState]:
    """A client pod on ips[0] and pods without sidecar labelled app=web on the others, serving `port`;
    Service web (9080 -> port) selects them."""
    client = make_pod("client", ips[0], {"app": "client"}, ports=())
    webs = tuple(direct_pod(f"web-{n}", ip, {"app": "web"}, port) for n, ip in enumerate(ips[1:]))
    services = services or (one_port_service("web", port),)
    return client, mesh(*docs, services=services, pods=(client, *webs), mutants=mutants)


def cluster_stat(proxy: EnvoyProxy, stat: str, service: str = "web") -> int:
    """A stat of the proxy's cluster for `service`, 0 while Envoy has not created it."""
    return envoy_counters(proxy).get(f"cluster.outbound|9080||{service}.{NS}.svc.cluster.local;.{stat}", 0)


WEB = "http://web:9080/"


def test_requests_beyond_one_connection_and_one_pending_overflow_on_real_envoy(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """applyConnectionPool on Envoy: with the task's pool, a request holds the one connection, a
    second waits (pending), and each further one is refused at once: 503 with x-envoy-overloaded,
    counted one for one by upstream_rq_pending_overflow; the upstream sees two requests, each on its
    own connection (maxRequestsPerConnection 1)."""
    client_ip, web_ip = loopback_addresses(loopback_ips, 2)
    with RecordingUpstream(web_ip, 0, body="held", hold=True) as upstream, Proxies(tmp_path) as proxies:
        client, state = web_state([client_ip, web_ip], upstream.port, traffic_rule("web", {"connectionPool": TASK_POOL}))
        proxy = proxies.start(client, state)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(through, client_ip, WEB)
            assert upstream.arrivals.get(timeout=10) == "held"
            second = pool.submit(through, client_ip, WEB)
            eventually(lambda: cluster_stat(proxy, "upstream_rq_pending_active") == 1, "the second request pending")
            refused = [through(client_ip, WEB) for _ in range(3)]
            assert [(r.status, r.headers.get("x-envoy-overloaded")) for r in refused] == [(503, "true")] * 3
            assert cluster_stat(proxy, "upstream_rq_pending_overflow") == len(refused)
            upstream.release.set()
            assert [(f.result().status, f.result().body) for f in (first, second)] == [(200, "held")] * 2
        assert len(upstream.seen) == 2 and cluster_stat(proxy, "upstream_cx_total") == 2
        # One request at a time is within the limits; each still gets a connection of its own.
        assert [through(client_ip, WEB).status for _ in range(3)] == [200] * 3
        assert cluster_stat(proxy, "upstream_cx_total") == 5
        assert cluster_stat(proxy, "upstream_rq_pending_overflow") == 3


def test_no_circuit_breaker_mutant_lets_every_request_through_on_real_envoy(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """The same pool under no-circuit-breaker: four concurrent requests all reach the upstream,
    none overflows, and sequential requests share one connection."""
    client_ip, web_ip = loopback_addresses(loopback_ips, 2)
    with RecordingUpstream(web_ip, 0, body="held", hold=True) as upstream, Proxies(tmp_path) as proxies:
        client, state = web_state([client_ip, web_ip], upstream.port, traffic_rule("web", {"connectionPool": TASK_POOL}),
                                  mutants=frozenset({"no-circuit-breaker"}))
        proxy = proxies.start(client, state)
        with ThreadPoolExecutor(4) as pool:
            replies = [pool.submit(through, client_ip, WEB) for _ in range(4)]
            for _ in replies:
                assert upstream.arrivals.get(timeout=10) == "held"
            upstream.release.set()
            assert [r.result().status for r in replies] == [200] * 4
        opened = cluster_stat(proxy, "upstream_cx_total")
        assert [through(client_ip, WEB).status for _ in range(3)] == [200] * 3
        assert cluster_stat(proxy, "upstream_cx_total") == opened
        assert cluster_stat(proxy, "upstream_rq_pending_overflow") == 0


# ---------------------------------------------------------------------------------------------
# On real Envoy: outlier detection


def statuses(client_ip: str, count: int) -> list[tuple[int, str]]:
    return [(reply.status, reply.body) for reply in (through(client_ip, WEB) for _ in range(count))]


def failing_answer(client_ip: str) -> float | None:
    """When the request began, if the failing endpoint answered it (503); else None."""
    began = time.monotonic()
    return began if through(client_ip, WEB).status == 503 else None


@contextmanager
def good_and_failing(ips: list[str], failing: int = 1) -> Iterator[tuple[RecordingUpstream, list[RecordingUpstream]]]:
    """A healthy upstream on ips[0] and `failing` upstreams answering 503 on the next ones, one port."""
    with RecordingUpstream(ips[0], 0, body="good") as good:
        bad = [RecordingUpstream(ip, good.port, status=503, body="bad") for ip in ips[1:1 + failing]]
        try:
            yield good, bad
        finally:
            for upstream in bad:
                upstream.__exit__(None, None, None)


EJECTION = {"consecutive5xxErrors": 1, "interval": "100ms", "baseEjectionTime": "3s", "maxEjectionPercent": 100}
GOOD = (200, "good")


def all_good(client_ip: str, count: int) -> bool:
    """Whether `count` requests in a row were answered by the healthy endpoint. Envoy applies a
    change of host health at once, but holds one that follows another within a second, and
    applies them together (update_merge_window, 1 s by default, which Istio leaves unset)."""
    return statuses(client_ip, count) == [GOOD] * count


def test_a_failing_endpoint_is_ejected_until_its_ejection_time_ends_on_real_envoy(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """applyOutlierDetection on Envoy: the first 503 of an endpoint (consecutive5xxErrors 1) ejects
    it: once the balancer has the change, every request goes to the healthy one until
    baseEjectionTime has passed; then the endpoint is back, and ejected again at its next 503.
    outlier_detection.ejections_enforced_total counts each ejection; Istio's default retry policy
    retries no 503, so the client sees them."""
    client_ip, good_ip, bad_ip = loopback_addresses(loopback_ips, 3)
    with good_and_failing([good_ip, bad_ip]) as (good, [bad]), Proxies(tmp_path) as proxies:
        client, state = web_state([client_ip, good_ip, bad_ip], good.port,
                                  traffic_rule("web", {"outlierDetection": EJECTION}))
        proxy = proxies.start(client, state)
        # The ejection follows the 503 at once, so it began no earlier than the request did.
        ejected_at = eventually(lambda: failing_answer(client_ip), "a request answered 503")
        eventually(lambda: cluster_stat(proxy, "outlier_detection.ejections_active") == 1, "the ejection")
        eventually(lambda: all_good(client_ip, 10), "the balancer without the ejected endpoint")
        seen = len(bad.seen)
        assert statuses(client_ip, 20) == [GOOD] * 20 and len(bad.seen) == seen
        assert time.monotonic() - ejected_at < 3.0, "the requests took the whole ejection time"
        assert cluster_stat(proxy, "outlier_detection.ejections_enforced_total") == 1
        eventually(lambda: failing_answer(client_ip), "the failing endpoint back after 3 s")
        assert time.monotonic() - ejected_at >= 3.0
        eventually(lambda: cluster_stat(proxy, "outlier_detection.ejections_enforced_total") == 2, "a second ejection")


def test_no_outlier_detection_mutant_keeps_sending_to_the_failing_endpoint_on_real_envoy(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    client_ip, good_ip, bad_ip = loopback_addresses(loopback_ips, 3)
    with good_and_failing([good_ip, bad_ip]) as (good, [bad]), Proxies(tmp_path) as proxies:
        client, state = web_state([client_ip, good_ip, bad_ip], good.port,
                                  traffic_rule("web", {"outlierDetection": EJECTION}),
                                  mutants=frozenset({"no-outlier-detection"}))
        proxy = proxies.start(client, state)
        eventually(lambda: failing_answer(client_ip), "a request answered 503")
        replies = statuses(client_ip, 30)
        assert (503, "bad") in replies and GOOD in replies  # each 2^-30 to miss by chance
        assert cluster_stat(proxy, "outlier_detection.ejections_enforced_total") == 0


def test_ejected_endpoints_get_no_traffic_however_few_are_healthy_on_real_envoy(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """applyOutlierDetection sets healthy_panic_threshold to minHealthPercent (0): with two of three
    endpoints ejected, all traffic goes to the healthy one, the balancer never in panic. The same
    cluster without that field (Envoy's 50%) panics below half healthy and sends to the ejected
    endpoints too."""
    client_ip, other_ip, *upstream_ips = loopback_addresses(loopback_ips, 5)
    outlier = {**EJECTION, "baseEjectionTime": "60s"}
    with good_and_failing(upstream_ips, failing=2) as (good, bad), Proxies(tmp_path) as proxies:
        client, state = web_state([client_ip, *upstream_ips], good.port, traffic_rule("web", {"outlierDetection": outlier}))
        other = make_pod("other", other_ip, {"app": "other"}, ports=())
        for pod, istios in ((client, True), (other, False)):
            config = translate(pod, state)
            if not istios:
                [web] = [cluster for cluster in config.clusters if cluster["name"] == WEB_CLUSTER]
                del web["common_lb_config"]
            proxy = proxies.start_config(pod, config)

            def both_ejected(ip: str = pod.ip, proxy: EnvoyProxy = proxy) -> bool:
                through(ip, WEB)
                return cluster_stat(proxy, "outlier_detection.ejections_active") == 2

            eventually(both_ejected, f"{pod.name}: both failing endpoints ejected")
            if istios:
                eventually(lambda: all_good(pod.ip, 20), "every request to the healthy endpoint")
                assert cluster_stat(proxy, "lb_healthy_panic") == 0
            else:  # in panic each request is 2/3 likely to reach an ejected endpoint
                eventually(lambda: through(pod.ip, WEB) and cluster_stat(proxy, "lb_healthy_panic") > 0,
                           "the balancer in panic")
                assert (503, "bad") in statuses(pod.ip, 20)


# ---------------------------------------------------------------------------------------------
# On real Envoy: retries in front of go-httpbin's /unstable


class CountingApp:
    """The local httpbin, counting the requests (attempts) it receives."""

    def __init__(self, app: App) -> None:
        self.app, self.count, self._lock = app, 0, threading.Lock()

    def __call__(self, request: Request) -> AppReply:
        with self._lock:
            self.count += 1
        return self.app(request)


@contextmanager
def httpbin_at(ip: str) -> Iterator[tuple[CountingApp, int]]:
    counting = CountingApp(httpbin_app())
    server = AppServer((ip, 0), counting, "httpbin")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield counting, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_retries_on_5xx_raise_the_success_share_of_a_failing_upstream_on_real_envoy(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """retry.go ConvertPolicy on Envoy, in front of /unstable: attempts 2 on 5xx tries a failing
    request three times, and upstream_rq_retry equals the attempts beyond one per request that the
    upstream received; attempts 0 and Istio's default policy retry no 500. At failure_rate 0.5 the
    success share rises from 1/2 to 1 - 1/8 (bounds at five standard deviations)."""
    client_ip, web_ip = loopback_addresses(loopback_ips, 2)
    retried = virtual_service("web", [{"route": [to("web")], "retries": {"attempts": 2, "retryOn": "5xx"}}])
    off = virtual_service("web-off", [{"route": [to("web-off")], "retries": {"attempts": 0}}])
    with httpbin_at(web_ip) as (httpbin, port), Proxies(tmp_path) as proxies:
        services = tuple(one_port_service(name, port, selector={"app": "web"}) for name in ("web", "web-off", "web-default"))
        client, state = web_state([client_ip, web_ip], port, retried, off, services=services)
        proxy = proxies.start(client, state)

        def run(service: str, rate: float, count: int) -> tuple[int, int, int]:
            """(successes, attempts the upstream saw, retries the proxy counted)."""
            attempts, retries = httpbin.count, cluster_stat(proxy, "upstream_rq_retry", service)
            replies = [through(client_ip, f"http://{service}:9080/unstable?failure_rate={rate}") for _ in range(count)]
            assert {r.status for r in replies} <= {200, 500}
            return (sum(r.status == 200 for r in replies), httpbin.count - attempts,
                    cluster_stat(proxy, "upstream_rq_retry", service) - retries)

        assert run("web", 1, 10) == (0, 30, 20)
        assert run("web-off", 1, 10) == (0, 10, 0)
        assert run("web-default", 1, 10) == (0, 10, 0)
        successes, attempts, retries = run("web", 0.5, 200)
        assert retries == attempts - 200 and 150 <= successes
        successes, attempts, retries = run("web-default", 0.5, 200)
        assert (attempts, retries) == (200, 0) and 60 <= successes <= 140


# ---------------------------------------------------------------------------------------------
# Wired in the sidecar's inbound clusters and the VirtualService routes


def test_no_retries_mutant_keeps_the_default_policy_on_virtual_service_routes(tmp_path: Path,
                                                                              loopback_ips: list[str]) -> None:
    """Under no-retries, a VirtualService's retries (attempts 2 on 5xx, attempts 0) give way to
    retry.go's DefaultPolicy, which retries no 500: each request is one attempt."""
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1")], "retries": {"attempts": 0}}])
    [route] = outbound_routes(sidecar(mesh(ALL_V1_DR, vs, mutants=frozenset({"no-retries"}))), REVIEWS_VHOST)
    assert route["route"]["retry_policy"] == ISTIO_DEFAULT_RETRY
    client_ip, web_ip = loopback_addresses(loopback_ips, 2)
    retried = virtual_service("web", [{"route": [to("web")], "retries": {"attempts": 2, "retryOn": "5xx"}}])
    with httpbin_at(web_ip) as (httpbin, port), Proxies(tmp_path) as proxies:
        client, state = web_state([client_ip, web_ip], port, retried, mutants=frozenset({"no-retries"}))
        proxy = proxies.start(client, state)
        replies = [through(client_ip, "http://web:9080/unstable?failure_rate=1").status for _ in range(10)]
        assert replies == [500] * 10 and httpbin.count == 10
        assert cluster_stat(proxy, "upstream_rq_retry") == 0


def test_the_server_sidecar_limits_its_inbound_cluster_with_the_connection_pool_on_real_envoy(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """cluster_builder.go buildInboundCluster: the DestinationRule's connection pool on the server's
    inbound cluster, so a client without a sidecar is limited there: one request held by the app,
    one pending, the next ones refused 503 with x-envoy-overloaded, counted by the inbound cluster."""
    [web_ip] = loopback_addresses(loopback_ips, 1)
    server = make_pod("web", web_ip, {"app": "web"}, ports=(9080,))
    with RecordingUpstream(web_ip, app_port(9080), body="held", hold=True) as app, Proxies(tmp_path) as proxies:
        state = mesh(traffic_rule("web", {"connectionPool": TASK_POOL}), services=(one_port_service("web", 9080),),
                     pods=(server,))
        proxy = proxies.start(server, state)

        def inbound(stat: str) -> int:
            return envoy_counters(proxy).get(f"cluster.inbound|9080||;.{stat}", 0)

        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(through, web_ip, "/", 9080)
            assert app.arrivals.get(timeout=10) == "held"
            second = pool.submit(through, web_ip, "/", 9080)
            eventually(lambda: inbound("upstream_rq_pending_active") == 1, "the second request pending")
            refused = [through(web_ip, "/", 9080) for _ in range(2)]
            assert [(r.status, r.headers.get("x-envoy-overloaded")) for r in refused] == [(503, "true")] * 2
            assert inbound("upstream_rq_pending_overflow") == 2
            app.release.set()
            assert [f.result().status for f in (first, second)] == [200, 200]
