"""Mutual TLS in the local mesh on real Envoys fed by the local control plane, with their SDS
secrets: what a connection gets under each mode, each mutant, and in the whole local mesh
(istio/istio tag 1.28.0; the translation itself is tests/test_translator_mtls.py).
"""

import json
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from conformance.names import spiffe_id
from conformance.targets.local.apps.bookinfo import RATINGS_UNAVAILABLE
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.model import app_port
from conformance.targets.local.objects import namespace_doc
from conformance.targets.local.target import LocalClient
from conformance.targets.local.translator import translate
from conformance.targets.local.translator.mutants import NO_PEER_VERIFICATION, SHARED_IDENTITY, STRICT_AS_PERMISSIVE
from conformance.targets.local.translator.resources import SECRET_TYPE
from tests.builders import NS, WHOLE_MESH, manifest_docs, running_local_mesh
from tests.envoy_builders import (
    Proxies,
    RecordingUpstream,
    certificate_hash,
    envoy_counters,
    peer_authentication,
    plaintext_request,
    through,
    tls_client_context,
    tls_get,
)
from tests.security_builders import (
    CLIENT_ID,
    CONNECTION_TERMINATION,
    HTTP_PORT,
    OTHER_PORT,
    OTHER_SERVICE_PORT,
    PLAIN_CLUSTER,
    SECURE_CLUSTER,
    SERVER_ID,
    SERVICE_PORT,
    XFCC,
    bed,
    pods_on,
    state_of,
    tls_destination_rule,
)


def test_strict_refuses_plaintext_and_clients_without_a_certificate_and_serves_sidecars(
        tmp_path: Path, loopback_ips: list[str]) -> None:
    """STRICT: a plaintext connection matches no filter chain and Envoy resets it (no HTTP answer); a
    TLS client without certificate is refused (fail_verify_no_cert): under TLS 1.3 the client learns it
    after its handshake, as Envoy's "certificate required" alert or the connection closed, whichever
    its read meets first;
    the client sidecar gets 200 and the app sees X-Forwarded-Client-Cert with both identities."""
    with bed(tmp_path, loopback_ips, peer_authentication("default", "STRICT")) as b:
        status, _, seen = b.via_sidecar()
        assert status == 200 and seen is not None
        client_cert = b.proxies.certificates[b.client.node_id]
        assert seen[XFCC] == (f'By={SERVER_ID};Hash={certificate_hash(client_cert)};Subject="";URI={CLIENT_ID}')
        with pytest.raises(ConnectionResetError):
            plaintext_request(b.pods.server.ip, HTTP_PORT)
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED|EOF"):
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
        assert plaintext_request(b.pods.server.ip, HTTP_PORT, headers={XFCC: f"URI={SERVER_ID}"})[0] == 200
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
        assert plaintext_request(b.pods.server.ip, HTTP_PORT)[0] == 200
        with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"):
            tls_get(b.pods.server.ip, HTTP_PORT, "/", tls_client_context(b.proxies.ca, b.proxies.ca.issue(NS, "x")))
        status, _, seen = b.via_sidecar()
        assert status == 200 and seen is not None and XFCC not in seen
        assert b.handshakes() == 0


def test_a_port_level_disable_under_strict_opens_that_port_alone(tmp_path: Path, loopback_ips: list[str]) -> None:
    policy = peer_authentication("httpbin", "STRICT", selector={"app": "httpbin"}, port_modes={HTTP_PORT: "DISABLE"})
    with bed(tmp_path, loopback_ips, policy) as b:
        assert plaintext_request(b.pods.server.ip, HTTP_PORT)[0] == 200
        with pytest.raises(ConnectionResetError):
            plaintext_request(b.pods.server.ip, OTHER_PORT)
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
    with bed(tmp_path, loopback_ips, strict, tls_destination_rule("httpbin", "DISABLE")) as b:
        status, body, seen = b.via_sidecar()
        assert (status, body, seen) == (503, CONNECTION_TERMINATION, None)
        counters = envoy_counters(b.client)
        assert counters[f"cluster.{SECURE_CLUSTER};.upstream_cx_destroy_remote_with_active_rq"] == 1
        assert counters.get(f"cluster.{SECURE_CLUSTER};.upstream_rq_retry", 0) == 0

        b.proxies.push(b.client, translate(b.pods.client, state_of(b.pods, strict, tls_destination_rule("httpbin", "ISTIO_MUTUAL"))))
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
        assert plaintext_request(b.pods.server.ip, HTTP_PORT)[0] == 200


def test_no_peer_verification_serves_a_tls_client_without_certificate(tmp_path: Path, loopback_ips: list[str]) -> None:
    with bed(tmp_path, loopback_ips, peer_authentication("default", "STRICT"),
             mutants=frozenset({NO_PEER_VERIFICATION})) as b:
        assert tls_get(b.pods.server.ip, HTTP_PORT, "/", tls_client_context(b.proxies.ca)).status == 200
        assert XFCC not in b.app.seen[-1]  # no client certificate: nothing to forward
        with pytest.raises(ConnectionResetError):
            plaintext_request(b.pods.server.ip, HTTP_PORT)  # still TLS only


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
