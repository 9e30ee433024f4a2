"""MESH-SECURITY on a cluster, against the fake API server (tests/fakeapi.py): where the cluster
target puts the security manifests and how the API server refuses what it cannot take, then what
the verdicts read from the cluster's pods: the legacy client's resets as the curl batch script
reports them, httpbin's echo of X-Forwarded-Client-Cert, and httpbin's proxy stats through
pilot-agent.

Exec into the fake API's pods is tests/cluster_builders.py's PodExec: the batch script runs for
real with this machine's sh and curl, against local servers standing in for httpbin and its proxy.
"""

import json
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance import manifests
from conformance.errors import ConformanceError
from conformance.names import ISTIO_NAMESPACE, PROXY_CONTAINER, spiffe_id
from conformance.probes import envoy_stats
from conformance.targets import kube as kube_module
from conformance.targets.cluster import ClusterTarget
from conformance.targets.local.admission.injector import Injector
from conformance.targets.local.xds.secrets import MeshCA
from conformance.verdicts.security import (NO_CHAIN, XFCC, CounterChange, counters, identity, plaintext_seen,
                                           refused)
from tests.cluster_builders import PodExec, cluster_target, install_istio_admission, running_cluster
from tests.release_builders import ISTIO_CRDS, install_crds
from tests.fake_discovery import Route
from tests.fakeapi import NOT_FOUND, FakeApi

COUNT = 5
SECURITY = sorted(p.name for p in (manifests.manifests_dir() / "security").glob("*.yaml"))
PA_CRD = "peerauthentications.security.istio.io"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@pytest.fixture
def cluster(api: FakeApi, tmp_path: Path) -> Iterator[ClusterTarget]:
    """A cluster target on the fake API with Istio's CRDs and its root namespace."""
    with running_cluster(api, tmp_path, ISTIO_NAMESPACE) as target:
        yield target


def object_path(api: FakeApi, doc: dict[str, Any], namespace: str) -> str:
    """Where the fake API server keeps `doc` in `namespace`, found from what it serves (not from
    the target's own rules)."""
    group, _, version = doc["apiVersion"].rpartition("/")
    [resource] = [r for r in api.served() if (r.group, r.version, r.kind) == (group, version, doc["kind"])]
    return Route(resource, namespace if resource.namespaced else None, doc["metadata"]["name"]).object_path


def remove_crd(api: FakeApi, name: str) -> None:
    """An admin's `kubectl delete crd`: the kind stops being served, its objects go with it."""
    assert httpx.delete(f"{api.url}{CRDS}/{name}").status_code == 200


# --- the manifests on the API server ---------------------------------------------------------


@pytest.mark.parametrize("name", SECURITY)
def test_each_security_manifest_is_stored_where_its_metadata_says_and_deleted_there(
        cluster: ClusterTarget, api: FakeApi, name: str) -> None:
    docs = manifests.load(f"security/{name}")
    with cluster.namespace("bookinfo-r1", {}) as ns:
        cluster.apply(docs, ns)
        paths = [object_path(api, d, d["metadata"].get("namespace") or ns) for d in docs]
        for doc, path in zip(docs, paths):
            stored = api.objects[path]
            # As written: the CRD's schema pruned nothing (portLevelMtls' port keys arrive as strings).
            assert stored.get("spec") == json.loads(json.dumps(doc.get("spec"))), path
            [patch] = api.seen("PATCH", path)  # one server-side apply
            assert api.requests[patch].headers["content-type"].startswith("application/apply-patch+yaml")
            if doc["metadata"].get("namespace") not in (None, ns):
                assert object_path(api, doc, ns) not in api.objects
        cluster.delete(docs, ns)
        assert [p for p in paths if p in api.objects] == []  # gone before the namespace goes
        assert all(api.seen("DELETE", p) for p in paths)


