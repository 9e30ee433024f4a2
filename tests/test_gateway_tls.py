"""TLS at the ingress gateway (IngressTLS): Secrets as the local API server stores them, the Gateway
servers the subset admits, the translator's HTTPS chains and redirects, the mutant, and real Envoy
handshakes through the local control plane (istio/istio tag 1.28.0 gateway.go, model/gateway.go)."""

import base64
import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import ManifestError, UnsupportedResource
from conformance.probes.edge_tls import EdgeCA, Handshake, HttpsProbe, KeyPair, tls_secret
from conformance.targets.base import Batch, Reply
from conformance.targets.local import credentials
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.model import MeshState, Pod
from conformance.targets.local.translator import ProxyConfig, translate
from conformance.targets.local.translator.mutants import GATEWAY_IGNORES_SNI
from conformance.targets.local.validate import check_document
from conformance.verdicts.edge_tls import certificate_for, not_the_hosts_certificate, redirects_to_https
from tests.builders import GATEWAY_NS, INGRESS, NS, gateway, gateway_vs, hcm_of, mesh
from tests.envoy_builders import Proxies, direct_pod

HOST = "secure.example.com"
OTHER = "other.example.com"
CREDENTIAL = "secure-cert"
CA = EdgeCA()
PAIR = CA.issue(HOST)


def https_gateway(name: str, hosts: list[str], credential: str = CREDENTIAL, port: int = 8443,
                  tls: dict[str, Any] | None = None) -> dict:
    doc = gateway(name, hosts, port=port, protocol="HTTPS")
    doc["spec"]["servers"][0]["port"]["name"] = "https"
    doc["spec"]["servers"][0]["tls"] = tls if tls is not None else {"mode": "SIMPLE", "credentialName": credential}
    return doc


def secret(name: str = CREDENTIAL, namespace: str = GATEWAY_NS, pair: KeyPair = PAIR) -> dict:
    return tls_secret(name, namespace, {}, pair)


def ingress(*docs: dict, secrets: tuple[dict, ...] = (), mutants: frozenset[str] = frozenset()) -> ProxyConfig:
    return translate(INGRESS, replace(mesh(*docs, mutants=mutants), secrets=secrets))


# ---------------------------------------------------------------------------------------------
# Secrets and the servers the subset admits


def test_a_tls_secret_is_stored_as_the_api_server_stores_it() -> None:
    check_document(secret(), GATEWAY_NS)
    assert credentials.key_pair(secret()) == (PAIR.chain_pem, PAIR.key_pem)
    missing = secret()
    del missing["data"]["tls.key"]
    with pytest.raises(ManifestError, match=r"data\[tls.key\]: Required value"):
        check_document(missing, GATEWAY_NS)
    garbled = secret()
    garbled["data"]["tls.crt"] = "not base64!"
    with pytest.raises(ManifestError, match=r"data\[tls.crt\]: illegal base64 data"):
        check_document(garbled, GATEWAY_NS)
    other = {**secret(), "type": "kubernetes.io/dockerconfigjson"}
    with pytest.raises(UnsupportedResource, match="type 'kubernetes.io/dockerconfigjson' is not implemented"):
        check_document(other, GATEWAY_NS)
    with pytest.raises(UnsupportedResource, match="field stringData is not implemented"):
        check_document({**secret(), "stringData": {"a": "b"}}, GATEWAY_NS)


def test_istiod_reads_cert_and_key_first_and_serves_nothing_of_an_invalid_pair() -> None:
    generic = secret()
    generic["data"] = {"cert": generic["data"]["tls.crt"], "key": generic["data"]["tls.key"],
                       "tls.crt": base64.b64encode(b"ignored").decode(), "tls.key": base64.b64encode(b"x").decode()}
    assert credentials.key_pair(generic) == (PAIR.chain_pem, PAIR.key_pem)
    broken = secret()
    broken["data"]["tls.crt"] = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nAAAA\n").decode()
    assert credentials.key_pair(broken) is None


