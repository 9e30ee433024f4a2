"""The local mesh's ingress gateway and mesh HTTPRoutes (GAMMA) configured as istiod does.

Each behaviour is shown with requests through real Envoys of a local mesh (the
ingress gateway, or a client's sidecar), and pinned in the translation where that
says more. Sources: istio/istio at tag 1.28.0 (pilot/pkg/networking/core/gateway.go,
route/route.go, pilot/pkg/config/kube/gateway/), kubernetes-sigs/gateway-api v1.4.0.
"""

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from conformance import manifests
from conformance.errors import ManifestError
from conformance.names import GATEWAY_HTTP_PORT, INGRESS_GATEWAY, ISTIO_NAMESPACE
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.model import OUTBOUND_PORT, ServicePort
from conformance.targets.local.objects import namespace_doc
from conformance.targets.local.target import GATEWAY_MANIFEST
from conformance.targets.local.translator import translate
from tests.builders import (
    BOOKINFO_SERVICES,
    CURL,
    INGRESS,
    NS,
    REVIEWS_VHOST,
    deployment_doc,
    eventually,
    gateway,
    hcm_of,
    http_get,
    make_service,
    mesh,
    mesh_http_route,
    mesh_processes,
    outbound_routes,
    service_doc,
    sidecar,
    to,
    virtual_service,
)

WEB = "web"  # the backends, without sidecars: the gateway and sidecars reach the pods directly
CLIENTS = "clients"  # an injected client whose sidecar applies the HTTPRoutes
GATEWAY_REF = f"{ISTIO_NAMESPACE}/gw"


