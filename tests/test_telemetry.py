"""Prometheus and Kiali on a cluster, through a port-forward: against the fake Kubernetes API,
with each addon pod a real HTTP server on this machine that answers as the addon does."""

from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from conformance.errors import ConformanceError
from conformance.targets.kube import Kube
from conformance.targets.telemetry import Telemetry
from tests.fakeapi import FakeApi
from tests.telemetry_builders import serve_json
from tests.fakeforward import fake_port_forward

SAMPLE = {"metric": {"__name__": "istio_requests_total", "destination_workload": "reviews-v1",
                     "response_code": "200", "reporter": "destination"}, "value": [1764000000.0, "42"]}
GRAPH = {"nodes": [{"data": {"id": "n1", "workload": "reviews-v1"}}],
         "edges": [{"data": {"source": "n0", "target": "n1"}}]}


class Addons:
    """HTTP servers standing in for the addons' pods; records what each was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, dict[str, list[str]]]] = []
        self.forwarded: list[tuple[str, str, int]] = []  # (pod, namespace, port) of every port-forward
        self.prometheus: tuple[int, Any] = (200, {"status": "success", "data": {"resultType": "vector",
                                                                                  "result": [SAMPLE]}})
        self.servers = {"prometheus": self._serve("prometheus"), "kiali": self._serve("kiali")}

    def _serve(self, addon: str) -> ThreadingHTTPServer:
        def answer(path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
            self.asked.append((addon, path, query))
            return self.prometheus if addon == "prometheus" else (200, {"elements": GRAPH})

        return serve_json(answer)

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


def addon_pod(name: str, ready: bool = True) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-7d9f", "namespace": "istio-system",
                         "labels": {"app.kubernetes.io/name": name}},
            "spec": {"containers": [{"name": name, "image": "img"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


@pytest.fixture
def addons(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> Iterator[Addons]:  # noqa: F811
    fake = Addons()
    fake.forwarded = fake_port_forward(monkeypatch, {9090: fake.servers["prometheus"].server_address[:2],
                                                     20001: fake.servers["kiali"].server_address[:2]})
    for name in ("prometheus", "kiali"):
        api.objects[f"/api/v1/namespaces/istio-system/pods/{name}-7d9f"] = addon_pod(name)
    yield fake
    fake.close()


def test_prometheus_query_reaches_the_prometheus_pod(kube: Kube, addons: Addons) -> None:  # noqa: F811
    promql = 'sum(istio_requests_total{destination_workload="reviews-v1"})'
    assert Telemetry(kube, 5.0).prometheus_query(promql) == [SAMPLE]
    assert addons.asked == [("prometheus", "/api/v1/query", {"query": [promql]})]
    assert addons.forwarded == [("prometheus-7d9f", "istio-system", 9090)]


def test_prometheus_error_names_the_query_and_the_reason(kube: Kube, addons: Addons) -> None:  # noqa: F811
    addons.prometheus = (400, {"status": "error", "errorType": "bad_data",
                               "error": 'invalid parameter "query": parse error'})
    with pytest.raises(ConformanceError, match=r"Prometheus refused the query 'sum\(': bad_data: "
                                               r"invalid parameter \"query\": parse error"):
        Telemetry(kube, 5.0).prometheus_query("sum(")


def test_kiali_graph_of_a_namespace_over_the_seconds_asked(kube: Kube, addons: Addons) -> None:  # noqa: F811
    assert Telemetry(kube, 5.0).kiali_graph("bookinfo-r1", 37) == GRAPH
    assert addons.asked == [("kiali", "/kiali/api/namespaces/graph",
                             {"namespaces": ["bookinfo-r1"], "graphType": ["workload"], "duration": ["37s"]})]


def test_an_addon_without_a_ready_pod_says_how_to_get_one(api: FakeApi, kube: Kube,  # noqa: F811
                                                          addons: Addons) -> None:
    api.objects["/api/v1/namespaces/istio-system/pods/kiali-7d9f"] = addon_pod("kiali", ready=False)
    with pytest.raises(ConformanceError, match=r"no ready kiali pod in istio-system "
                                               r"\(app.kubernetes.io/name=kiali\).*samples/addons/kiali.yaml"):
        Telemetry(kube, 5.0).kiali_graph("bookinfo-r1", 60)
    assert addons.asked == []
