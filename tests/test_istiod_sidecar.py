"""The local mesh's sidecars configured as istiod configures them, by value and on real Envoy.

The connection managers (Server header, stat prefixes), ALLOW_ANY passthrough, destinations
without a port, and wildcard VirtualService hosts. Retries are in test_istiod_retries.py,
clusters (load balancer, DestinationRule lookup) in test_istiod_clusters.py. Each test names
the istio/istio source (tag 1.28.0) it follows. The real-Envoy tests run the local mesh's own
Envoy launcher on the translator's output (tests/envoy_builders.py Proxies), with upstreams in this
process on random loopback addresses.
"""

from pathlib import Path

import pytest

from conformance.errors import UnsupportedResource
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.model import Service, ServicePort, app_port
from conformance.targets.local.translator import translate
from tests.builders import (
    RATINGS_VHOST,
    ALL_V1_DR,
    BOOKINFO_SERVICES,
    INGRESS,
    NS,
    REVIEWS_HOST,
    REVIEWS_VHOST,
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
from tests.envoy_builders import (
    Proxies,
    RecordingUpstream,
    direct_pod,
    envoy_counters,
    loopback_addresses,
    one_port_service,
    through,
)



# ---------------------------------------------------------------------------------------------
# The Server header and stat prefixes: the HTTP connection managers as listener.go builds them


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
    [gateway_listener] = translate(INGRESS, mesh(gateway("gw", ["*"]))).listeners
    gateway_hcm = hcm_of(gateway_listener)
    assert (gateway_hcm["stat_prefix"], gateway_hcm["server_name"]) == ("outbound_0.0.0.0_8080;", "istio-envoy")


def test_client_sees_envoy_as_server_and_stats_carry_istios_names(tmp_path: Path, loopback_ips: list[str]) -> None:
    """proxy_headers.go: the server's inbound sidecar overwrites the app's Server header with
    "istio-envoy", then the client's outbound sidecar overwrites it with "envoy", which is what an
    in-mesh client of Istio sees. The stats are named with listener.go's prefixes and
    cluster_builder.go's cluster stat names, each ending with ";"."""
    client_ip, server_ip = loopback_addresses(loopback_ips, 2)
    client = make_pod("client", client_ip, {"app": "client"}, ports=())
    server = make_pod("web", server_ip, {"app": "web"}, ports=(9080,))
    with RecordingUpstream(server_ip, app_port(9080), body="web"):  # Python's server says "BaseHTTP/..."
        state = mesh(services=(one_port_service("web", 9080),), pods=(client, server))
        with Proxies(tmp_path) as proxies:
            client_proxy, server_proxy = proxies.start(client, state), proxies.start(server, state)
            direct = through(server_ip, "/", port=9080)
            assert (direct.status, direct.body, direct.headers["server"]) == (200, "web", "istio-envoy")
            reply = through(client_ip, "http://web:9080/")
            assert (reply.status, reply.body, reply.headers["server"]) == (200, "web", "envoy")
            assert envoy_counters(client_proxy)["http.outbound_127.0.0.1_15001;.downstream_rq_2xx"] == 1
            web_cluster = f"cluster.outbound|9080||web.{NS}.svc.cluster.local;"
            assert envoy_counters(client_proxy)[f"{web_cluster}.upstream_rq_200"] == 1
            assert envoy_counters(server_proxy)["http.inbound_0.0.0.0_9080;.downstream_rq_2xx"] == 2
            assert envoy_counters(server_proxy)["cluster.inbound|9080||;.upstream_rq_200"] == 2


# ---------------------------------------------------------------------------------------------
# ALLOW_ANY: a host no service names goes to the PassthroughCluster


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
    assert "PassthroughCluster" not in {c["name"] for c in translate(INGRESS, mesh()).clusters}


def test_a_host_no_service_names_passes_through_to_the_address_it_names(
    tmp_path: Path, loopback_ips: list[str]
) -> None:
    """httproute.go buildCatchAllVirtualHost: under ALLOW_ANY an unknown host reaches its original
    destination (here the host:port the request names) instead of a 404."""
    client_ip, outside_ip = loopback_addresses(loopback_ips, 2)
    with RecordingUpstream(outside_ip, 0, body="outside the mesh") as outside:
        client = make_pod("client", client_ip, {"app": "client"}, ports=())
        with Proxies(tmp_path) as proxies:
            proxy = proxies.start(client, mesh(pods=(client,)))
            reply = through(client_ip, f"http://{outside_ip}:{outside.port}/")
            assert (reply.status, reply.body) == (200, "outside the mesh")
            assert outside.seen[0]["x-envoy-attempt-count"] == "1"
            assert envoy_counters(proxy)["cluster.PassthroughCluster;.upstream_rq_200"] == 1
            # A name with no address behind it goes there too, and finds no host: 503, not 404.
            assert through(client_ip, "http://nowhere.example:8080/").status == 503


# ---------------------------------------------------------------------------------------------
# A destination without a port


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
    ingress = translate(INGRESS, mesh(gateway("gw", ["*"]), front, services=(*BOOKINFO_SERVICES, multi)))
    [vhost] = ingress.routes["http.8080"]["virtual_hosts"]
    assert vhost["routes"][0]["route"]["cluster"] == f"outbound|8080||multi.{NS}.svc.cluster.local"


def test_destination_port_the_service_lacks_answers_503_no_cluster(tmp_path: Path, loopback_ips: list[str]) -> None:
    """route.go GetDestinationCluster names outbound|<listener port>||<host>, which does not exist
    when the service lacks that port: Envoy answers 503 with no body (NC), not "no healthy upstream"."""
    client_ip, web_ip = loopback_addresses(loopback_ips, 2)
    with RecordingUpstream(web_ip, 0, body="web") as web:
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
# Wildcard VirtualService hosts for sidecars


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
    client_ip, web_ip = loopback_addresses(loopback_ips, 2)
    with RecordingUpstream(web_ip, 0, body="web") as web:
        client = make_pod("client", client_ip, {"app": "client"}, ports=())
        pods = (client, direct_pod("web", web_ip, {"app": "web"}, web.port))
        services = (one_port_service("web", web.port),
                    one_port_service("other", web.port, selector={"app": "web"}))
        abort = {"abort": {"httpStatus": 418, "percentage": {"value": 100}}}
        teapot = virtual_service("all", [{"route": [to("web")], "fault": abort}], hosts=[f"*.{NS}.svc.cluster.local"])
        exact = virtual_service("web", [{"route": [to("web")]}])
        with Proxies(tmp_path) as proxies:
            proxies.start(client, mesh(teapot, exact, services=services, pods=pods))
            assert through(client_ip, "http://other:9080/").status == 418
            assert (through(client_ip, "http://web:9080/").body) == "web"
