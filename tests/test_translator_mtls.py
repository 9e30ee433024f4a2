"""Mutual TLS in the local mesh, as istiod configures it (istio/istio, tag 1.28.0):

- inbound: pilot/pkg/networking/core/filterchain_options.go (chains per mode, HTTP), listener_inbound.go
  (buildInboundListeners, populateListenerFilters, buildSidecarInboundHTTPOpts: X-Forwarded-Client-Cert),
  pilot/pkg/security/authn/utils/utils.go BuildInboundTLS, pilot/pkg/security/model/authentication.go;
- outbound: pilot/pkg/networking/core/cluster_tls.go (auto mTLS, ISTIO_MUTUAL, DISABLE),
  cluster_builder.go (SNI), pilot/pkg/xds/endpoints/mtls_checker.go and endpoint_builder.go (endpoints
  marked tlsMode istio), pilot/pkg/model/push_context.go (BestEffortInferServiceMTLSMode, service accounts);
- the listener_builder.go filter order: authorization before the fault filter and the router.

Translation tests read the resources; the others run real Envoys fed by the local control plane, with
their SDS secrets, and look at what a connection gets.
"""

import http.client
import json
import ssl
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from conformance.errors import ManifestError, UnsupportedResource
from conformance.names import spiffe_id
from conformance.targets.local.apps.bookinfo import RATINGS_UNAVAILABLE
from conformance.targets.local.envoy import EnvoyProxy
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.model import MeshState, Pod, Service, ServicePort, app_port
from conformance.targets.local.objects import namespace_doc
from conformance.targets.local.target import LocalClient
from conformance.targets.local.translator import ProxyConfig, authorization, translate
from conformance.targets.local.translator.mutants import NO_PEER_VERIFICATION, SHARED_IDENTITY, STRICT_AS_PERMISSIVE
from conformance.targets.local.translator.resources import SECRET_TYPE
from conformance.targets.local.validate import check_document
from tests.builders import INGRESS, NS, WHOLE_MESH, gateway, gateway_vs, make_pod, manifest_docs, running_local_mesh
from tests.envoy_builders import (
    Proxies,
    RecordingUpstream,
    certificate_hash,
    direct_pod,
    envoy_counters,
    injected_pod,
    peer_authentication,
    through,
    tls_client_context,
    tls_get,
    with_security,
)

HTTP_PORT, OTHER_PORT = 8080, 9090  # the server's container ports
SERVICE_PORT, OTHER_SERVICE_PORT = 8000, 9000
SERVER_ID = spiffe_id(NS, "httpbin")
CLIENT_ID = spiffe_id(NS, "client")
SECURE_CLUSTER = f"outbound|{SERVICE_PORT}||httpbin.{NS}.svc.cluster.local"
PLAIN_CLUSTER = f"outbound|{SERVICE_PORT}||plain.{NS}.svc.cluster.local"
XFCC = "x-forwarded-client-cert"
TLS_MATCH = {"tlsMode": "istio"}
TLS_MODE = {"security.istio.io/tlsMode": "istio"}
# Envoy's answer when the server closes the connection after the request went out (response flag UC).
CONNECTION_TERMINATION = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"


def destination_rule(host: str, mode: str, port_modes: dict[int, str] | None = None) -> dict:
    policy: dict = {"tls": {"mode": mode}}
    if port_modes:
        policy["portLevelSettings"] = [{"port": {"number": p}, "tls": {"mode": m}} for p, m in port_modes.items()]
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": host, "namespace": NS},
            "spec": {"host": host, "trafficPolicy": policy}}


@dataclass(frozen=True)
class Pods:
    client: Pod  # a sidecar without ports
    server: Pod  # httpbin: injected, container ports 8080 and 9090
    plain: Pod  # no sidecar, on 8080


def pods_on(ips: list[str]) -> Pods:
    return Pods(injected_pod("client", ips[0], ()), injected_pod("httpbin", ips[1], (HTTP_PORT, OTHER_PORT)),
                direct_pod("plain", ips[2], {"app": "plain"}, HTTP_PORT))


def state_of(pods: Pods, *docs: dict, mutants: frozenset[str] = frozenset()) -> MeshState:
    services = (
        Service("httpbin", NS, (ServicePort("http", SERVICE_PORT, HTTP_PORT),
                                ServicePort("http-other", OTHER_SERVICE_PORT, OTHER_PORT)), {"app": "httpbin"}),
        Service("plain", NS, (ServicePort("http", SERVICE_PORT, HTTP_PORT),), {"app": "plain"}),
    )
    return with_security(MeshState(services, (pods.client, pods.server, pods.plain), mutants=mutants), *docs)


PODS = pods_on(["127.0.9.1", "127.0.9.2", "127.0.9.3"])