def test_the_mesh_wide_policy_lives_in_istio_system_and_only_it_is_deleted(
        cluster: ClusterTarget, api: FakeApi) -> None:
    [mesh_wide] = manifests.load("security/pa-mesh-strict.yaml")
    assert mesh_wide["metadata"]["namespace"] == ISTIO_NAMESPACE
    # The same name in the Bookinfo namespace: deleting the mesh-wide policy must leave it alone.
    local = {**mesh_wide, "metadata": {"name": mesh_wide["metadata"]["name"]}}
    with cluster.namespace("bookinfo-r1", {}) as ns:
        cluster.apply([local], ns)
        cluster.apply([mesh_wide], ns)  # given the Bookinfo namespace, as the suite's `applied` does
        in_root, in_ns = object_path(api, mesh_wide, ISTIO_NAMESPACE), object_path(api, mesh_wide, ns)
        assert in_root in api.objects and in_ns in api.objects
        cluster.delete([mesh_wide], ns)
        assert in_root not in api.objects and in_ns in api.objects
        assert cluster.exists(local, ns) and not cluster.exists(mesh_wide, ns)


PA_WRONG_TYPE = {  # `mtls` written as its mode: a string where the schema has an object
    "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": "default"},
    "spec": {"mtls": "STRICT"}}
AP_WRONG_TYPE = {  # one rule as an object where the schema has a list of rules
    "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "httpbin-deny-status"},
    "spec": {"action": "DENY", "rules": {"to": [{"operation": {"paths": ["/status/*"]}}]}}}


# The API server's 422 (k8s.io/apimachinery NewInvalid: `<Kind>.<group> "<name>" is invalid: <field>:
# Invalid value: "<actual type>": <field> in body must be of type <type>: "<actual type>"`, the type
# error of kube-openapi as apiextensions-apiserver reports it).
@pytest.mark.parametrize(("doc", "refusal"), [
    (PA_WRONG_TYPE, 'apply PeerAuthentication bookinfo-r1/default: HTTP 422 Unprocessable Entity: '
                    'PeerAuthentication.security.istio.io "default" is invalid: spec.mtls: Invalid value: '
                    '"string": spec.mtls in body must be of type object: "string"'),
    (AP_WRONG_TYPE, 'apply AuthorizationPolicy bookinfo-r1/httpbin-deny-status: HTTP 422 Unprocessable Entity: '
                    'AuthorizationPolicy.security.istio.io "httpbin-deny-status" is invalid: spec.rules: '
                    'Invalid value: "object": spec.rules in body must be of type array: "object"'),
])
def test_a_schema_invalid_policy_is_refused_with_the_api_servers_422(
        cluster: ClusterTarget, api: FakeApi, doc: dict[str, Any], refusal: str) -> None:
    with cluster.namespace("bookinfo-r1", {}) as ns:
        with pytest.raises(ConformanceError) as refused_:
            cluster.apply([doc], ns)
        assert str(refused_.value).startswith(refusal), str(refused_.value)
        assert not cluster.exists(doc, ns)
        assert len(api.seen("PATCH", object_path(api, doc, ns))) == 1  # refused by the server, not before it


def test_a_security_kind_without_its_crd_is_refused_before_anything_is_written(
        api: FakeApi, tmp_path: Path) -> None:
    install_crds(api, *ISTIO_CRDS)
    remove_crd(api, PA_CRD)  # before the target's first look at discovery
    target = cluster_target(api, tmp_path)
    target.up()
    try:
        with target.namespace("bookinfo-r1", {}) as ns:
            with pytest.raises(ConformanceError, match=r"^the API server does not serve kind PeerAuthentication in "
                                                       r"apiVersion security.istio.io/v1 \(is its CRD installed\?\)$"):
                target.apply(manifests.load("security/pa-strict.yaml"), ns)
            target.apply(manifests.load("security/authz-deny-all.yaml"), ns)  # its group is still served
    finally:
        target.down()
    served = httpx.get(f"{api.url}/apis/security.istio.io/v1").json()["resources"]
    assert "peerauthentications" not in [r["name"] for r in served]  # discovery's answer, which the client read
    assert not [r for r in api.requests if r.path.startswith("/apis/security.istio.io/v1/namespaces/bookinfo-r1/peer")]


