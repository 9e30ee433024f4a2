"""The local mesh's CA and the SDS secrets the control plane serves: each workload's certificate
carries its SPIFFE identity and chains to the mesh root; a real Envoy takes `default` over ADS,
terminates TLS with it, and serves a rotated certificate once the new secret is ACKed; Envoy
asks for no secret its configuration does not name (istio/istio pkg/security/security.go,
pkg/spiffe/spiffe.go; envoyproxy/envoy api/envoy/extensions/transport_sockets/tls/v3/secret.proto)."""

import datetime
import http.client
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conformance.targets.local.envoy import EnvoyProxy
from conformance.targets.local.model import Pod
from conformance.targets.local.translator import ProxyConfig
from conformance.targets.local.translator.clusters_listeners import http_listener, route_config
from conformance.targets.local.translator.resources import ADS_SOURCE
from conformance.targets.local.translator.resources import SECRET_TYPE
from conformance.targets.local.xds.protos import Converter, canonical
from conformance.targets.local.xds.secrets import (
    ROOT_SECRET,
    WORKLOAD_CERT_TTL,
    WORKLOAD_SECRET,
    MeshCA,
    WorkloadCert,
    sds_secrets,
    spiffe_id,
)
from conformance.targets.local.xds.snapshot import Snapshots
from tests.builders import eventually, make_pod
from tests.envoy_builders import Proxies, listeners_active

DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_PORT = 8443
LISTENER_TYPE = "inbound_8443"
BODY = "served over TLS"
ALL_SYNCED = {"CDS": "SYNCED", "EDS": "SYNCED", "LDS": "SYNCED", "RDS": "SYNCED", "SDS": "SYNCED"}


def leaf(cert: WorkloadCert) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert.chain_pem.encode())


def uri_sans(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)


# ---------------------------------------------------------------------------------------------
# The CA and the secrets, without Envoy


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA()


def test_a_workload_certificate_chains_to_the_mesh_root_and_to_no_other(ca: MeshCA) -> None:
    cert = leaf(ca.issue("bookinfo", "bookinfo-reviews"))
    cert.verify_directly_issued_by(ca.root)
    # Another mesh's root has the same name (O=cluster.local): only the signature tells them apart.
    other = MeshCA().root
    assert other.subject == ca.root.subject
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(other)


def test_the_root_is_a_ca_named_for_the_trust_domain(ca: MeshCA) -> None:
    assert ca.root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "cluster.local"
    assert ca.root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    ca.root.verify_directly_issued_by(ca.root)  # self-signed


def test_a_workload_certificate_carries_exactly_its_spiffe_id(ca: MeshCA) -> None:
    cert = leaf(ca.issue("bookinfo", "bookinfo-reviews"))
    assert spiffe_id("bookinfo", "bookinfo-reviews") == "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value == x509.SubjectAlternativeName(
        [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews")])
    assert san.critical and len(cert.subject) == 0  # the identity is the SAN alone, as Istio's
    assert uri_sans(leaf(ca.issue("tools", "curl"))) == ["spiffe://cluster.local/ns/tools/sa/curl"]


def test_a_workload_certificate_is_for_server_and_client_auth_and_not_a_ca(ca: MeshCA) -> None:
    cert = leaf(ca.issue("bookinfo", "bookinfo-reviews"))
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.digital_signature, usage.key_encipherment, usage.key_cert_sign) == (True, True, False)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def test_a_workload_certificate_lives_24h_and_each_has_its_own_serial_and_key(ca: MeshCA) -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    first, second = ca.issue("bookinfo", "bookinfo-reviews"), ca.issue("bookinfo", "bookinfo-reviews")
    cert = leaf(first)
    assert WORKLOAD_CERT_TTL == datetime.timedelta(hours=24)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(hours=24)
    assert cert.not_valid_before_utc <= before + datetime.timedelta(seconds=1)
    assert (first.serial, first.not_after) == (cert.serial_number, cert.not_valid_after_utc)
    assert first.serial != second.serial and first.key_pem != second.key_pem
    short = leaf(ca.issue("bookinfo", "bookinfo-reviews", ttl=datetime.timedelta(minutes=5)))
    assert short.not_valid_after_utc - short.not_valid_before_utc == datetime.timedelta(minutes=5)
    # The key is the certificate's own.
    key = serialization.load_pem_private_key(first.key_pem.encode(), password=None)
    assert key.public_key() == cert.public_key()


