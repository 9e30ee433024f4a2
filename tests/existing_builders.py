"""Shared helpers of the kubeconfig target's tests: istiod, ingress gateway Services and pods as an
existing cluster has them, run settings, a kubeconfig of the fake API server, and a stand-in for the
gateway pod's HTTPS listener."""

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from conformance.probes.edge_tls import KeyPair
from conformance.settings import RunSettings
from conformance.targets.crd_schema import CRD_DIR, ISTIO_CRD_FILE
from tests.cluster_builders import write_kubeconfig
from tests.fakeapi import FakeApi

ISTIOD = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "istiod", "namespace": "istio-system"},
          "spec": {"template": {"spec": {"containers": [{"name": "discovery",
                                                          "image": "docker.io/istio/pilot:1.28.0"}]}}}}
ISTIOD_PATH = "/apis/apps/v1/namespaces/istio-system/deployments/istiod"
DEPLOYMENTS = "/apis/apps/v1/namespaces/istio-system/deployments"


def gateway_service(name: str, namespace: str, selector: dict[str, str], http2: tuple[int, int],
                    https: tuple[int, int], address: str | None) -> dict[str, Any]:
    ports = [{"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
             {"name": "http2", "port": http2[0], "targetPort": http2[1], "protocol": "TCP"},
             {"name": "https", "port": https[0], "targetPort": https[1], "protocol": "TCP"}]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "LoadBalancer", "selector": selector, "ports": ports},
            "status": {"loadBalancer": {"ingress": [{"ip": address}]} if address else {}}}


def istioctl_gateway(address: str | None = "203.0.113.10") -> dict[str, Any]:
    """The ingress gateway Service of istioctl's profiles: http2 80 -> 8080
    (istio/istio manifests/charts/gateways/istio-ingress/values.yaml and templates/service.yaml)."""
    return gateway_service("istio-ingressgateway", "istio-system",
                           {"app": "istio-ingressgateway", "istio": "ingressgateway"}, (80, 8080), (443, 8443), address)


def chart_gateway(release: str, namespace: str, address: str | None = None) -> dict[str, Any]:
    """The gateway chart's Service for a release: named like it, selecting app=<release> and
    istio=<release without "istio-">, http2 80 -> 80 (istio/istio manifests/charts/gateway/values.yaml,
    templates/service.yaml, templates/_helpers.tpl)."""
    selector = {"app": release, "istio": release.removeprefix("istio-")}
    return gateway_service(release, namespace, selector, (80, 80), (443, 443), address)


def service_path(service: dict[str, Any]) -> str:
    meta = service["metadata"]
    return f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}"


def gateway_pod(name: str, namespace: str, labels: dict[str, str]) -> tuple[str, dict[str, Any]]:
    return f"/api/v1/namespaces/{namespace}/pods/{name}", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "istio-proxy", "image": "proxyv2"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


GATEWAY = istioctl_gateway()


def settings(**extra: object) -> RunSettings:
    return RunSettings(target="kubeconfig", context="fake", run_id="r1", **extra)  # type: ignore[arg-type]


def kube_config(tmp_path: Path, api: FakeApi) -> Path:
    return write_kubeconfig(tmp_path / "kc", api.port)


ISTIO_TRAFFIC_CRDS = ("gateways.networking.istio.io", "virtualservices.networking.istio.io")
BOOKINFO_GATEWAY = "/apis/networking.istio.io/v1/namespaces/bookinfo/gateways/bookinfo-gateway"


def install_istio_crds(api: FakeApi) -> None:
    """What an Istio install leaves on a cluster before meshconf comes: Istio's CRDs for the kinds
    the tests apply (Gateway, VirtualService), established, from Istio's own bundle."""
    for crd in yaml.safe_load_all((CRD_DIR / ISTIO_CRD_FILE).read_text()):
        if crd and crd["metadata"]["name"] in ISTIO_TRAFFIC_CRDS:
            api.install_crd(crd)


class TlsGateway:
    """The gateway pod's HTTPS listener as a Gateway server with credentialName has it: it presents
    one certificate and answers 200 with `server: istio-envoy`; it records the SNI of each handshake
    and the Host of each request."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.port = int(server.server_address[1])
        self.server_names: list[str | None] = []
        self.hosts: list[str] = []


@contextmanager
def tls_gateway(pair: KeyPair, directory: Path) -> Iterator[TlsGateway]:
    (directory / "tls.crt").write_text(pair.chain_pem)  # ssl loads a chain only from files
    (directory / "tls.key").write_text(pair.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    fake = TlsGateway(server)

    def record_sni(_sock: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        fake.server_names.append(name)

    context.sni_callback = record_sni

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.hosts.append(self.headers.get("host", ""))
            self.send_response_only(200)
            self.send_header("server", "istio-envoy")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