def test_a_crd_removed_under_a_running_target_is_the_api_servers_404(
        cluster: ClusterTarget, api: FakeApi) -> None:
    docs = manifests.load("security/pa-strict.yaml")
    with cluster.namespace("bookinfo-r1", {}) as ns:
        cluster.apply(docs, ns)  # the target's discovery now lists PeerAuthentication
        remove_crd(api, PA_CRD)
        with pytest.raises(ConformanceError) as refused_:
            cluster.apply(docs, ns)
        assert str(refused_.value) == f"apply PeerAuthentication {ns}/default: HTTP 404 Not Found: {NOT_FOUND}"
        cluster.delete(docs, ns)  # nothing left to delete: not an error


# --- what the verdicts read from the cluster's pods ------------------------------------------


class _Reset(socketserver.BaseRequestHandler):
    """Resets each connection once its request is in, as a STRICT sidecar does with plaintext: no
    filter chain matches, and Envoy closes the connection with the request unread."""

    def handle(self) -> None:
        self.request.recv(65536)
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.request.close()  # linger 0: an RST, not a FIN


@pytest.fixture(scope="module")
def resetting() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Reset)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mesh:
    """Bookinfo's side of the suite on the fake API: httpbin and curl injected in one namespace, the
    legacy curl without a sidecar in another; exec into their pods through `exec`."""

    target: ClusterTarget
    namespace: str
    legacy: str
    exec: PodExec


@pytest.fixture
def mesh(cluster: ClusterTarget, api: FakeApi, ca: MeshCA, injector: Injector,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Mesh]:
    install_istio_admission(api, ca.root_pem, injector.address)
    pod_exec = PodExec(api)
    monkeypatch.setattr(kube_module, "stream", pod_exec)
    with cluster.namespace("bookinfo-r1", {"istio-injection": "enabled"}) as ns, \
            cluster.namespace("legacy-r1", {}) as legacy:
        cluster.apply(manifests.load("clients/httpbin.yaml") + manifests.load("clients/curl.yaml"), ns)
        cluster.apply(manifests.load("clients/curl.yaml"), legacy)
        for where in (ns, legacy):
            cluster.wait_ready(where)
        yield Mesh(cluster, ns, legacy, pod_exec)


def pod_named(mesh: Mesh, app: str, namespace: str) -> str:
    [pod] = [p for p in mesh.target.pods(namespace) if p.labels.get("app") == app]
    return pod.name


def test_the_legacy_clients_resets_are_refused_with_curls_error(mesh: Mesh, resetting: str, httpbin: str) -> None:
    legacy = mesh.target.client("curl", mesh.legacy)
    pod = pod_named(mesh, "curl", mesh.legacy)
    verdict = refused(legacy.send(f"{resetting}/headers", COUNT))
    assert verdict.ok, verdict.message
    assert verdict.message == (f"all {COUNT} requests from {mesh.legacy}/{pod} got no HTTP answer "
                               f"({COUNT} x curl exit 56: curl: (56) Recv failure: Connection reset by peer)")
    assert mesh.exec.calls == [(pod, mesh.legacy, "curl", ("sh", "-c"))]  # one exec, into the app container
    # Answered in plaintext instead (PERMISSIVE): not refused, and no client certificate was seen.
    answered = legacy.send(f"{httpbin}/headers", COUNT)
    assert not refused(answered).ok and f"{COUNT} were answered" in refused(answered).message
    assert plaintext_seen(answered).ok