def test_sds_secrets_are_valid_envoy_secrets(ca: MeshCA) -> None:
    cert = ca.issue("bookinfo", "bookinfo-reviews")
    secrets = sds_secrets(cert, ca.root_pem)
    assert sorted(secrets) == sorted([WORKLOAD_SECRET, ROOT_SECRET]) == ["ROOTCA", "default"]
    converter = Converter()
    for name, secret in secrets.items():
        assert secret["name"] == name
        assert converter.to_any(canonical(secret), secret).type_url == SECRET_TYPE
    assert secrets["default"]["tls_certificate"]["certificate_chain"]["inline_string"] == cert.chain_pem
    assert secrets["default"]["tls_certificate"]["private_key"]["inline_string"] == cert.key_pem
    assert secrets["ROOTCA"]["validation_context"]["trusted_ca"]["inline_string"] == ca.root_pem
    # The conversion does check: a misspelt field is refused.
    broken = {**secrets["ROOTCA"], "validation_context": {"trusted_cas": {"inline_string": ca.root_pem}}}
    with pytest.raises(ValueError, match="trusted_cas"):
        converter.to_any(canonical(broken), broken)


# ---------------------------------------------------------------------------------------------
# A real Envoy takes its secrets over ADS


def tls_config(pod: Pod) -> ProxyConfig:
    """A listener on pod.ip:TLS_PORT terminating TLS with the `default` secret (asked for over
    ADS) and answering every request with BODY."""
    listener = http_listener(LISTENER_TYPE, pod.ip, TLS_PORT, LISTENER_TYPE, "tls_routes", "INBOUND")
    listener["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [{"name": WORKLOAD_SECRET, "sds_config": ADS_SOURCE}],
            },
        },
    }
    return plain_config(pod, listener)


def plain_config(pod: Pod, listener: dict | None = None) -> ProxyConfig:
    """`listener` (default: plain HTTP on pod.ip:TLS_PORT) with a route answering BODY."""
    if listener is None:
        listener = http_listener(LISTENER_TYPE, pod.ip, TLS_PORT, LISTENER_TYPE, "tls_routes", "INBOUND")
    route = route_config("tls_routes", [{
        "name": "all", "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": BODY}}}],
    }])
    return ProxyConfig(listeners=[listener], clusters=[], routes={"tls_routes": route})


def push(proxies: Proxies, snapshots: Snapshots, proxy: EnvoyProxy, config: ProxyConfig,
         secrets: dict[str, dict[str, Any]] | None) -> list[str]:
    """Give `proxy` `config` and `secrets`; once its Envoy runs, wait for its ACK. (Proxies.push
    serves no secrets.) Returns the proxies whose resources changed."""
    try:
        changed = proxies.control_plane.push({proxy.node_id: snapshots.of(config, secrets)})
    finally:
        snapshots.done()
    proxies.control_plane.wait_settled(changed, 10.0)
    return changed


def start(proxies: Proxies, snapshots: Snapshots, pod: Pod, config: ProxyConfig,
          secrets: dict[str, dict[str, Any]] | None) -> EnvoyProxy:
    """An Envoy for `pod`, once its listeners are active and it ACKed all it asked for."""
    proxy = EnvoyProxy(pod, proxies.run_dir, proxies.control_plane)
    push(proxies, snapshots, proxy, config, secrets)
    proxy.start(proxies.supervisor)
    names = [listener["name"] for listener in config.listeners]
    eventually(lambda: listeners_active(proxy, names), f"{pod.name}'s listeners {names}")
    proxies.control_plane.wait_settled([proxy.node_id], 10.0)
    return proxy