@pytest.mark.parametrize(("tls", "message"), [
    (None, "an HTTPS server without tls"),
    ({"credentialName": CREDENTIAL}, "tls.mode PASSTHROUGH is not implemented"),  # the default mode
    ({"mode": "MUTUAL", "credentialName": CREDENTIAL}, "tls.mode MUTUAL is not implemented"),
    ({"mode": "ISTIO_MUTUAL"}, "tls.mode ISTIO_MUTUAL is not implemented"),
    ({"mode": "SIMPLE"}, "tls.credentialName '': the local mesh implements only the name of a Secret"),
    ({"mode": "SIMPLE", "credentialName": "other-ns/cert"}, "tls.credentialName 'other-ns/cert'"),
    ({"mode": "SIMPLE", "credentialName": "sds://cert"}, "tls.credentialName 'sds://cert'"),
    ({"mode": "SIMPLE", "credentialName": CREDENTIAL, "serverCertificate": "/etc/cert.pem"},
     "field spec.servers[0].tls.serverCertificate is not implemented"),
])
def test_https_servers_other_than_simple_with_a_credential_are_refused(tls: dict | None, message: str) -> None:
    doc = https_gateway("gw", [HOST])
    if tls is None:
        del doc["spec"]["servers"][0]["tls"]
    else:
        doc["spec"]["servers"][0]["tls"] = tls
    with pytest.raises(UnsupportedResource, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_supported(doc)


def test_an_http_server_may_only_redirect() -> None:
    doc = gateway("gw", [HOST])
    doc["spec"]["servers"][0]["tls"] = {"httpsRedirect": True}
    check_supported(doc)
    doc["spec"]["servers"][0]["tls"] = {"mode": "SIMPLE", "credentialName": CREDENTIAL}
    with pytest.raises(UnsupportedResource, match=r"tls.credentialName on an HTTP server"):
        check_supported(doc)


# ---------------------------------------------------------------------------------------------
# The translator


def test_an_https_server_is_a_tls_chain_matching_its_hosts_with_its_credential_and_route() -> None:
    config = ingress(https_gateway("gw", [HOST, f"{NS}/{HOST}"]), gateway_vs("vs", [HOST], [f"{GATEWAY_NS}/gw"]),
                     secrets=(secret(),))
    [listener] = config.listeners
    assert listener["address"]["socket_address"]["port_value"] == 8443
    assert [f["name"] for f in listener["listener_filters"]] == ["envoy.filters.listener.tls_inspector"]
    [chain] = listener["filter_chains"]
    assert chain["filter_chain_match"] == {"server_names": [HOST]}  # namespace dropped, once
    context = chain["transport_socket"]["typed_config"]
    assert context["require_client_certificate"] is False
    assert context["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]
    [sds] = context["common_tls_context"]["tls_certificate_sds_secret_configs"]
    assert sds["name"] == f"kubernetes://{CREDENTIAL}"
    route_name = f"https.8443.https.gw.{GATEWAY_NS}"
    assert hcm_of({"filter_chains": [chain]})["rds"]["route_config_name"] == route_name
    assert [v["domains"] for v in config.routes[route_name]["virtual_hosts"]] == [[HOST]]
    served = config.secrets[f"kubernetes://{CREDENTIAL}"]["tls_certificate"]
    assert served["certificate_chain"]["inline_string"] == PAIR.chain_pem


def test_only_valid_secrets_of_the_gateways_namespace_are_served() -> None:
    elsewhere = secret("elsewhere", namespace=NS)
    broken = secret("broken")
    broken["data"]["tls.key"] = base64.b64encode(b"not a key").decode()
    config = ingress(https_gateway("gw", [HOST]), secrets=(secret(), elsewhere, broken))
    assert set(config.secrets) == {f"kubernetes://{CREDENTIAL}"}


def test_a_wildcard_host_matches_any_sni_and_a_duplicate_host_is_skipped() -> None:
    wildcard = https_gateway("a", ["*"])
    duplicate = https_gateway("b", ["*"], credential="other")
    [listener] = ingress(wildcard, duplicate).listeners
    [chain] = listener["filter_chains"]
    assert "filter_chain_match" not in chain


def test_https_redirect_makes_every_host_of_the_server_answer_301_with_or_without_routes() -> None:
    doc = gateway("gw", [HOST, OTHER])
    doc["spec"]["servers"][0]["tls"] = {"httpsRedirect": True}
    config = ingress(doc, gateway_vs("vs", [HOST], [f"{GATEWAY_NS}/gw"]))
    vhosts = config.routes["http.8080"]["virtual_hosts"]
    assert [(v["domains"], v["require_tls"], bool(v["routes"])) for v in vhosts] == [
        ([OTHER], "ALL", False), ([HOST], "ALL", True)]
    plain = ingress(gateway("gw", [HOST]), gateway_vs("vs", [HOST], [f"{GATEWAY_NS}/gw"]))
    assert "require_tls" not in plain.routes["http.8080"]["virtual_hosts"][0]


def test_http_and_https_servers_on_one_port_are_refused() -> None:
    mixed = https_gateway("gw", [HOST], port=8080)
    mixed["spec"]["servers"].append(copy.deepcopy(gateway("gw", [OTHER])["spec"]["servers"][0]))
    with pytest.raises(UnsupportedResource, match="port 8080 of the gateway has both HTTP and HTTPS servers"):
        ingress(mixed)


def test_the_mutant_lets_the_first_chain_match_any_sni() -> None:
    docs = (https_gateway("a", [HOST]), https_gateway("b", [OTHER], credential="other"))
    plain = ingress(*docs)
    mutated = ingress(*docs, mutants=frozenset({GATEWAY_IGNORES_SNI}))
    assert [c.get("filter_chain_match") for c in plain.listeners[0]["filter_chains"]] == [
        {"server_names": [HOST]}, {"server_names": [OTHER]}]
    assert [c.get("filter_chain_match") for c in mutated.listeners[0]["filter_chains"]] == [
        None, {"server_names": [OTHER]}]


def test_kept_credentials_outlive_their_secret_for_the_proxy_that_had_them() -> None:
    kept = credentials.KeptCredentials()
    first = {"kubernetes://a": {"name": "a", "v": 1}}
    assert kept.kept("gw", first) == first
    assert kept.kept("gw", {}) == first  # the Secret went: Envoy keeps what it had
    assert kept.kept("gw", {"kubernetes://a": {"name": "a", "v": 2}}) == {"kubernetes://a": {"name": "a", "v": 2}}
    assert kept.kept("other", {}) == {}
    kept.forget("gw")
    assert kept.kept("gw", {}) == {}


# ---------------------------------------------------------------------------------------------
# Real Envoy


@pytest.mark.parametrize("mutants", [frozenset(), frozenset({GATEWAY_IGNORES_SNI})])
def test_envoy_serves_the_credential_for_its_host_and_nothing_for_another(
        tmp_path: Path, loopback_ips: list[str], mutants: frozenset[str]) -> None:
    pod = gateway_pod(loopback_ips[0])
    state = MeshState(pods=(pod,), gateways=(https_gateway("gw", [HOST]),), secrets=(secret(),), mutants=mutants)
    probe = HttpsProbe(5.0)
    url = f"https://{pod.ip}:8443"
    with Proxies(tmp_path) as proxies:
        proxies.start(pod, state)
        served = probe.handshake(url, HOST, CA.root_pem)
        unserved = probe.handshake(url, OTHER, CA.root_pem)
    assert (served.presented, served.verified, served.dns_names) == (True, True, (HOST,)), served.describe()
    assert served.from_ca and "meshconf test CA" in served.issuer
    verdict = not_the_hosts_certificate(unserved, HOST)
    if mutants:
        assert (unserved.presented, unserved.verified, unserved.dns_names) == (True, False, (HOST,))
        assert "Hostname mismatch" in str(unserved.error)
        assert not verdict.ok and f"SNI {OTHER} got {HOST}'s certificate" in verdict.message
    else:
        assert not unserved.presented, unserved.describe()
        assert verdict.ok and "no filter chain serves it" in verdict.message


def test_on_a_port_shared_with_a_star_host_another_name_gets_that_servers_certificate(
        tmp_path: Path, loopback_ips: list[str]) -> None:
    """As on a cluster's shared ingress gateway: a `*` server's chain matches any SNI the test's
    server does not, so the unserved name gets a certificate, but not the test host's."""
    pod = gateway_pod(loopback_ips[0])
    elsewhere = EdgeCA("another team's CA")
    state = MeshState(pods=(pod,), gateways=(https_gateway("gw", [HOST]), https_gateway("any", ["*"], "any-cert")),
                      secrets=(secret(), secret("any-cert", pair=elsewhere.issue("*.example.org"))))
    probe = HttpsProbe(5.0)
    with Proxies(tmp_path) as proxies:
        proxies.start(pod, state)
        served = probe.handshake(f"https://{pod.ip}:8443", HOST, CA.root_pem)
        unserved = probe.handshake(f"https://{pod.ip}:8443", OTHER, CA.root_pem)
    assert certificate_for(served, HOST).ok, served.describe()
    assert (unserved.presented, unserved.dns_names, unserved.from_ca) == (True, ("*.example.org",), False)
    verdict = not_the_hosts_certificate(unserved, HOST)
    assert verdict.ok and verdict.message.endswith(f"another server's certificate, not {HOST}'s"), verdict.message


def gateway_pod(ip: str) -> Pod:
    pod = direct_pod("istio-ingressgateway", ip, {"istio": "ingressgateway"}, 0, namespace=GATEWAY_NS)
    return replace(pod, proxy="gateway", container_ports=())


# ---------------------------------------------------------------------------------------------
# Verdicts


def test_the_verdicts_pass_only_on_what_they_name() -> None:
    good = Handshake(HOST, True, (HOST,), verified=True, issuer="CN=meshconf test CA", from_ca=True)
    assert certificate_for(good, HOST).ok and not not_the_hosts_certificate(good, HOST).ok
    wrong = Handshake(OTHER, True, (HOST,), verified=False, error="Hostname mismatch", issuer="CN=meshconf test CA",
                      from_ca=True)
    assert not certificate_for(wrong, OTHER).ok
    assert not_the_hosts_certificate(wrong, HOST).message.endswith(
        f"SNI {OTHER}: a certificate for {HOST} issued by CN=meshconf test CA (not verified: Hostname mismatch)")
    # The test CA's certificate under another name, or another CA's naming the host: still the host's.
    assert not not_the_hosts_certificate(Handshake(OTHER, True, (OTHER,), from_ca=True), HOST).ok
    assert not not_the_hosts_certificate(Handshake(OTHER, True, (HOST,), issuer="CN=other"), HOST).ok
    # A shared gateway's `*` server: another CA's certificate for other names passes, as no certificate does.
    star = Handshake(OTHER, True, ("*.example.org",), error="unable to get local issuer", issuer="CN=other")
    assert not_the_hosts_certificate(star, HOST).ok and not certificate_for(star, OTHER).ok
    refused = Handshake(OTHER, False, error="ConnectionResetError")
    assert not_the_hosts_certificate(refused, HOST).ok and not certificate_for(refused, OTHER).ok
    location = f"https://{HOST}/productpage"
    redirect = Reply(301, {"location": location}, "")
    assert redirects_to_https(Batch("u", "c", (redirect, redirect)), location).ok
    assert not redirects_to_https(Batch("u", "c", (redirect, Reply(200, {}, "page"))), location).ok
    assert not redirects_to_https(Batch("u", "c", ()), location).ok
