"""Sidecar clusters as istiod configures them: the default load balancer and which
DestinationRule's subsets apply, by value and on real Envoy.

Each test names the istio/istio source (tag 1.28.0) it follows:
pilot/pkg/networking/core/cluster_traffic_policy.go and pilot/pkg/model/push_context.go.
"""

import queue
import threading
from pathlib import Path

import pytest

from conformance.targets.local.model import Pod, Service, ServicePort
from conformance.targets.local.translator import translate
from tests.builders import (
    ALL_V1_DR,
    CURL,
    INGRESS,
    NS,
    PRODUCTPAGE,
    REVIEWS_HOST,
    destination_rule,
    make_pod,
    mesh,
    sidecar,
    to,
    virtual_service,
)
from tests.envoy_builders import (
    Proxies,
    RecordingUpstream,
    Reply,
    direct_pod,
    loopback_addresses,
    one_port_service,
    through,
)


# ---------------------------------------------------------------------------------------------
# LEAST_REQUEST


def test_default_load_balancer_is_least_request_on_real_envoy(tmp_path: Path, loopback_ips: list[str]) -> None:
    """cluster_traffic_policy.go defaultLBAlgorithm: LEAST_REQUEST for every service cluster."""
    [client_ip] = loopback_addresses(loopback_ips, 1)
    client = make_pod("client", client_ip, {"app": "client"}, ports=())
    config = sidecar(mesh(ALL_V1_DR, pods=(client,)), pod=client)
    assert {c["lb_policy"] for c in config.clusters if c["name"].startswith("outbound|")} == {"LEAST_REQUEST"}
    with Proxies(tmp_path) as proxies:
        proxy = proxies.start(client, mesh(ALL_V1_DR, pods=(client,)))
        dump = proxy.admin("/config_dump?resource=dynamic_active_clusters").json()
        policies = {c["cluster"]["name"]: c["cluster"].get("lb_policy") for c in dump["configs"]}
    assert policies[f"outbound|9080|v2|{REVIEWS_HOST}"] == "LEAST_REQUEST"
    assert policies[f"outbound|9080||{REVIEWS_HOST}"] == "LEAST_REQUEST"


REQUESTS = 200
# The slow endpoint's share under round robin is exactly half; under LEAST_REQUEST it gets a
# request only when both of Envoy's two random picks are the slow endpoint (1 in 4), about 50.
AT_MOST_SLOW = 90


def _slow_share(tmp_path: Path, loopback_ips: list[str], lb_policy: str | None) -> int:
    """How many of REQUESTS sent one after another through a sidecar reach the slow endpoint
    of a two-endpoint service, with the translator's clusters (lb_policy None) or with lb_policy."""
    client_ip, slow_ip, fast_ip = loopback_addresses(loopback_ips, 3)
    # The slow endpoint announces a request as it holds it; a fast one is announced once answered.
    arrivals: queue.Queue[str] = queue.Queue()
    with RecordingUpstream(slow_ip, 0, body="slow", hold=True, arrivals=arrivals) as slow, \
            RecordingUpstream(fast_ip, slow.port, body="fast"):
        client = make_pod("client", client_ip, {"app": "client"}, ports=())
        pods = (client, direct_pod("web-slow", slow_ip, {"app": "web"}, slow.port),
                direct_pod("web-fast", fast_ip, {"app": "web"}, slow.port))
        state = mesh(services=(one_port_service("web", slow.port),), pods=pods)
        with Proxies(tmp_path) as proxies:
            config = translate(client, state)
            web = f"outbound|9080||web.{NS}.svc.cluster.local"
            [cluster] = [c for c in config.clusters if c["name"] == web]
            assert cluster["lb_policy"] == "LEAST_REQUEST"
            if lb_policy is not None:
                cluster["lb_policy"] = lb_policy
            proxies.start_config(client, config)
            replies: list[Reply] = []

            def send() -> None:
                reply = through(client_ip, "http://web:9080/")
                replies.append(reply)
                if reply.body == "fast":
                    arrivals.put("fast")

            # One request at a time: the next goes once the last was answered (fast) or is held
            # (slow), so Envoy picks each endpoint knowing the slow one's held requests.
            senders = [threading.Thread(target=send) for _ in range(REQUESTS)]
            reached = []
            for sender in senders:
                sender.start()
                reached.append(arrivals.get(timeout=10))
            slow.release.set()
            for sender in senders:
                sender.join(timeout=10)
    assert [reply.status for reply in replies] == [200] * REQUESTS
    assert sorted(reply.body for reply in replies) == sorted(reached)
    return reached.count("slow")


def test_least_request_sends_less_to_the_endpoint_that_holds_requests(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """cluster_traffic_policy.go defaultLBAlgorithm: LEAST_REQUEST, without LbConfig. For equal
    weights Envoy's least-request balancer samples two endpoints at random (with replacement) and
    takes the one with fewer active requests (envoyproxy/envoy
    source/extensions/load_balancing_policies/least_request/least_request_lb.cc
    unweightedHostPickNChoices, choice_count 2). The slow endpoint
    holds every request it gets, so after its first it always has more active requests than the
    fast one: it gets a request only when both picks are it, 1 in 4. Of 200 requests it gets about
    50; more than 90 has a probability below 1e-9. Round robin, the policy before, gives it 100."""
    slow = _slow_share(tmp_path / "least", loopback_ips, None)
    assert slow <= AT_MOST_SLOW, f"the slow endpoint got {slow} of {REQUESTS} requests"
    assert _slow_share(tmp_path / "round", loopback_ips, "ROUND_ROBIN") == REQUESTS // 2


# ---------------------------------------------------------------------------------------------
# Which DestinationRule applies: the client's namespace, the service's, the root namespace


def _subset_labels(pod: Pod, *rules: dict) -> dict[str, str]:
    """The labels of subset "chosen" of reviews, as `pod`'s sidecar sees them."""
    config = sidecar(mesh(*rules), pod=pod)
    chosen = f"outbound|9080|chosen|{REVIEWS_HOST}"
    assert chosen in {c["name"] for c in config.clusters}
    ips = {e["endpoint"]["address"]["socket_address"]["address"]
           for group in config.endpoints[chosen]["endpoints"] for e in group["lb_endpoints"]}
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
    home_ip, tools_ip, v1_ip, v2_ip = loopback_addresses(loopback_ips, 4)
    # One target port for both.
    with RecordingUpstream(v1_ip, 0, body="v1") as v1, RecordingUpstream(v2_ip, v1.port, body="v2") as v2:
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