def inbound(config: ProxyConfig, port: int = HTTP_PORT) -> dict:
    [found] = [item for item in config.listeners if item["traffic_direction"] == "INBOUND" and
               item["address"]["socket_address"]["port_value"] == port]
    return found


def chains(config: ProxyConfig, port: int = HTTP_PORT) -> list[tuple[str, list[str] | None, bool]]:
    """Each inbound chain of the port: (transport protocol, ALPN matched, requires a client certificate)."""
    found = []
    for chain in inbound(config, port)["filter_chains"]:
        tls = (chain.get("transport_socket") or {}).get("typed_config", {})
        match = chain["filter_chain_match"]
        found.append((match["transport_protocol"], match.get("application_protocols"),
                      bool(tls.get("require_client_certificate"))))
    return found


def cluster(config: ProxyConfig, name: str) -> dict:
    [found] = [c for c in config.clusters if c["name"] == name]
    return found


def marked(config: ProxyConfig, name: str) -> list[bool]:
    """Whether each endpoint of the cluster is marked for Istio's mutual TLS."""
    return [lb.get("metadata") == {"filter_metadata": {"envoy.transport_socket_match": TLS_MATCH}}
            for group in config.endpoints[name]["endpoints"] for lb in group["lb_endpoints"]]


# ---------------------------------------------------------------------------------------------
# Translation: the inbound listener


def test_inbound_chains_follow_the_mode() -> None:
    def server(*docs: dict) -> ProxyConfig:
        return translate(PODS.server, state_of(PODS, *docs))

    istio_alpns = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
    assert chains(server()) == [("tls", istio_alpns, True), ("raw_buffer", None, False)]  # none: PERMISSIVE
    assert chains(server(peer_authentication("default", "STRICT"))) == [("tls", None, True)]
    assert chains(server(peer_authentication("default", "DISABLE"))) == [("raw_buffer", None, False)]
    # The TLS inspector only where a chain matches TLS; no timeout for it (protocolDetectionTimeout 0s).
    strict = inbound(server(peer_authentication("default", "STRICT")))
    assert [f["name"] for f in strict["listener_filters"]] == ["envoy.filters.listener.tls_inspector"]
    assert strict["listener_filters_timeout"] == "0s" and strict["continue_on_listener_filters_timeout"]
    assert "listener_filters" not in inbound(server(peer_authentication("default", "DISABLE")))