class Edge:
    """A running local mesh: the ingress gateway, backends alpha and beta, httpbin, a client."""

    def __init__(self, mesh: LocalMesh) -> None:
        self.mesh = mesh

    def _pod_ip(self, workload: str) -> str:
        return next(p.model.ip for p in self.mesh.running() if p.workload.name == workload)

    def through_gateway(self, path: str, host: str, headers: Mapping[str, str] | None = None
                        ) -> tuple[int, dict[str, str], str]:
        # From 127.0.0.1, so the gateway's peer address is known.
        return http_get(self._pod_ip(INGRESS_GATEWAY), GATEWAY_HTTP_PORT, path, {"Host": host, **(headers or {})},
                        source="127.0.0.1")

    def through_sidecar(self, url: str, headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        """A request of the client app, sent to its sidecar's outbound listener (its HTTP proxy)."""
        return http_get(self._pod_ip("curl"), OUTBOUND_PORT, url, headers)

    @contextmanager
    def applied(self, docs: Sequence[dict], namespace: str) -> Iterator[None]:
        """Documents applied for one test, deleted after it."""
        self.mesh.apply(docs, namespace)
        try:
            yield
        finally:
            self.mesh.delete(docs, namespace)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    run_dir = tmp_path_factory.mktemp("edge") / "run"
    local = LocalMesh(run_dir)
    try:
        local.apply([namespace_doc(ISTIO_NAMESPACE, {})], ISTIO_NAMESPACE)
        local.apply(manifests.load(GATEWAY_MANIFEST), ISTIO_NAMESPACE)
        local.apply([namespace_doc(WEB, {}), namespace_doc(CLIENTS, {"istio-injection": "enabled"})], WEB)
        local.apply([
            service_doc("alpha", {9080: 9080}), deployment_doc("alpha"),
            service_doc("beta", {9080: 9080}), deployment_doc("beta"),
            # Two ports onto alpha's one; and one port, for path and header matches.
            service_doc("multi", {9080: 9080, 9090: 9080}, {"app": "alpha"}),
            service_doc("paths", {9080: 9080}, {"app": "alpha"}),
            *manifests.load("clients/httpbin.yaml"),
        ], WEB)
        local.apply(manifests.load("clients/curl.yaml"), CLIENTS)
        local.wait_ready(None, 60, 0.05)
        yield Edge(local)
    finally:
        local.stop()
    assert mesh_processes(str(run_dir)) == []


def served_by(reply: tuple[int, dict[str, str], str]) -> str:
    """`alpha` or `beta` for a reviews reply, else the status (a 404 from Envoy: no route)."""
    status, _, body = reply
    if status != 200:
        return f"status {status}"
    return str(json.loads(body)["podname"]).split("-", 1)[0]


# ---------------------------------------------------------------------------------------------
# The gateway's host matching: the Host's port is ignored


def test_a_host_with_another_port_than_the_listener_is_routed(edge: Edge) -> None:
    """gateway.go buildGatewayHTTPRouteConfig sets ignore_port_in_host_matching, and its
    virtual hosts carry the bare host: `Host: h:80` (the Service port in front of the
    server's 8080) reaches the route for h."""
    host = "bookinfo.meshconf.test"
    docs = [gateway("gw", [host]),
            virtual_service("front", [{"route": [to("alpha", port=9080)]}], [host], WEB, [GATEWAY_REF])]
    with edge.applied(docs, ISTIO_NAMESPACE):
        eventually(lambda: served_by(edge.through_gateway("/reviews/0", f"{host}:80")) == "alpha",
                   "the gateway to route Host bookinfo.meshconf.test:80")
        for other in (host, f"{host}:{GATEWAY_HTTP_PORT}", f"{host}:31380", host.upper()):
            assert served_by(edge.through_gateway("/reviews/0", other)) == "alpha", other
        assert served_by(edge.through_gateway("/reviews/0", "other.meshconf.test:80")) == "status 404"


def test_gateway_route_config_matches_hosts_without_port() -> None:
    config = translate(INGRESS, mesh(gateway("gw", ["*"]), virtual_service(
        "front", [{"route": [to("reviews")]}], ["Shop.Example.com", "*.example.org"], NS, [GATEWAY_REF])))
    route = config.routes["http.8080"]
    assert route["ignore_port_in_host_matching"] is True
    # Lower-cased, without port, sorted by name (util.SortVirtualHosts).
    assert [(vh["name"], vh["domains"]) for vh in route["virtual_hosts"]] == [
        ("*.example.org:8080", ["*.example.org"]), ("shop.example.com:8080", ["shop.example.com"]),
    ]
    assert all(vh["include_request_attempt_count"] for vh in route["virtual_hosts"])


# ---------------------------------------------------------------------------------------------
# The gateway's connection manager: the mesh's edge


def test_the_gateway_appends_its_peer_to_x_forwarded_for(edge: Edge) -> None:
    """gateway.go: use_remote_address (createGatewayHTTPFilterChainOpts) with no trusted
    hops (gatewayTopology unset), and a client's X-Forwarded-Client-Cert dropped
    (buildGatewayConnectionManager: SANITIZE_SET)."""
    host = "echo.meshconf.test"
    docs = [gateway("gw", [host]),
            virtual_service("echo", [{"route": [to("httpbin", port=8000)]}], [host], WEB, [GATEWAY_REF])]
    spoofed = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Client-Cert": "By=spiffe://evil/ns/x/sa/y"}

    def echoed() -> dict[str, list[str]] | None:
        status, _, body = edge.through_gateway("/headers", host, spoofed)
        return json.loads(body)["headers"] if status == 200 else None

    with edge.applied(docs, ISTIO_NAMESPACE):
        headers = eventually(echoed, "the gateway to route echo.meshconf.test")
    # One hop appended to the client's: for a loopback peer Envoy writes its own address there
    # (envoyproxy/envoy source/common/http/conn_manager_utility.cc), and the peer is the client.
    [forwarded] = headers["X-Forwarded-For"]
    assert forwarded.split(",")[0] == "203.0.113.7" and len(forwarded.split(",")) == 2
    assert headers["X-Envoy-External-Address"] == ["127.0.0.1"]
    assert "X-Forwarded-Client-Cert" not in headers
    assert headers["X-Envoy-Attempt-Count"] == ["1"]


def test_gateway_connection_manager_settings() -> None:
    [listener] = translate(INGRESS, mesh(gateway("gw", ["*"]))).listeners
    hcm = hcm_of(listener)
    assert (hcm["use_remote_address"], hcm["xff_num_trusted_hops"]) == (True, 0)
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"
    assert hcm["set_current_client_cert_details"] == {"subject": True, "cert": True, "dns": True, "uri": True}


# ---------------------------------------------------------------------------------------------
# Several VirtualServices for one gateway host


def test_virtual_services_for_one_host_merge_with_catch_alls_last(edge: Edge) -> None:
    """route.go: each VirtualService's routes end at its first catch-all
    (BuildHTTPRoutesForVirtualService); gateway.go merges the VirtualServices of a host in
    creation order, then SortVHostRoutes moves catch-alls last, keeping their order."""
    host = "shop.meshconf.test"
    first = virtual_service("shop-first", [
        {"route": [to("beta", port=9080)]},
        # After a catch-all: left out, though sorting would put it before the catch-all.
        {"match": [{"uri": {"prefix": "/reviews/3"}}], "route": [to("alpha", port=9080)]},
    ], [host], WEB, [GATEWAY_REF])
    second = virtual_service("shop-second", [
        {"match": [{"uri": {"prefix": "/reviews/1"}}], "route": [to("alpha", port=9080)]},
    ], [host], WEB, [GATEWAY_REF])
    with edge.applied([gateway("gw", [host]), first, second], ISTIO_NAMESPACE):
        eventually(lambda: served_by(edge.through_gateway("/reviews/1", host)) == "alpha",
                   "the second VirtualService's route before the first's catch-all")
        assert served_by(edge.through_gateway("/reviews/2", host)) == "beta"
        assert served_by(edge.through_gateway("/reviews/3", host)) == "beta"


def _gateways_sharing_a_host(host: str) -> list[dict]:
    """Gateways gw-a then gw-b, one port and host; VirtualService to-alpha (older) bound to
    gw-b, to-beta (newer) bound to gw-a, each routing /reviews to its backend."""
    def to_backend(name: str, gateway_name: str) -> dict:
        http = [{"match": [{"uri": {"prefix": "/reviews"}}], "route": [to(name, port=9080)]}]
        return virtual_service(f"to-{name}", http, [host], WEB, [f"{ISTIO_NAMESPACE}/{gateway_name}"])

    return [gateway("gw-a", [host]), gateway("gw-b", [host]), to_backend("alpha", "gw-b"), to_backend("beta", "gw-a")]


def test_gateway_routes_follow_servers_then_their_virtual_services(edge: Edge) -> None:
    """gateway.go buildGatewayHTTPRouteConfig loops over the port's servers (their Gateways in
    creation order), and for each over the VirtualServices bound to its Gateway: gw-a's
    VirtualService comes first although it is the newer, and its route wins."""
    host = "order.meshconf.test"
    docs = _gateways_sharing_a_host(host)
    config = translate(INGRESS, mesh(*docs, services=(*BOOKINFO_SERVICES, make_service("alpha", WEB),
                                                      make_service("beta", WEB))))
    [vhost] = config.routes["http.8080"]["virtual_hosts"]
    assert [route["route"]["cluster"] for route in vhost["routes"]] == [
        f"outbound|9080||{name}.{WEB}.svc.cluster.local" for name in ("beta", "alpha")
    ]
    with edge.applied(docs, ISTIO_NAMESPACE):
        eventually(lambda: served_by(edge.through_gateway("/reviews/1", host)) != "status 404",
                   "the gateway to route order.meshconf.test")
        assert {served_by(edge.through_gateway(f"/reviews/{n}", host)) for n in range(5)} == {"beta"}


def _gateway_routes(*http_lists: list[dict]) -> list[tuple[dict, str]]:
    docs = [virtual_service(f"vs{n}", http, ["shop.example.com"], NS, [GATEWAY_REF])
            for n, http in enumerate(http_lists)]
    config = translate(INGRESS, mesh(gateway("gw", ["*"]), *docs))
    [vhost] = config.routes["http.8080"]["virtual_hosts"]
    return [(route["match"], route["route"]["cluster"].split("|")[3].split(".")[0]) for route in vhost["routes"]]


def test_what_counts_as_a_catch_all() -> None:
    """route.go IsCatchAllRoute: prefix `/` or regex `.*`, with no header match."""
    assert _gateway_routes(
        [{"match": [{"uri": {"regex": ".*"}}], "route": [to("details")]}],
        [{"match": [{"uri": {"prefix": "/"}, "headers": {"end-user": {"exact": "jason"}}}], "route": [to("ratings")]},
         {"match": [{"uri": {"exact": "/x"}}], "route": [to("reviews")]}],
    ) == [
        ({"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]}, "ratings"),
        ({"path": "/x"}, "reviews"),
        ({"safe_regex": {"regex": ".*"}}, "details"),
    ]
    # A catch-all ends its VirtualService at its own match, not at the http route's last match.
    assert _gateway_routes(
        [{"match": [{"uri": {"prefix": "/"}}, {"uri": {"prefix": "/never"}}], "route": [to("details")]}],
    ) == [({"prefix": "/"}, "details")]


# ---------------------------------------------------------------------------------------------
# Mesh HTTPRoutes (GAMMA): routes for one Service with and without a parentRef port


def test_routes_with_and_without_port_are_not_merged(edge: Edge) -> None:
    """route_collections.go HTTPRouteCollection: one VirtualService per route namespace and
    parentRef port, the routes of each merged (mergeHTTPRoutes); a port limits it to that port
    (conversion.go augmentPortMatch). On a port, the sidecar keeps the oldest with routes there
    and drops the others' virtual host (httproute.go BuildSidecarOutboundVirtualHosts)."""
    ported = mesh_http_route("multi-ported", "multi", [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/reviews/1"}}],
         "backendRefs": [{"name": "beta", "port": 9080}]}], port=9080)
    portless = mesh_http_route("multi-portless", "multi", [{"backendRefs": [{"name": "beta", "port": 9080}]}])
    multi = f"http://multi.{WEB}.svc.cluster.local"
    with edge.applied([ported], WEB), edge.applied([portless], WEB):
        eventually(lambda: served_by(edge.through_sidecar(f"{multi}:9090/reviews/2")) == "beta",
                   "the route without port on port 9090")
        assert served_by(edge.through_sidecar(f"{multi}:9080/reviews/1")) == "beta"
        # The route without port is not merged into port 9080's: nothing matches there.
        assert served_by(edge.through_sidecar(f"{multi}:9080/reviews/2")) == "status 404"


def test_a_consumer_route_on_one_port_leaves_the_producer_routes_the_others() -> None:
    """The client's own namespace first (virtualservice.go SelectVirtualServices), per port:
    a consumer route limited to 9080 does not hide the producer's route on 9090."""
    multi = make_service("multi", NS, ServicePort("http", 9080, 9080), ServicePort("http-admin", 9090, 9090))
    producer = mesh_http_route("multi", "multi", [{"backendRefs": [{"name": "reviews", "port": 9080}]}])
    producer["metadata"]["namespace"] = NS
    consumer = mesh_http_route("multi", "multi", [{"backendRefs": [{"name": "details", "port": 9080}]}], port=9080)
    consumer["metadata"]["namespace"] = CURL.namespace
    consumer["spec"]["parentRefs"][0]["namespace"] = NS
    config = sidecar(mesh(producer, consumer, services=(*BOOKINFO_SERVICES, multi)), CURL)

    def cluster(port: int) -> str:
        return outbound_routes(config, f"multi.{NS}.svc.cluster.local:{port}")[0]["route"]["cluster"]

    assert cluster(9080) == f"outbound|9080||details.{CURL.namespace}.svc.cluster.local"
    assert cluster(9090) == f"outbound|9080||reviews.{NS}.svc.cluster.local"


# ---------------------------------------------------------------------------------------------
# Mesh HTTPRoutes: path prefixes and repeated header names


def test_a_prefix_loses_its_trailing_slash(edge: Edge) -> None:
    """conversion.go createURIMatch trims a trailing `/` (route.go: path_separated_prefix):
    `/reviews/1/` matches /reviews/1 and below, not /reviews/10."""
    route = mesh_http_route("paths", "paths", [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/reviews/1/"}}],
         "backendRefs": [{"name": "beta", "port": 9080}]}])
    paths = f"http://paths.{WEB}.svc.cluster.local:9080"
    with edge.applied([route], WEB):
        eventually(lambda: served_by(edge.through_sidecar(f"{paths}/reviews/1")) == "beta", "the prefix route")
        assert served_by(edge.through_sidecar(f"{paths}/reviews/10")) == "status 404"


def test_only_the_first_of_equivalent_header_names_counts(edge: Edge) -> None:
    """Gateway API HTTPHeaderMatch.Name: of entries whose names differ only in case, only the
    first is considered (Istio 1.28 keeps both: README, what the local mesh is not)."""
    route = mesh_http_route("paths", "paths", [
        {"matches": [{"headers": [{"name": "X-Version", "value": "one"}, {"name": "x-version", "value": "two"}]}],
         "backendRefs": [{"name": "beta", "port": 9080}]}])
    paths = f"http://paths.{WEB}.svc.cluster.local:9080/reviews/2"
    with edge.applied([route], WEB):
        eventually(lambda: served_by(edge.through_sidecar(paths, {"x-version": "one"})) == "beta",
                   "the header route, on its first header match")
        assert served_by(edge.through_sidecar(paths, {"x-version": "two"})) == "status 404"


def _gamma_match(path: dict[str, Any], headers: list[dict] | None = None) -> dict:
    match: dict[str, Any] = {"path": path}
    if headers is not None:
        match["headers"] = headers
    route = mesh_http_route("reviews", "reviews", [{"matches": [match], "backendRefs": [{"name": "reviews", "port": 9080}]}])
    route["metadata"]["namespace"] = NS
    return outbound_routes(sidecar(mesh(route)), REVIEWS_VHOST)[0]["match"]


@pytest.mark.parametrize(("value", "envoy"), [
    ("/", {"prefix": "/"}),
    ("/foo", {"path_separated_prefix": "/foo"}),
    ("/foo/", {"path_separated_prefix": "/foo"}),
])
def test_path_prefix_values(value: str, envoy: dict) -> None:
    assert _gamma_match({"type": "PathPrefix", "value": value}) == envoy


@pytest.mark.parametrize(("path_type", "value", "message"), [
    # The HTTPRoute CRD's rules for Exact and PathPrefix (apis/v1/httproute_types.go HTTPPathMatch).
    ("PathPrefix", "/foo//", "must not contain '//'"),
    ("Exact", "/a/./b", "must not contain '/./'"),
    ("PathPrefix", "/a/%2Fb", "must not contain '%2F'"),
    ("Exact", "foo", "must be an absolute path"),
    ("PathPrefix", "/a/..", "must not end with '/..'"),
    ("Exact", "/a b", "must only contain valid path characters"),
])
def test_path_values_the_crd_refuses(path_type: str, value: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        _gamma_match({"type": path_type, "value": value})


def test_header_names_in_a_match() -> None:
    headers = [{"name": "X-Version", "value": "one"}, {"name": "end-user", "value": "jason"},
               {"name": "x-version", "value": "two"}]
    assert _gamma_match({"type": "PathPrefix", "value": "/"}, headers)["headers"] == [
        # The first X-Version only, and sorted by name as route.go TranslateRouteMatch.
        {"name": "X-Version", "string_match": {"exact": "one"}},
        {"name": "end-user", "string_match": {"exact": "jason"}},
    ]
    # The same name twice is refused, as the CRD (listType=map, listMapKey=name) does.
    with pytest.raises(ManifestError, match=r"headers\[1\]\.name: Duplicate value: 'end-user'"):
        _gamma_match({"type": "PathPrefix", "value": "/"}, [{"name": "end-user", "value": "a"},
                                                           {"name": "end-user", "value": "b"}])
