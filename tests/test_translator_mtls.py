"""Mutual TLS in the local mesh, as istiod configures it (istio/istio, tag 1.28.0): what the translator
writes, read from the resources, and what the local mesh admits. tests/test_mtls_envoy.py runs the
same configuration on real Envoys.

- inbound: pilot/pkg/networking/core/filterchain_options.go (chains per mode, HTTP), listener_inbound.go
  (buildInboundListeners, populateListenerFilters, buildSidecarInboundHTTPOpts: X-Forwarded-Client-Cert),
  pilot/pkg/security/authn/utils/utils.go BuildInboundTLS, pilot/pkg/security/model/authentication.go;
- outbound: pilot/pkg/networking/core/cluster_tls.go (auto mTLS, ISTIO_MUTUAL, DISABLE),
  cluster_builder.go (SNI), pilot/pkg/xds/endpoints/mtls_checker.go and endpoint_builder.go (endpoints
  marked tlsMode istio), pilot/pkg/model/push_context.go (BestEffortInferServiceMTLSMode, service accounts);
- the listener_builder.go filter order: authorization before the fault filter and the router.
"""

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509

from conformance.errors import ManifestError, UnsupportedResource
from conformance.names import spiffe_id
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.model import MeshState, Service, ServicePort
from conformance.targets.local.translator import ProxyConfig, authorization, translate
from conformance.targets.local.translator.mutants import NO_PEER_VERIFICATION, SHARED_IDENTITY, STRICT_AS_PERMISSIVE
from conformance.targets.local.validate import check_document
from tests.builders import INGRESS, NS, gateway, gateway_vs, make_pod
from tests.envoy_builders import injected_pod, peer_authentication
from tests.security_builders import (
    HTTP_PORT,
    OTHER_PORT,
    OTHER_SERVICE_PORT,
    PLAIN_CLUSTER,
    PODS,
    SECURE_CLUSTER,
    SERVER_ID,
    SERVICE_PORT,
    TLS_MATCH,
    TLS_MODE,
    state_of,
    tls_destination_rule,
)


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
    disable = translate(PODS.client, state_of(PODS, tls_destination_rule("httpbin", "DISABLE")))
    assert {"transport_socket", "transport_socket_matches"}.isdisjoint(cluster(disable, SECURE_CLUSTER))
    assert marked(disable, SECURE_CLUSTER) == [False]
    mutual = translate(PODS.client, state_of(PODS, tls_destination_rule("plain", "ISTIO_MUTUAL")))
    forced = cluster(mutual, PLAIN_CLUSTER)
    assert "transport_socket_matches" not in forced  # TLS to every endpoint, sidecar or not
    assert forced["transport_socket"]["typed_config"]["sni"] == f"outbound_.{SERVICE_PORT}_._.plain.{NS}.svc.cluster.local"
    assert marked(mutual, PLAIN_CLUSTER) == [True]
    # A port-level setting replaces the top-level one for its port.
    per_port = translate(PODS.client, state_of(PODS, tls_destination_rule("httpbin", "DISABLE", {OTHER_SERVICE_PORT: "ISTIO_MUTUAL"})))
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
    for doc in (policy, {**policy, "apiVersion": "security.istio.io/v1beta1"}, tls_destination_rule("httpbin", "ISTIO_MUTUAL"),
                tls_destination_rule("httpbin", "DISABLE", {9000: "ISTIO_MUTUAL"})):
        check_supported(doc)
        check_document(doc, NS)


@pytest.mark.parametrize(("doc", "refused"), [
    (tls_destination_rule("httpbin", "SIMPLE"), r"field spec\.trafficPolicy\.tls\.mode SIMPLE is not implemented"),
    (tls_destination_rule("httpbin", "DISABLE", {9000: "MUTUAL"}),
     r"field spec\.trafficPolicy\.portLevelSettings\[0\]\.tls\.mode MUTUAL is not implemented"),
    ({**tls_destination_rule("httpbin", "ISTIO_MUTUAL"), "spec": {"host": "httpbin", "trafficPolicy": {
        "tls": {"mode": "ISTIO_MUTUAL", "sni": "x"}}}}, r"field spec\.trafficPolicy\.tls\.sni is not implemented"),
    ({**tls_destination_rule("httpbin", "ISTIO_MUTUAL"), "spec": {"host": "httpbin", "subsets": [
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
