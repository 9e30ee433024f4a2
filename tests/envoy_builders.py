"""Helpers of the tests that run real Envoy processes on the translator's output: bootstraps,
the control plane, Envoys started by the local mesh's launcher, upstreams on loopback addresses, requests.

Test files import these from here; the rest of the shared helpers are in tests/builders.py
and tests/cluster_builders.py.
"""

import copy
import http.client
import http.server
import json
import queue
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from conformance.probes import envoy_stats
from conformance.targets.local.envoy import EnvoyProxy, envoy_binary
from conformance.targets.local.model import OUTBOUND_PORT, MeshState, Pod, Service, ServicePort
from conformance.targets.local.processes import Supervisor
from conformance.targets.local.translator import ProxyConfig, translate
from conformance.names import TLS_MODE_ISTIO, TLS_MODE_LABEL
from conformance.targets.local.xds.secrets import MeshCA, WorkloadCert, sds_secrets
from conformance.targets.local.xds.server import ControlPlane
from conformance.targets.local.xds.snapshot import Snapshots
from tests.builders import NS, eventually, hcm_of, make_pod

# How long a holding upstream keeps a request at most: far longer than any test's requests take.
HELD_AT_MOST = 30.0


# ---------------------------------------------------------------------------------------------
# The local mesh's translator on a real Envoy


def static_bootstrap(pod: Pod, config: ProxyConfig) -> dict:
    """The resources as static_resources, routes and endpoints inlined, and the SDS secrets they
    name as static secrets of a new CA (for validation only: the mesh sends them over ADS)."""
    listeners = []
    for item in copy.deepcopy(config.listeners):
        item.pop("@type")
        hcm = hcm_of(item)
        route = dict(config.routes[hcm.pop("rds")["route_config_name"]])
        route.pop("@type")
        hcm["route_config"] = route
        listeners.append(item)
    clusters = []
    for cluster in copy.deepcopy(config.clusters):
        cluster.pop("@type")
        if cluster.get("type") == "EDS":
            del cluster["eds_cluster_config"]
            cluster["type"] = "STATIC"
            cluster["load_assignment"] = {k: v for k, v in config.endpoints[cluster["name"]].items() if k != "@type"}
        clusters.append(cluster)
    ca = MeshCA()
    secrets = [{k: v for k, v in secret.items() if k != "@type"}
               for secret in sds_secrets(ca.issue(pod.namespace, pod.service_account), ca.root_pem).values()]
    return {
        "node": {"id": f"{pod.name}.{pod.namespace}", "cluster": f"{pod.name}.{pod.namespace}"},
        "static_resources": {"listeners": _static_sds(listeners), "clusters": _static_sds(clusters),
                             "secrets": secrets},
    }


