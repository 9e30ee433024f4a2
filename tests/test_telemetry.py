"""Prometheus and Kiali on a cluster, through a port-forward: against the fake Kubernetes API,
with each forward's pod side a real HTTP server that answers as the addon does."""

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from conformance.errors import ConformanceError
from conformance.targets import kube as kube_module
from conformance.targets.kube import Kube
from conformance.targets.telemetry import Telemetry
from tests.fakeapi import FakeApi, api  # noqa: F401 (a fixture)
from tests.test_kube import kube  # noqa: F401 (a fixture)

SAMPLE = {"metric": {"__name__": "istio_requests_total", "destination_workload": "reviews-v1",
                     "response_code": "200", "reporter": "destination"}, "value": [1764000000.0, "42"]}
GRAPH = {"nodes": [{"data": {"id": "n1", "workload": "reviews-v1"}}],
         "edges": [{"data": {"source": "n0", "target": "n1"}}]}


class Addons:
    """One HTTP server standing in for both addons' pods; records what was asked, by port."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, str, dict[str, list[str]]]] = []
        self.forwarded: list[tuple[str, str]] = []  # (pod, port) of every port-forward
        self.prometheus: tuple[int, Any] = (200, {"status": "success", "data": {"resultType": "vector",
                                                                                  "result": [SAMPLE]}})
        addons = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                port = int(self.headers.get("x-pod-port", "0"))
                addons.asked.append((port, url.path, parse_qs(url.query)))
                status, body = addons.prometheus if url.path == "/api/v1/query" else (200, {"elements": GRAPH})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Forward:
    """ws_client.PortForward's shape; the pod side is the Addons server. The pod port is passed
    on in a header injected into the request, so the server knows which addon was reached."""

    def __init__(self, server_port: int, pod_port: int) -> None:
        self.pod_port = pod_port
        self.remote = socket.create_connection(("127.0.0.1", server_port))
        self.app, inner = socket.socketpair()
        threading.Thread(target=self._relay, args=(inner,), daemon=True).start()

    def _relay(self, inner: socket.socket) -> None:
        request = inner.recv(65536).replace(b"\r\n", f"\r\nx-pod-port: {self.pod_port}\r\n".encode(), 1)
        self.remote.sendall(request)
        while data := self.remote.recv(65536):
            inner.sendall(data)
        inner.close()

    def socket(self, port_number: int) -> socket.socket:
        assert port_number == self.pod_port
        return self.app

    def error(self, port_number: int) -> str | None:
        return None

    def close(self) -> None:
        self.app.close()
        self.remote.close()


def addon_pod(name: str, ready: bool = True) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-7d9f", "namespace": "istio-system",
                         "labels": {"app.kubernetes.io/name": name}},
            "spec": {"containers": [{"name": name, "image": "img"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


@pytest.fixture
def addons(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> Iterator[Addons]:  # noqa: F811
    fake = Addons()

    def portforward(api_method: Any, pod: str, namespace: str, ports: str) -> Forward:
        fake.forwarded.append((pod, ports))
        return Forward(fake.server.server_address[1], int(ports))

    monkeypatch.setattr(kube_module, "portforward", portforward)
    for name in ("prometheus", "kiali"):
        api.objects[f"/api/v1/namespaces/istio-system/pods/{name}-7d9f"] = addon_pod(name)
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_prometheus_query_reaches_the_prometheus_pod(kube: Kube, addons: Addons) -> None:  # noqa: F811
    promql = 'sum(istio_requests_total{destination_workload="reviews-v1"})'
    assert Telemetry(kube, 5.0).prometheus_query(promql) == [SAMPLE]
    assert addons.asked == [(9090, "/api/v1/query", {"query": [promql]})]
    assert addons.forwarded == [("prometheus-7d9f", "9090")]


def test_prometheus_error_names_the_query_and_the_reason(kube: Kube, addons: Addons) -> None:  # noqa: F811
    addons.prometheus = (400, {"status": "error", "errorType": "bad_data",
                               "error": 'invalid parameter "query": parse error'})
    with pytest.raises(ConformanceError, match=r"Prometheus refused the query 'sum\(': bad_data: "
                                               r"invalid parameter \"query\": parse error"):
        Telemetry(kube, 5.0).prometheus_query("sum(")


def test_kiali_graph_of_a_namespace(kube: Kube, addons: Addons) -> None:  # noqa: F811
    assert Telemetry(kube, 5.0).kiali_graph("bookinfo-r1") == GRAPH
    assert addons.asked == [(20001, "/kiali/api/namespaces/graph",
                             {"namespaces": ["bookinfo-r1"], "graphType": ["workload"]})]


def test_an_addon_without_a_ready_pod_says_how_to_get_one(api: FakeApi, kube: Kube,  # noqa: F811
                                                          addons: Addons) -> None:
    api.objects["/api/v1/namespaces/istio-system/pods/kiali-7d9f"] = addon_pod("kiali", ready=False)
    with pytest.raises(ConformanceError, match=r"no ready kiali pod in istio-system "
                                               r"\(app.kubernetes.io/name=kiali\).*samples/addons/kiali.yaml"):
        Telemetry(kube, 5.0).kiali_graph("bookinfo-r1")
    assert addons.asked == []
