"""Retries as istiod configures them on a sidecar's routes, by value and on real Envoy.

Istio's default outbound policy, a VirtualService's `retries` (checked as Istio's validation
checks them), and the inbound policy. Each test names the istio/istio source (tag 1.28.0) it
follows: pilot/pkg/networking/core/route/retry/retry.go and route/route.go. The real-Envoy tests
run the local mesh's own Envoy launcher on the translator's output (tests/envoy_builders.py Proxies).
"""

from pathlib import Path

import pytest

from conformance.errors import ManifestError, UnsupportedResource
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.translator import translate
from tests.builders import (
    RATINGS_VHOST,
    DETAILS_VHOST,
    ALL_V1_DR,
    INGRESS,
    ISTIO_DEFAULT_RETRY,
    ISTIO_INBOUND_RETRY,
    NS,
    REVIEWS_VHOST,
    eventually,
    gateway,
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





def test_every_outbound_route_gets_istios_default_retry_policy() -> None:
    """retry.go DefaultPolicy via route.go (VirtualService routes, default routes); an HTTPRoute
    without retry becomes a VirtualService without retries (gateway/conversion.go); gateways build
    their routes with the same route.go code (gateway.go)."""
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1", 80), to("reviews", "v2", 20)]}])
    config = sidecar(mesh(ALL_V1_DR, vs))
    assert outbound_routes(config, REVIEWS_VHOST)[0]["route"]["retry_policy"] == ISTIO_DEFAULT_RETRY
    assert outbound_routes(config, RATINGS_VHOST)[0]["route"]["retry_policy"] == ISTIO_DEFAULT_RETRY
    front = virtual_service("front", [{"route": [to("productpage")]}], hosts=["*"], gateways=["istio-system/gw"])
    ingress = translate(INGRESS, mesh(gateway("gw", ["*"]), front))
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
    client_ip, dead_ip, live_ip = loopback_addresses(loopback_ips, 3)
    with RecordingUpstream(live_ip, 0, body="live") as live:
        port = live.port  # dead_ip has nothing listening on it: the connection is refused
        pods = (make_pod("client", client_ip, {"app": "client"}, ports=()),
                direct_pod("web-dead", dead_ip, {"app": "web", "dead": "yes"}, port),
                direct_pod("web-live", live_ip, {"app": "web"}, port))
        services = (one_port_service("web", port, selector={"app": "web"}),
                    one_port_service("dead", port, selector={"dead": "yes"}),
                    one_port_service("dead-no-retries", port, selector={"dead": "yes"}),
                    one_port_service("dead-four-retries", port, selector={"dead": "yes"}))
        no_retries = virtual_service("dead-no-retries",
                                     [{"route": [to("dead-no-retries")], "retries": {"attempts": 0}}])
        four = virtual_service("dead-four-retries", [{"route": [to("dead-four-retries")], "retries": {"attempts": 4}}])
        state = mesh(no_retries, four, services=services, pods=pods)
        with Proxies(tmp_path) as proxies:
            proxy = proxies.start(pods[0], state)

            def counter(name: str, stat: str) -> int:
                return envoy_counters(proxy).get(f"cluster.outbound|9080||{name}.{NS}.svc.cluster.local;.{stat}", 0)

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
    client_ip, web_ip = loopback_addresses(loopback_ips, 2)
    with RecordingUpstream(web_ip, 0, status=503, body="busy") as unavailable:
        pods = (make_pod("client", client_ip, {"app": "client"}, ports=()),
                direct_pod("web", web_ip, {"app": "web"}, unavailable.port))
        services = (one_port_service("web", unavailable.port),
                    one_port_service("web-retried", unavailable.port, selector={"app": "web"}))
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
    [server_ip] = loopback_addresses(loopback_ips, 1)
    server = make_pod("web", server_ip, {"app": "web"}, ports=(9080,))  # no app on app_port(9080)
    with Proxies(tmp_path) as proxies:
        proxy = proxies.start(server, mesh(services=(one_port_service("web", 9080),), pods=(server,)))
        reply = through(server_ip, "/", port=9080)
        assert reply.status == 503
        counters = envoy_counters(proxy)
        assert counters["cluster.inbound|9080||;.upstream_cx_connect_fail"] == 3
        assert counters["cluster.inbound|9080||;.upstream_rq_retry"] == 2