def _static_sds(value: Any) -> Any:
    """`value` with every SDS secret config naming a static secret instead: Envoy without an ADS
    stream (validate mode) cannot fetch one."""
    if isinstance(value, dict):
        if "sds_config" in value and "name" in value:
            return {"name": value["name"]}
        return {key: _static_sds(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_static_sds(item) for item in value]
    return value


def envoy_validate(bootstrap: dict, tmp_path: Path) -> None:
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--concurrency", "1",
         "--disable-hot-restart", "-l", "warning"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"Envoy refused {path}:\n{result.stdout}\n{result.stderr}"


class _Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the apps behind Envoy

    def do_GET(self) -> None:
        body = self.server.label.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def start_upstream(ip: str, port: int, label: str) -> http.server.ThreadingHTTPServer:
    """An HTTP/1.1 keep-alive server on ip:port answering every GET with `label`."""
    server = http.server.ThreadingHTTPServer((ip, port), _Upstream)
    server.label = label  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ---------------------------------------------------------------------------------------------
# The translator's resources on real Envoys run by the local mesh's own launcher
# (conformance.targets.local.envoy), with upstreams in the test process on loopback addresses


class Proxies:
    """Real Envoys started by the local mesh's launcher and fed the translator's resources by
    the local mesh's control plane, with their SDS secrets: each proxy's workload certificate from
    `ca` (a new mesh CA unless given) and its root, as the local mesh serves them."""

    def __init__(self, run_dir: Path, ca: MeshCA | None = None) -> None:
        self.run_dir = run_dir
        self.supervisor = Supervisor()
        self.control_plane = ControlPlane("127.0.0.1")
        self.ca = ca or MeshCA()
        self._snapshots = Snapshots()
        self._configs: dict[str, ProxyConfig] = {}
        self._secrets: dict[str, dict[str, dict[str, Any]]] = {}
        self.certificates: dict[str, WorkloadCert] = {}  # node id -> the workload certificate it is served

    def __enter__(self) -> "Proxies":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.supervisor.stop_all()
        self.control_plane.stop()

    def start(self, pod: Pod, state: MeshState, certificate: WorkloadCert | None = None) -> EnvoyProxy:
        return self.start_config(pod, translate(pod, state), certificate)

    def start_config(self, pod: Pod, config: ProxyConfig, certificate: WorkloadCert | None = None) -> EnvoyProxy:
        """An Envoy for `pod` given `config`, once its listeners are active; it is served
        `certificate`, by default one the CA issues for the pod's service account."""
        proxy = EnvoyProxy(pod, self.run_dir, self.control_plane)
        self._serve(proxy, certificate or self.ca.issue(pod.namespace, pod.service_account))
        self.push(proxy, config)
        proxy.start(self.supervisor)
        names = [listener["name"] for listener in config.listeners]
        eventually(lambda: listeners_active(proxy, names), f"{pod.name}'s listeners {names}")
        return proxy

    def push(self, proxy: EnvoyProxy, config: ProxyConfig) -> list[str]:
        """Give `proxy` `config` (the other proxies keep theirs); once its Envoy runs, wait for its
        ACK (a NACK raises ConformanceError). Returns the proxies whose resources changed."""
        self._configs[proxy.node_id] = config
        try:
            changed = self.control_plane.push({node: self._snapshots.of(c, self._secrets.get(node))
                                               for node, c in self._configs.items()})
        finally:
            self._snapshots.done()
        self.control_plane.wait_settled(changed, 10.0)
        return changed

    def rotate(self, proxy: EnvoyProxy, certificate: WorkloadCert | None = None) -> WorkloadCert:
        """Serve `proxy` a new workload certificate (by default a new one for its pod) over its SDS
        subscription, as istio-agent rotates one, and wait for Envoy's ACK. Returns the certificate."""
        certificate = certificate or self.ca.issue(proxy.pod.namespace, proxy.pod.service_account)
        self._serve(proxy, certificate)
        self.push(proxy, self._configs[proxy.node_id])
        return certificate

    def _serve(self, proxy: EnvoyProxy, certificate: WorkloadCert) -> None:
        self.certificates[proxy.node_id] = certificate
        self._secrets[proxy.node_id] = sds_secrets(certificate, self.ca.root_pem)


def listeners_active(proxy: EnvoyProxy, names: list[str]) -> bool:
    """Whether every listener accepts connections: it is listed once its routes are loaded, but its
    socket listens only once Envoy's workers have started, when /ready says LIVE."""
    assert proxy.child is not None and proxy.child.alive(), f"Envoy exited:\n{proxy.child and proxy.child.log_tail()}"
    try:
        active = proxy.admin("/listeners").text
    except httpx.HTTPError:  # the admin port is not open yet
        return False
    return all(f"{name}::" in active for name in names) and proxy.live()


class RecordingUpstream:
    """An HTTP/1.1 server on ip:port answering `status` with `body`; records each request's headers,
    and announces each request's arrival on `arrivals` (its body). With hold, it holds every request
    until `release` is set (at most HELD_AT_MOST seconds), then answers."""

    def __init__(self, ip: str, port: int, status: int = 200, body: str = "", hold: bool = False,
                 arrivals: "queue.Queue[str] | None" = None) -> None:
        self.seen: list[dict[str, str]] = []
        self.arrivals: queue.Queue[str] = queue.Queue() if arrivals is None else arrivals
        self.release = threading.Event()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle holds the body
            # until the peer's delayed ACK, 40 ms a request.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                upstream.seen.append({name.lower(): value for name, value in self.headers.items()})
                upstream.arrivals.put(body)
                if hold:
                    upstream.release.wait(HELD_AT_MOST)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((ip, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> "RecordingUpstream":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: str


def through(proxy_ip: str, url: str, port: int = OUTBOUND_PORT) -> Reply:
    """GET `url` in absolute form through the sidecar at proxy_ip, as the local apps do."""
    conn = http.client.HTTPConnection(proxy_ip, port, timeout=10)
    try:
        conn.request("GET", url)
        response = conn.getresponse()
        body = response.read().decode()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


def plaintext_request(ip: str, port: int, method: str = "GET", path: str = "/",
                      headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One request straight to ip:port, as a client without sidecar (kube-proxy's way): (status, body)."""
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def envoy_counters(proxy: EnvoyProxy) -> dict[str, int]:
    return envoy_stats.parse(proxy.stats())


def loopback_addresses(loopback_ips: list[str], count: int) -> list[str]:
    """`count` addresses of the random 127.a.b.0/24 the loopback_ips fixture picked."""
    base = loopback_ips[0].rsplit(".", 1)[0]
    return [f"{base}.{n}" for n in range(1, count + 1)]


def direct_pod(name: str, ip: str, labels: dict[str, str], port: int, namespace: str = NS) -> Pod:
    """A pod without sidecar: its Service endpoints are ip:port."""
    return make_pod(name, ip, labels, namespace=namespace, proxy="none", ports=(port,))


def one_port_service(name: str, target_port: int, port: int = 9080, namespace: str = NS,
                     selector: dict[str, str] | None = None) -> Service:
    return Service(name, namespace, (ServicePort("http", port, target_port),), selector or {"app": name})


# ---------------------------------------------------------------------------------------------
# Mutual TLS: Istio's security documents, injected pods, and TLS clients beside the proxies

SECURITY_API = "security.istio.io/v1"


def peer_authentication(name: str, mode: str | None, namespace: str = NS, selector: dict[str, str] | None = None,
                        port_modes: dict[int, str | None] | None = None) -> dict:
    """A PeerAuthentication; mode None leaves spec.mtls out (UNSET), a port's mode None gives it {} (UNSET)."""
    spec: dict[str, Any] = {}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if selector is not None:
        spec["selector"] = {"matchLabels": dict(selector)}
    if port_modes is not None:
        spec["portLevelMtls"] = {port: ({} if m is None else {"mode": m}) for port, m in port_modes.items()}
    return {"apiVersion": SECURITY_API, "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def with_security(state: MeshState, *docs: dict) -> MeshState:
    """`state` with these PeerAuthentications and DestinationRules added, in this order."""
    return replace(
        state,
        peer_authentications=(*state.peer_authentications, *(d for d in docs if d["kind"] == "PeerAuthentication")),
        destination_rules=(*state.destination_rules, *(d for d in docs if d["kind"] == "DestinationRule")),
    )


def injected_pod(name: str, ip: str, ports: tuple[int, ...], namespace: str = NS,
                 labels: dict[str, str] | None = None) -> Pod:
    """A pod whose sidecar the injector added: labelled security.istio.io/tlsMode=istio, as the
    injection template labels it; its service account is named after it."""
    all_labels = {"app": name, TLS_MODE_LABEL: TLS_MODE_ISTIO, **(labels or {})}
    return replace(make_pod(name, ip, all_labels, namespace=namespace, ports=ports), service_account=name)


def tls_client_context(ca: MeshCA, certificate: WorkloadCert | None = None, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A TLS client trusting the mesh root alone (SPIFFE certificates name no host), presenting
    `certificate` if given, offering `alpn` if given."""
    context = ssl.create_default_context(cadata=ca.root_pem)
    context.check_hostname = False
    if certificate is not None:
        with tempfile.TemporaryDirectory() as folder:
            chain, key = Path(folder, "chain.pem"), Path(folder, "key.pem")
            chain.write_text(certificate.chain_pem)
            key.write_text(certificate.key_pem)
            context.load_cert_chain(chain, key)
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


@dataclass(frozen=True)
class TlsReply:
    status: int
    headers: dict[str, str]
    body: str
    server_cert: x509.Certificate  # what the server presented in the handshake


def tls_get(ip: str, port: int, path: str, context: ssl.SSLContext) -> TlsReply:
    """GET `path` over a new TLS connection to ip:port."""
    conn = http.client.HTTPSConnection(ip, port, context=context, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        assert conn.sock is not None
        der = conn.sock.getpeercert(binary_form=True)
        assert der is not None
        return TlsReply(response.status, {k.lower(): v for k, v in response.getheaders()}, body,
                        x509.load_der_x509_certificate(der))
    finally:
        conn.close()


def certificate_hash(certificate: WorkloadCert) -> str:
    """The Hash Envoy writes in X-Forwarded-Client-Cert: the SHA-256 of the leaf's DER, in hex."""
    leaf = x509.load_pem_x509_certificate(certificate.chain_pem.encode())
    return leaf.fingerprint(hashes.SHA256()).hex()