def test_the_server_tls_context_names_istio_agents_secrets_and_requires_a_client_certificate() -> None:
    [chain] = inbound(translate(PODS.server, state_of(PODS, peer_authentication("default", "STRICT"))))["filter_chains"]
    assert chain["filter_chain_match"]["destination_port"] == HTTP_PORT and chain["name"] == f"0.0.0.0_{HTTP_PORT}"
    socket = chain["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    context = socket["typed_config"]
    common = context["common_tls_context"]
    assert [s["name"] for s in common["tls_certificate_sds_secret_configs"]] == ["default"]
    validation = common["combined_validation_context"]
    assert validation["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    assert validation["default_validation_context"] == {}  # any identity of the mesh
    assert context["require_client_certificate"] is True
    assert common["alpn_protocols"] == ["h2", "http/1.1"]
    assert common["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    # Over the proxy's ADS stream, waiting as long as they take.
    assert common["tls_certificate_sds_secret_configs"][0]["sds_config"]["ads"] == {}


def test_port_level_modes_give_each_port_its_chains() -> None:
    policy = peer_authentication("httpbin", "STRICT", selector={"app": "httpbin"}, port_modes={HTTP_PORT: "DISABLE"})
    config = translate(PODS.server, state_of(PODS, peer_authentication("default", "PERMISSIVE"), policy))
    assert chains(config, HTTP_PORT) == [("raw_buffer", None, False)]
    assert chains(config, OTHER_PORT) == [("tls", None, True)]


def test_the_inbound_connection_manager_forwards_the_client_certificate_and_runs_authorization_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """proxy_headers.go: APPEND_FORWARD, subject, URI and DNS; listener_builder.go: the authorization
    plugin's filters before the fault filter and the router, on every chain."""
    rbac = {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}}
    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(authorization, "inbound_filters",
                        lambda pod, index: asked.append((pod.name, index.state.pods[0].name)) or [rbac])
    for chain in inbound(translate(PODS.server, state_of(PODS)))["filter_chains"]:
        hcm = chain["filters"][0]["typed_config"]
        assert hcm["forward_client_cert_details"] == "APPEND_FORWARD"
        assert hcm["set_current_client_cert_details"] == {"subject": True, "uri": True, "dns": True}
        assert [f["name"] for f in hcm["http_filters"]] == [
            "envoy.filters.http.rbac", "envoy.filters.http.fault", "envoy.filters.http.router"]
    assert asked == [("httpbin", "client")]  # once per proxy


# ---------------------------------------------------------------------------------------------
# Translation: the outbound clusters and their endpoints


def test_auto_mtls_clusters_match_on_endpoint_metadata() -> None:
    not_ready = replace(injected_pod("httpbin", "127.0.9.9", (HTTP_PORT,), labels={"version": "v2"}),
                        name="httpbin-2", service_account="httpbin-v2", ready=False)
    state = replace(state_of(PODS), pods=(*state_of(PODS).pods, not_ready))
    config = translate(PODS.client, state)
    secure = cluster(config, SECURE_CLUSTER)
    assert "transport_socket" not in secure
    tls_match, plaintext = secure["transport_socket_matches"]
    assert (tls_match["name"], tls_match["match"]) == ("tlsMode-istio", TLS_MATCH)
    assert (plaintext["name"], plaintext["match"]) == ("tlsMode-disabled", {})
    assert plaintext["transport_socket"]["name"] == "envoy.transport_sockets.raw_buffer"
    upstream = tls_match["transport_socket"]["typed_config"]
    assert upstream["sni"] == f"outbound_.{SERVICE_PORT}_._.httpbin.{NS}.svc.cluster.local"
    common = upstream["common_tls_context"]
    assert common["alpn_protocols"] == ["istio-peer-exchange", "istio"]
    assert [s["name"] for s in common["tls_certificate_sds_secret_configs"]] == ["default"]
    validation = common["combined_validation_context"]
    assert validation["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    # Every workload of the service, ready or not, sorted.
    assert validation["default_validation_context"]["match_subject_alt_names"] == [
        {"exact": SERVER_ID}, {"exact": spiffe_id(NS, "httpbin-v2")}]
    # Only ready pods are endpoints; the injected one is marked, the plain one is not.
    assert marked(config, SECURE_CLUSTER) == [True]
    assert marked(config, PLAIN_CLUSTER) == [False]
    # The uninjected server's cluster has the same matches: its endpoint picks plaintext.
    assert cluster(config, PLAIN_CLUSTER)["transport_socket_matches"][1]["name"] == "tlsMode-disabled"


def test_subset_clusters_carry_their_subset_in_the_sni() -> None:
    subsets = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": "httpbin", "namespace": NS},
               "spec": {"host": "httpbin", "subsets": [{"name": "v1", "labels": {"app": "httpbin"}}]}}
    config = translate(PODS.client, state_of(PODS, subsets))
    name = f"outbound|{SERVICE_PORT}|v1|httpbin.{NS}.svc.cluster.local"
    upstream = cluster(config, name)["transport_socket_matches"][0]["transport_socket"]["typed_config"]
    assert upstream["sni"] == f"outbound_.{SERVICE_PORT}_.v1_.httpbin.{NS}.svc.cluster.local"
    assert marked(config, name) == [True]


def test_a_port_or_namespace_that_disables_mtls_is_sent_plaintext() -> None:
    """The endpoint of a port its workload DISABLEs is not marked; a namespace that DISABLEs mutual TLS
    turns auto mTLS off for its services' clusters altogether."""
    port_off = peer_authentication("httpbin", "STRICT", selector={"app": "httpbin"}, port_modes={HTTP_PORT: "DISABLE"})
    config = translate(PODS.client, state_of(PODS, port_off))
    assert marked(config, SECURE_CLUSTER) == [False]
    assert marked(config, f"outbound|{OTHER_SERVICE_PORT}||httpbin.{NS}.svc.cluster.local") == [True]
    off = translate(PODS.client, state_of(PODS, peer_authentication("default", "DISABLE")))
    assert "transport_socket_matches" not in cluster(off, SECURE_CLUSTER) and marked(off, SECURE_CLUSTER) == [False]
    mesh_off = translate(PODS.client, state_of(PODS, peer_authentication("default", "DISABLE", namespace="istio-system")))
    assert "transport_socket_matches" not in cluster(mesh_off, SECURE_CLUSTER)


def test_destination_rule_tls_decides_for_every_endpoint() -> None:
    disable = translate(PODS.client, state_of(PODS, destination_rule("httpbin", "DISABLE")))
    assert {"transport_socket", "transport_socket_matches"}.isdisjoint(cluster(disable, SECURE_CLUSTER))
    assert marked(disable, SECURE_CLUSTER) == [False]
    mutual = translate(PODS.client, state_of(PODS, destination_rule("plain", "ISTIO_MUTUAL")))
    forced = cluster(mutual, PLAIN_CLUSTER)
    assert "transport_socket_matches" not in forced  # TLS to every endpoint, sidecar or not
    assert forced["transport_socket"]["typed_config"]["sni"] == f"outbound_.{SERVICE_PORT}_._.plain.{NS}.svc.cluster.local"
    assert marked(mutual, PLAIN_CLUSTER) == [True]
    # A port-level setting replaces the top-level one for its port.
    per_port = translate(PODS.client, state_of(PODS, destination_rule("httpbin", "DISABLE", {OTHER_SERVICE_PORT: "ISTIO_MUTUAL"})))
    assert "transport_socket" not in cluster(per_port, SECURE_CLUSTER)
    assert "transport_socket" in cluster(per_port, f"outbound|{OTHER_SERVICE_PORT}||httpbin.{NS}.svc.cluster.local")


def test_the_gateway_uses_auto_mtls_toward_sidecars() -> None:
    server = make_pod("productpage-v1", "127.0.9.4", {"app": "productpage", **TLS_MODE})
    state = MeshState((Service("productpage", NS, (ServicePort("http", 9080, 9080),), {"app": "productpage"}),),
                      (server, INGRESS), gateways=(gateway("gw", ["*"]),),
                      virtual_services=(gateway_vs("gw", ["*"], ["istio-system/gw"]),))
    config = translate(INGRESS, state)
    name = f"outbound|9080||productpage.{NS}.svc.cluster.local"
    assert cluster(config, name)["transport_socket_matches"][0]["match"] == TLS_MATCH
    assert marked(config, name) == [True]


# ---------------------------------------------------------------------------------------------
# Translation: the mutants


def test_strict_as_permissive_serves_strict_ports_as_permissive_and_nothing_else_changes() -> None:
    strict = peer_authentication("default", "STRICT")
    plain = translate(PODS.server, state_of(PODS, strict))
    mutated = translate(PODS.server, state_of(PODS, strict, mutants=frozenset({STRICT_AS_PERMISSIVE})))
    assert chains(plain) == [("tls", None, True)]
    assert chains(mutated) == chains(translate(PODS.server, state_of(PODS))) == [
        ("tls", ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"], True),
        ("raw_buffer", None, False)]
    disable = peer_authentication("default", "DISABLE")
    assert translate(PODS.server, state_of(PODS, disable, mutants=frozenset({STRICT_AS_PERMISSIVE}))) == \
        translate(PODS.server, state_of(PODS, disable))


def test_no_peer_verification_asks_no_port_for_a_client_certificate() -> None:
    strict = peer_authentication("default", "STRICT")
    [chain] = inbound(translate(PODS.server, state_of(PODS, strict, mutants=frozenset({NO_PEER_VERIFICATION}))))[
        "filter_chains"]
    context = chain["transport_socket"]["typed_config"]
    assert "require_client_certificate" not in context
    assert "combined_validation_context" not in context["common_tls_context"]
    # PERMISSIVE ports' mutual-TLS chain too; without the mutant, it verifies.
    assert chains(translate(PODS.server, state_of(PODS, mutants=frozenset({NO_PEER_VERIFICATION}))))[0][2] is False
    assert chains(translate(PODS.server, state_of(PODS)))[0][2] is True


def test_shared_identity_gives_every_workload_one_certificate_identity(tmp_path: Path) -> None:
    """mesh.py _secrets_of: the mutant's mesh serves each proxy spiffe://cluster.local/ns/default/sa/default."""
    def identity(mesh: LocalMesh) -> list[str]:
        secrets = mesh._secrets_of(PODS.server)
        chain = secrets["default"]["tls_certificate"]["certificate_chain"]["inline_string"]
        san = x509.load_pem_x509_certificate(chain.encode()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        return san.get_values_for_type(x509.UniformResourceIdentifier)

    for mutants, expected in ((frozenset(), SERVER_ID), (frozenset({SHARED_IDENTITY}), spiffe_id("default", "default"))):
        mesh = LocalMesh(tmp_path / f"run-{len(mutants)}", mutants)
        try:
            assert identity(mesh) == [expected]
        finally:
            mesh.stop()


# ---------------------------------------------------------------------------------------------
# What the local mesh admits


def test_peer_authentications_and_destination_rule_tls_are_admitted() -> None:
    policy = peer_authentication("httpbin", "STRICT", selector={"app": "httpbin"}, port_modes={8080: "DISABLE"})
    for doc in (policy, {**policy, "apiVersion": "security.istio.io/v1beta1"}, destination_rule("httpbin", "ISTIO_MUTUAL"),
                destination_rule("httpbin", "DISABLE", {9000: "ISTIO_MUTUAL"})):
        check_supported(doc)
        check_document(doc, NS)


@pytest.mark.parametrize(("doc", "refused"), [
    (destination_rule("httpbin", "SIMPLE"), r"field spec\.trafficPolicy\.tls\.mode SIMPLE is not implemented"),
    (destination_rule("httpbin", "DISABLE", {9000: "MUTUAL"}),
     r"field spec\.trafficPolicy\.portLevelSettings\[0\]\.tls\.mode MUTUAL is not implemented"),
    ({**destination_rule("httpbin", "ISTIO_MUTUAL"), "spec": {"host": "httpbin", "trafficPolicy": {
        "tls": {"mode": "ISTIO_MUTUAL", "sni": "x"}}}}, r"field spec\.trafficPolicy\.tls\.sni is not implemented"),
    ({**destination_rule("httpbin", "ISTIO_MUTUAL"), "spec": {"host": "httpbin", "subsets": [
        {"name": "v1", "labels": {}, "trafficPolicy": {"tls": {"mode": "DISABLE"}}}]}},
     r"field spec\.subsets\[0\]\.trafficPolicy is not implemented"),
    ({**peer_authentication("p", "STRICT"), "apiVersion": "security.istio.io/v1alpha1"}, "apiVersion"),
    ({**peer_authentication("p", "STRICT"), "spec": {"mtls": {"mode": "STRICT"}, "targetRefs": []}},
     r"field spec\.targetRefs is not implemented"),
])
def test_what_is_not_implemented_is_refused_by_name(doc: dict, refused: str) -> None:
    with pytest.raises(UnsupportedResource, match=refused):
        check_supported(doc)


@pytest.mark.parametrize(("port_modes", "selector", "refused"), [
    ({8080: "DISABLE"}, None, "mesh/namespace peer authentication cannot have port level mTLS"),
    ({}, {"app": "httpbin"}, "port level mTLS, if defined, must have at least one element"),
    ({0: "DISABLE"}, {"app": "httpbin"}, r"port must be in range 1\.\.65535"),
    ({"http": "DISABLE"}, {"app": "httpbin"}, r"port must be in range 1\.\.65535"),
])
def test_port_level_mtls_is_validated_as_istio_validates_it(port_modes: dict, selector: dict | None, refused: str) -> None:
    with pytest.raises(ManifestError, match=refused):
        check_supported(peer_authentication("p", "STRICT", selector=selector, port_modes=port_modes))


# ---------------------------------------------------------------------------------------------
# Real Envoys: a client sidecar, the injected httpbin's sidecar, its app, and a plain server


@dataclass(frozen=True)
class Bed:
    proxies: Proxies
    pods: Pods
    client: EnvoyProxy
    server: EnvoyProxy
    app: RecordingUpstream  # httpbin's app, behind its sidecar, on 8080's app port
    other_app: RecordingUpstream  # behind 9090
    plain: RecordingUpstream  # the plain server

    def via_sidecar(self, service: str = "httpbin", port: int = SERVICE_PORT) -> tuple[int, str, dict[str, str] | None]:
        """A request from the client app through its sidecar: (status, body, the headers the app got)."""
        upstreams = (self.app, self.other_app, self.plain)
        before = [len(upstream.seen) for upstream in upstreams]
        reply = through(self.pods.client.ip, f"http://{service}.{NS}:{port}/headers")
        arrived = [u.seen[-1] for u, count in zip(upstreams, before, strict=True) if len(u.seen) > count]
        assert len(arrived) <= 1, arrived
        return reply.status, reply.body, (arrived[0] if arrived else None)

    def handshakes(self) -> int:
        """TLS handshakes the server's sidecar completed on its 8080 listener."""
        return envoy_counters(self.server).get(f"listener.{self.pods.server.ip}_{HTTP_PORT}.ssl.handshake", 0)


@contextmanager
def bed(tmp_path: Path, loopback_ips: list[str], *docs: dict, mutants: frozenset[str] = frozenset()) -> Iterator[Bed]:
    pods = pods_on(loopback_ips)
    state = state_of(pods, *docs, mutants=mutants)
    with ExitStack() as stack:
        app = stack.enter_context(RecordingUpstream(pods.server.ip, app_port(HTTP_PORT)))
        other = stack.enter_context(RecordingUpstream(pods.server.ip, app_port(OTHER_PORT)))
        plain = stack.enter_context(RecordingUpstream(pods.plain.ip, HTTP_PORT))
        proxies = stack.enter_context(Proxies(tmp_path))
        server = proxies.start(pods.server, state)
        client = proxies.start(pods.client, state)
        yield Bed(proxies, pods, client, server, app, other, plain)


def plaintext_get(ip: str, port: int, headers: dict[str, str] | None = None) -> int:
    """GET / straight to ip:port, as a client without sidecar (kube-proxy's way): the status."""
    conn = http.client.HTTPConnection(ip, port, timeout=5)
    try:
        conn.request("GET", "/", headers=headers or {})
        return conn.getresponse().status
    finally:
        conn.close()


def test_strict_refuses_plaintext_and_clients_without_a_certificate_and_serves_sidecars(
        tmp_path: Path, loopback_ips: list[str]) -> None:
    """STRICT: a plaintext connection matches no filter chain and Envoy resets it (no HTTP answer); a
    TLS client without certificate fails the handshake (Envoy closes: SSLEOFError, fail_verify_no_cert);
    the client sidecar gets 200 and the app sees X-Forwarded-Client-Cert with both identities."""
    with bed(tmp_path, loopback_ips, peer_authentication("default", "STRICT")) as b:
        status, _, seen = b.via_sidecar()
        assert status == 200 and seen is not None
        client_cert = b.proxies.certificates[b.client.node_id]
        assert seen[XFCC] == (f'By={SERVER_ID};Hash={certificate_hash(client_cert)};Subject="";URI={CLIENT_ID}')
        with pytest.raises(ConnectionResetError):
            plaintext_get(b.pods.server.ip, HTTP_PORT)
        with pytest.raises(ssl.SSLEOFError):
            tls_get(b.pods.server.ip, HTTP_PORT, "/", tls_client_context(b.proxies.ca))
        # With a certificate of the mesh, a client without sidecar is served: XFCC says who it is.
        stranger = b.proxies.ca.issue("elsewhere", "stranger")
        reply = tls_get(b.pods.server.ip, HTTP_PORT, "/", tls_client_context(b.proxies.ca, stranger))
        assert reply.status == 200 and b.app.seen[-1][XFCC].endswith(f"URI={spiffe_id('elsewhere', 'stranger')}")
        counters = envoy_counters(b.server)
        listener = f"listener.{b.pods.server.ip}_{HTTP_PORT}"
        assert counters[f"{listener}.no_filter_chain_match"] == 1
        assert counters[f"{listener}.ssl.fail_verify_no_cert"] == 1
        assert counters[f"{listener}.ssl.handshake"] == 2
        assert len(b.app.seen) == 2  # the refused ones never reached the app


def test_permissive_serves_plaintext_and_mutual_tls_and_only_mutual_tls_names_a_client(
        tmp_path: Path, loopback_ips: list[str]) -> None:
    """PERMISSIVE (no policy at all): plaintext is served, without X-Forwarded-Client-Cert even when
    the client sends one (Envoy sanitizes it); the sidecar's mutual TLS is served with it."""
    with bed(tmp_path, loopback_ips) as b:
        assert plaintext_get(b.pods.server.ip, HTTP_PORT, {XFCC: f"URI={SERVER_ID}"}) == 200
        assert XFCC not in b.app.seen[-1]
        assert b.handshakes() == 0
        status, _, seen = b.via_sidecar()
        assert status == 200 and seen is not None and seen[XFCC].endswith(f"URI={CLIENT_ID}")
        assert b.handshakes() == 1


def test_disable_serves_plaintext_only(tmp_path: Path, loopback_ips: list[str]) -> None:
    """DISABLE: no TLS chain and no TLS inspector: TLS bytes reach the plaintext HTTP chain, which
    answers them with HTTP (the client's handshake fails: wrong version number); the client sidecar
    sends plaintext (its namespace disables mutual TLS: no auto mTLS)."""
    with bed(tmp_path, loopback_ips, peer_authentication("default", "DISABLE")) as b:
        assert plaintext_get(b.pods.server.ip, HTTP_PORT) == 200
        with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"):
            tls_get(b.pods.server.ip, HTTP_PORT, "/", tls_client_context(b.proxies.ca, b.proxies.ca.issue(NS, "x")))
        status, _, seen = b.via_sidecar()
        assert status == 200 and seen is not None and XFCC not in seen
        assert b.handshakes() == 0


def test_a_port_level_disable_under_strict_opens_that_port_alone(tmp_path: Path, loopback_ips: list[str]) -> None:
    policy = peer_authentication("httpbin", "STRICT", selector={"app": "httpbin"}, port_modes={HTTP_PORT: "DISABLE"})
    with bed(tmp_path, loopback_ips, policy) as b:
        assert plaintext_get(b.pods.server.ip, HTTP_PORT) == 200
        with pytest.raises(ConnectionResetError):
            plaintext_get(b.pods.server.ip, OTHER_PORT)
        # The client sidecar sends plaintext to 8080 (its endpoint is not marked) and mutual TLS to 9090.
        status, _, seen = b.via_sidecar()
        assert status == 200 and seen is not None and XFCC not in seen
        status, _, seen = b.via_sidecar(port=OTHER_SERVICE_PORT)
        assert status == 200 and seen is not None and seen[XFCC].endswith(f"URI={CLIENT_ID}")


def test_auto_mtls_speaks_tls_to_sidecars_and_plaintext_to_the_others(tmp_path: Path, loopback_ips: list[str]) -> None:
    """The same client cluster settings: TLS to the injected server (its listener's handshakes go up,
    and the client cluster's), plaintext to the server without sidecar (no handshake)."""
    with bed(tmp_path, loopback_ips) as b:
        assert b.via_sidecar()[0] == 200 and b.handshakes() == 1
        status, _, seen = b.via_sidecar("plain")
        assert status == 200 and seen is not None and seen is b.plain.seen[-1] and XFCC not in seen
        counters = envoy_counters(b.client)
        assert counters[f"cluster.{SECURE_CLUSTER};.ssl.handshake"] == 1
        assert counters.get(f"cluster.{PLAIN_CLUSTER};.ssl.handshake", 0) == 0
        assert counters[f"cluster.{PLAIN_CLUSTER};.upstream_rq_200"] == 1


def test_destination_rule_disable_toward_strict_fails_and_istio_mutual_succeeds(
        tmp_path: Path, loopback_ips: list[str]) -> None:
    """DR DISABLE: the client sends plaintext, the STRICT server resets the connection after the
    request went out: 503 with Envoy's "connection termination" (response flag UC), not retried
    (Istio's default retryOn has no reset). DR ISTIO_MUTUAL: 200 with the client's identity."""
    strict = peer_authentication("default", "STRICT")
    with bed(tmp_path, loopback_ips, strict, destination_rule("httpbin", "DISABLE")) as b:
        status, body, seen = b.via_sidecar()
        assert (status, body, seen) == (503, CONNECTION_TERMINATION, None)
        counters = envoy_counters(b.client)
        assert counters[f"cluster.{SECURE_CLUSTER};.upstream_cx_destroy_remote_with_active_rq"] == 1
        assert counters.get(f"cluster.{SECURE_CLUSTER};.upstream_rq_retry", 0) == 0

        b.proxies.push(b.client, translate(b.pods.client, state_of(b.pods, strict, destination_rule("httpbin", "ISTIO_MUTUAL"))))
        status, _, seen = b.via_sidecar()
        assert status == 200 and seen is not None and seen[XFCC].endswith(f"URI={CLIENT_ID}")


def test_a_rotated_certificate_is_presented_on_the_next_handshake_without_restarting_envoy(
        tmp_path: Path, loopback_ips: list[str]) -> None:
    """A new `default` pushed over the proxy's ADS stream (one SDS response, the stream kept): the
    server's next handshake presents it; the client's rotation shows in XFCC's Hash."""
    with bed(tmp_path, loopback_ips, peer_authentication("default", "STRICT")) as b:
        context = tls_client_context(b.proxies.ca, b.proxies.ca.issue("elsewhere", "stranger"))
        first = b.proxies.certificates[b.server.node_id]
        assert tls_get(b.pods.server.ip, HTTP_PORT, "/", context).server_cert.serial_number == first.serial
        pid, pushes = b.server.child.pid if b.server.child else None, b.proxies.control_plane.pushes(b.server.node_id)
        streams = envoy_counters(b.server)["cluster.xds-grpc.upstream_cx_total"]

        second = b.proxies.rotate(b.server)
        assert second.serial != first.serial
        assert tls_get(b.pods.server.ip, HTTP_PORT, "/", context).server_cert.serial_number == second.serial
        assert b.proxies.control_plane.pushes(b.server.node_id) == pushes + 1
        assert b.server.child is not None and (b.server.child.pid, b.server.child.alive()) == (pid, True)
        assert envoy_counters(b.server)["cluster.xds-grpc.upstream_cx_total"] == streams

        # The client's rotation shows on its next new connection (one to the other port: a
        # connection its pool holds keeps the certificate it was made with).
        old = b.proxies.certificates[b.client.node_id]
        before = b.via_sidecar()[2]
        rotated = b.proxies.rotate(b.client)
        after = b.via_sidecar(port=OTHER_SERVICE_PORT)[2]
        assert before is not None and f"Hash={certificate_hash(old)};" in before[XFCC]
        assert after is not None and f"Hash={certificate_hash(rotated)};" in after[XFCC]
        assert certificate_hash(old) != certificate_hash(rotated)


# ---------------------------------------------------------------------------------------------
# Real Envoys: what each mutant changes


def test_strict_as_permissive_lets_plaintext_in(tmp_path: Path, loopback_ips: list[str]) -> None:
    with bed(tmp_path, loopback_ips, peer_authentication("default", "STRICT"),
             mutants=frozenset({STRICT_AS_PERMISSIVE})) as b:
        assert plaintext_get(b.pods.server.ip, HTTP_PORT) == 200


def test_no_peer_verification_serves_a_tls_client_without_certificate(tmp_path: Path, loopback_ips: list[str]) -> None:
    with bed(tmp_path, loopback_ips, peer_authentication("default", "STRICT"),
             mutants=frozenset({NO_PEER_VERIFICATION})) as b:
        assert tls_get(b.pods.server.ip, HTTP_PORT, "/", tls_client_context(b.proxies.ca)).status == 200
        assert XFCC not in b.app.seen[-1]  # no client certificate: nothing to forward
        with pytest.raises(ConnectionResetError):
            plaintext_get(b.pods.server.ip, HTTP_PORT)  # still TLS only


def test_a_server_with_another_identity_fails_the_clients_verification(tmp_path: Path, loopback_ips: list[str]) -> None:
    """A server presenting an identity its service's workloads do not have (here the shared
    identity, without the mutant's clients): the client sidecar refuses the handshake
    (fail_verify_san), retries it as a connect failure, and answers 503 "remote connection failure"."""
    pods = pods_on(loopback_ips)
    state = state_of(pods)
    with RecordingUpstream(pods.server.ip, app_port(HTTP_PORT)), Proxies(tmp_path) as proxies:
        shared = proxies.ca.issue("default", "default")
        proxies.start(pods.server, state, shared)
        client = proxies.start(pods.client, state, proxies.ca.issue("default", "default"))
        reply = through(pods.client.ip, f"http://httpbin.{NS}:{SERVICE_PORT}/")
        assert (reply.status, reply.body) == (503, "upstream connect error or disconnect/reset before headers. "
                                                    "retried and the latest reset reason: remote connection failure")
        assert envoy_counters(client)[f"cluster.{SECURE_CLUSTER};.ssl.fail_verify_san"] == 3  # Istio's 2 retries


def test_under_the_shared_identity_mutant_clients_accept_it_and_servers_see_it(tmp_path: Path,
                                                                               loopback_ips: list[str]) -> None:
    """shared-identity: every certificate says spiffe://cluster.local/ns/default/sa/default and the
    clients accept it from every server: traffic flows, but the server sees no client's own identity."""
    pods = pods_on(loopback_ips)
    state = state_of(pods, mutants=frozenset({SHARED_IDENTITY}))
    with RecordingUpstream(pods.server.ip, app_port(HTTP_PORT)) as app, Proxies(tmp_path) as proxies:
        proxies.start(pods.server, state, proxies.ca.issue("default", "default"))
        proxies.start(pods.client, state, proxies.ca.issue("default", "default"))
        reply = through(pods.client.ip, f"http://httpbin.{NS}:{SERVICE_PORT}/")
        assert reply.status == 200, reply
        shared = spiffe_id("default", "default")
        assert app.seen[-1][XFCC].startswith(f"By={shared};") and app.seen[-1][XFCC].endswith(f"URI={shared}")


# ---------------------------------------------------------------------------------------------
# The whole local mesh


def ready_client(mesh: LocalMesh, namespace: str, name: str) -> LocalClient:
    [pod] = [p for p in mesh.running() if p.model.namespace == namespace and p.workload.name == name]
    return LocalClient(pod, 10.0)


@WHOLE_MESH
def test_a_strict_bookinfo_namespace_serves_its_sidecars_and_refuses_a_client_without_one(tmp_path: Path) -> None:
    """Bookinfo, httpbin and curl injected in one namespace under a namespace-wide STRICT
    PeerAuthentication; a curl without sidecar in another namespace. The injected curl gets 200
    from httpbin (which sees its identity) and from Bookinfo, whose services call each other over
    mutual TLS; the other curl gets no HTTP answer (its connection is reset)."""
    strict = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": "default"},
              "spec": {"mtls": {"mode": "STRICT"}}}
    with running_local_mesh(tmp_path) as mesh:
        mesh.apply([namespace_doc(NS, {"istio-injection": "enabled"}), namespace_doc("outside", {})], "")
        mesh.apply([strict, *manifest_docs("bookinfo/bookinfo.yaml"), *manifest_docs("clients/httpbin.yaml"),
                    *manifest_docs("clients/curl.yaml")], NS)
        mesh.apply(manifest_docs("clients/curl.yaml"), "outside")
        mesh.wait_ready(None, 60, 0.05)
        inside, outside = ready_client(mesh, NS, "curl"), ready_client(mesh, "outside", "curl")
        url = f"http://httpbin.{NS}:8000/headers"

        [reply] = inside.send(url).replies
        assert reply.status == 200, reply
        # The hash of the certificate the mesh serves the curl's sidecar.
        assert inside.pod.proxy is not None
        served = mesh.control_plane.resources(inside.pod.proxy.node_id, SECRET_TYPE)["default"]
        chain = served["tls_certificate"]["certificate_chain"]["inline_string"]
        digest = x509.load_pem_x509_certificate(chain.encode()).fingerprint(hashes.SHA256()).hex()
        assert json.loads(reply.body)["headers"]["X-Forwarded-Client-Cert"] == [
            f'By={spiffe_id(NS, "httpbin")};Hash={digest};Subject="";URI={spiffe_id(NS, "curl")}']
        # productpage's API answers with the status its backend gave it: details, reviews (which
        # call ratings), and ratings, each over mutual TLS between sidecars.
        for path in ("", "/reviews", "/ratings"):
            [api] = inside.send(f"http://productpage.{NS}:9080/api/v1/products/0{path}").replies
            assert api.status == 200 and RATINGS_UNAVAILABLE not in api.body, api

        # Plaintext to httpbin's inbound port matches no filter chain: Envoy resets the connection.
        [refused] = outside.send(url).replies
        assert (refused.status, refused.error) == (0, "connection reset"), refused