@pytest.mark.parametrize(("account", "seen"), [("curl", True), ("intruder", False)])
def test_the_identity_the_server_saw_is_read_from_httpbins_echo(
        mesh: Mesh, httpbin: str, account: str, seen: bool) -> None:
    # httpbin's proxy appends XFCC to what it forwards; here the client sends it, and the real httpbin
    # app echoes it in go-httpbin's shape ({"headers": {"Name": ["value"]}}).
    client_id, server_id = spiffe_id(mesh.namespace, "curl"), spiffe_id(mesh.namespace, "httpbin")
    xfcc = f'By={server_id};Hash=5e0f2b;Subject="";URI={spiffe_id(mesh.namespace, account)}'
    batch = mesh.target.client("curl", mesh.namespace).send(f"{httpbin}/headers", COUNT, headers={XFCC: xfcc})
    assert json.loads(batch.replies[0].body)["headers"][XFCC] == [xfcc]
    verdict = identity(batch, client_id, server_id)
    assert verdict.ok == seen, verdict.message
    assert not plaintext_seen(batch).ok


PILOT_AGENT_STATS = ("pilot-agent", "request", "GET", "stats")


def httpbin_proxy_stats(no_chain: int, handshakes: int) -> str:
    """httpbin's proxy's /stats as pilot-agent prints it: Istio's required stats and those the pod's
    proxy.istio.io/config asks for (manifests/clients/httpbin.yaml: `.*\\.ssl\\..*`,
    `.*no_filter_chain_match`), on the virtual inbound listener 0.0.0.0:15006 where iptables sends
    the pod's inbound traffic, and on the virtual outbound listener 0.0.0.0:15001."""
    return "\n".join([
        "cluster.xds-grpc.upstream_cx_total: 1",
        "cluster_manager.cds.update_success: 4",
        "http.inbound_0.0.0.0_8080;.downstream_rq_total: 12",
        "http.inbound_0.0.0.0_8080;.rbac.allowed: 0",
        "listener.0.0.0.0_15001.no_filter_chain_match: 0",
        f"listener.0.0.0.0_15006.no_filter_chain_match: {no_chain}",
        f"listener.0.0.0.0_15006.ssl.ciphers.TLS_AES_128_GCM_SHA256: {handshakes}",
        "listener.0.0.0.0_15006.ssl.connection_error: 0",
        f"listener.0.0.0.0_15006.ssl.handshake: {handshakes}",
        f"listener.0.0.0.0_15006.ssl.versions.TLSv1.3: {handshakes}",
        "listener_manager.total_listeners_active: 6",
        "server.live: 1",
        "",
    ])


@pytest.mark.parametrize(("refused_after", "agree"), [(4 + COUNT, True), (4 + COUNT - 1, False)])
def test_httpbins_refusals_are_totalled_from_its_proxy_stats_through_pilot_agent(
        mesh: Mesh, refused_after: int, agree: bool) -> None:
    mesh.exec.answers[PILOT_AGENT_STATS] = [httpbin_proxy_stats(4, 2), httpbin_proxy_stats(refused_after, 3)]

    def refusals() -> int:
        return envoy_stats.total(envoy_stats.parse(mesh.target.proxy_stats("httpbin", mesh.namespace)), NO_CHAIN)

    before, after = refusals(), refusals()
    assert (before, after) == (4, refused_after)
    verdict = counters([CounterChange("no_filter_chain_match", before, after, COUNT)], "httpbin's proxy")
    assert verdict.ok == agree, verdict.message
    assert f"no_filter_chain_match +{refused_after - 4} (at least {COUNT})" in verdict.message
    pod = pod_named(mesh, "httpbin", mesh.namespace)
    assert mesh.exec.calls == [(pod, mesh.namespace, PROXY_CONTAINER, PILOT_AGENT_STATS[:2])] * 2


def test_proxy_stats_of_a_pod_without_a_sidecar_is_the_api_servers_refusal(mesh: Mesh) -> None:
    pod = pod_named(mesh, "curl", mesh.legacy)
    with pytest.raises(ConformanceError, match=f"container {PROXY_CONTAINER} is not valid for pod {pod}"):
        mesh.target.proxy_stats("curl", mesh.legacy)
    assert mesh.exec.calls == []