def client_context(root_pem: str) -> ssl.SSLContext:
    """A TLS client trusting `root_pem` alone. SPIFFE certificates name no host, so the peer is
    checked by its chain (strictly: RFC 5280 well-formedness too), not by a hostname."""
    context = ssl.create_default_context(cadata=root_pem)
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def fetch(ip: str, context: ssl.SSLContext) -> tuple[str, x509.Certificate]:
    """GET / over a new TLS connection: the body, and the certificate the server presented."""
    conn = http.client.HTTPSConnection(ip, TLS_PORT, context=context, timeout=10)
    try:
        conn.request("GET", "/")
        body = conn.getresponse().read().decode()
        assert conn.sock is not None
        der = conn.sock.getpeercert(binary_form=True)
        assert der is not None
        return body, x509.load_der_x509_certificate(der)
    finally:
        conn.close()


def test_envoy_serves_its_workload_certificate_from_sds_and_a_rotated_one_once_pushed(
        tmp_path: Path, loopback_ips: list[str]) -> None:
    ca = MeshCA()
    pod = make_pod("secure", loopback_ips[0], {"app": "secure"}, ports=())
    identity = spiffe_id(pod.namespace, pod.service_account)
    config = tls_config(pod)
    first = ca.issue(pod.namespace, pod.service_account)
    snapshots = Snapshots()
    with Proxies(tmp_path) as proxies:
        proxy = start(proxies, snapshots, pod, config, sds_secrets(first, ca.root_pem))
        assert proxy.sync_status() == ALL_SYNCED

        body, presented = fetch(pod.ip, client_context(ca.root_pem))
        assert body == BODY
        assert uri_sans(presented) == [identity] == ["spiffe://cluster.local/ns/bookinfo/sa/bookinfo-secure"]
        assert presented.serial_number == first.serial

        # A client of another mesh does not trust this one's certificate.
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
            fetch(pod.ip, client_context(MeshCA().root_pem))

        # Rotation: a new `default` is one SDS response; once Envoy ACKs it, new connections get it.
        second = ca.issue(pod.namespace, pod.service_account)
        assert second.serial != first.serial
        pushes = proxies.control_plane.pushes(proxy.node_id)
        assert push(proxies, snapshots, proxy, config, sds_secrets(second, ca.root_pem)) == [proxy.node_id]
        assert proxies.control_plane.pushes(proxy.node_id) == pushes + 1
        assert proxy.sync_status() == ALL_SYNCED
        body, presented = fetch(pod.ip, client_context(ca.root_pem))
        assert (body, presented.serial_number, uri_sans(presented)) == (BODY, second.serial, [identity])


def test_envoy_asks_for_no_secret_its_configuration_does_not_name(tmp_path: Path, loopback_ips: list[str]) -> None:
    ca = MeshCA()
    pod = make_pod("plain", loopback_ips[0], {"app": "plain"}, ports=())
    config = plain_config(pod)
    snapshots = Snapshots()
    with Proxies(tmp_path) as proxies:
        proxy = start(proxies, snapshots, pod, config, None)
        assert proxy.sync_status() == ALL_SYNCED
        pushes = proxies.control_plane.pushes(proxy.node_id)

        # The control plane holds secrets for it now, but Envoy never subscribed: none is sent.
        secrets = sds_secrets(ca.issue(pod.namespace, pod.service_account), ca.root_pem)
        assert push(proxies, snapshots, proxy, config, secrets) == [proxy.node_id]
        assert proxies.control_plane.pushes(proxy.node_id) == pushes
        assert proxy.sync_status() == ALL_SYNCED

        # The same listener, now terminating TLS, names `default`: Envoy subscribes, is sent the
        # secret, and serves with it once the updated listener has warmed.
        assert push(proxies, snapshots, proxy, tls_config(pod), secrets) == [proxy.node_id]
        context = client_context(ca.root_pem)
        _, presented = eventually(lambda: fetch(pod.ip, context), "the listener serving TLS")
        assert uri_sans(presented) == [spiffe_id(pod.namespace, pod.service_account)]
        proxies.control_plane.wait_settled([proxy.node_id], 10.0)
        assert proxies.control_plane.pushes(proxy.node_id) == pushes + 2  # LDS, then SDS
        assert proxy.sync_status() == ALL_SYNCED
