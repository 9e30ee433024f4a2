"""Shared helpers of the telemetry tests on a cluster: Istio's standard metrics as Prometheus holds
them, and stand-ins for the Prometheus and Kiali pods of Istio's samples/addons, reached through
the fake API's port-forward (tests/fakeforward.py). The Prometheus stand-in keeps its own clock,
minutes off this machine's, and when it scraped each pod, so a test can play its scrapes.

Test files import these from here; the rest of the shared helpers are in tests/builders.py and
tests/cluster_builders.py.
"""

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from conformance.names import ISTIO_NAMESPACE, spiffe_id
from conformance.targets.telemetry import KIALI, PROMETHEUS
from conformance.verdicts.telemetry import BOOKINFO_ACCOUNTS, ENVOY_DEFAULT_BUCKETS
from tests.fake_prometheus import Prometheus, Sample, app_version, node_id, pod_name, target_labels
from tests.fakeapi import FakeApi
from tests.fakeforward import fake_port_forward

# ---------------------------------------------------------------------------------------------
# Istio's standard metrics as Prometheus holds them

# The labels of istio_requests_total (and of the request duration's histogram) on both reporters
# (istio/proxy testdata/metric/client_request_total.yaml.tmpl and server_request_total.yaml.tmpl).
ISTIO_REQUEST_LABELS = frozenset({
    "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_canonical_service",
    "destination_canonical_revision", "destination_service_name", "destination_service_namespace",
    "destination_cluster", "request_protocol", "response_code", "grpc_response_status", "response_flags",
    "connection_security_policy",
})

def request_series(name: str, ns: str, reporter: str, source: str, destination: str, value: float,
                   code: str = "200", **extra: str) -> Sample:
    """One series of an Istio standard metric as Prometheus holds it: the proxy's labels for a request
    from workload `source` to `destination` over mutual TLS, and those of the pod scraped (the
    reporter's)."""
    (source_app, source_version), (app, version) = app_version(source), app_version(destination)
    labels = {
        "__name__": name, "reporter": reporter,
        "source_workload": source, "source_canonical_service": source_app,
        "source_canonical_revision": source_version if source_version != "unknown" else "latest",
        "source_workload_namespace": ns, "source_principal": spiffe_id(ns, BOOKINFO_ACCOUNTS[source]),
        "source_app": source_app, "source_version": source_version, "source_cluster": "Kubernetes",
        "destination_workload": destination, "destination_workload_namespace": ns,
        "destination_principal": spiffe_id(ns, BOOKINFO_ACCOUNTS[destination]), "destination_app": app,
        "destination_version": version, "destination_service": f"{app}.{ns}.svc.cluster.local",
        "destination_canonical_service": app, "destination_canonical_revision": version,
        "destination_service_name": app, "destination_service_namespace": ns, "destination_cluster": "Kubernetes",
        "request_protocol": "http", "response_code": code, "grpc_response_status": "", "response_flags": "-",
        # The server's proxy knows the connection was mutual TLS; the client's says unknown.
        "connection_security_policy": "mutual_tls" if reporter == "destination" else "unknown",
        **target_labels(ns, pod_name(source if reporter == "source" else destination)),
    }
    return Sample({**labels, **extra}, value)


def duration_buckets(ns: str, reporter: str, source: str, destination: str, count: int) -> list[Sample]:
    """istio_request_duration_milliseconds_bucket of one edge as scraped, every request under 25 ms."""
    bounds = [*(f"{b:g}" for b in ENVOY_DEFAULT_BUCKETS), "+Inf"]
    counts = [0 if b in (0.5, 1, 5, 10) else count for b in ENVOY_DEFAULT_BUCKETS] + [count]
    return [request_series("istio_request_duration_milliseconds_bucket", ns, reporter, source, destination, n, le=le)
            for le, n in zip(bounds, counts)]


# ---------------------------------------------------------------------------------------------
# Stand-ins for the addons' pods


def serve_json(answer: Callable[[str, dict[str, list[str]]], tuple[int, Any]]) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 answering GETs with answer(path, query) as JSON."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            status, body = answer(url.path, parse_qs(url.query))
            data = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status)
            self.send_header("content-type", "application/json" if not isinstance(body, bytes) else "text/plain")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # A short poll: shutdown() waits for the loop's next look.
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    return server



def kiali_graph(ns: str, calls: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Kiali's workload graph of `ns` in cytoscape's JSON (kiali graph/config/cytoscape): a node per
    workload (ids opaque), an edge per (source, target) workload pair that called."""
    nodes: dict[str, dict[str, Any]] = {}

    def node(workload: str) -> str:
        app, version = app_version(workload)
        ident = node_id("Kubernetes", ns, workload)
        nodes.setdefault(ident, {"data": {"id": ident, "nodeType": "workload", "cluster": "Kubernetes",
                                          "namespace": ns, "workload": workload, "app": app, "version": version,
                                          "traffic": [{"protocol": "http", "rates": {"httpIn": "1.00"}}]}})
        return ident

    edges = []
    for source, target in calls:
        app = app_version(target)[0]
        responses = {"200": {"flags": {"-": "100.0"}, "hosts": {f"{app}.{ns}.svc.cluster.local": "100.0"}}}
        ends = (node(source), node(target))
        edges.append({"data": {"id": node_id(*ends), "source": ends[0], "target": ends[1], "isMTLS": "100",
                               "responseTime": "12", "throughput": "1534",
                               "traffic": {"protocol": "http", "rates": {"http": "1.00", "httpPercentReq": "100.0"},
                                           "responses": responses}}})
    return {"nodes": list(nodes.values()), "edges": edges}


# A duration as Kiali parses it (prometheus/common model.ParseDuration, which kiali graph/options.go
# calls): units from years to milliseconds, each at most once, largest first.
KIALI_DURATION = re.compile(r"(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?")
_UNIT = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_SECONDS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}


def _duration_seconds(text: str) -> float | None:
    if not text or KIALI_DURATION.fullmatch(text) is None:
        return None
    return sum(int(n) * _SECONDS[unit] for n, unit in _UNIT.findall(text))


@dataclass
class Kiali:
    """Kiali answering its workload graph API under the addon's web_root /kiali (istio/istio
    samples/addons/kiali.yaml): {"elements": ...} per namespace in `graphs`, an empty graph for any
    other, over the window `duration` asks for (answered as the reply's `duration`, in seconds).
    400 {"error": ...} without a namespace, for a graph type the stand-in does not draw, and for an
    invalid duration ("Invalid duration [...]", as Kiali's options.go says it). Kiali would draw a
    graph without a duration over its default 10 minutes, earlier tests' traffic and all: the
    stand-in refuses it, so no caller can lean on that default."""

    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)
    asked: list[dict[str, list[str]]] = field(default_factory=list)

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if path != "/kiali/api/namespaces/graph":
            return 404, b"404 page not found\n"
        self.asked.append(query)
        namespaces = [n for v in query.get("namespaces", []) for n in v.split(",") if n]
        graph_type = (query.get("graphType") or [""])[0]
        if not namespaces or graph_type != "workload":
            return 400, {"error": f"the stand-in draws workload graphs of named namespaces, not {query}"}
        if "duration" not in query:
            return 400, {"error": "the stand-in draws a graph only over an explicit duration, not Kiali's 10m default"}
        duration = _duration_seconds(query["duration"][0])
        if duration is None:
            return 400, {"error": f"Invalid duration [{query['duration'][0]}]"}
        nodes = [n for ns in namespaces for n in self.graphs.get(ns, {}).get("nodes", [])]
        edges = [e for ns in namespaces for e in self.graphs.get(ns, {}).get("edges", [])]
        return 200, {"timestamp": int(time.time()), "duration": int(duration), "graphType": graph_type,
                     "elements": {"nodes": nodes, "edges": edges}}


# The pods' labels in Istio's samples/addons (istio/istio samples/addons/prometheus.yaml, kiali.yaml).
ADDON_LABELS = {
    "prometheus": {"app.kubernetes.io/component": "server", "app.kubernetes.io/name": "prometheus",
                   "app.kubernetes.io/instance": "prometheus", "app.kubernetes.io/part-of": "prometheus"},
    "kiali": {"app": "kiali", "app.kubernetes.io/name": "kiali", "app.kubernetes.io/instance": "kiali",
              "app.kubernetes.io/part-of": "kiali", "version": "v2.27.0"},
}
ADDON_CONTAINERS = {"prometheus": ("prometheus-server-configmap-reload", "prometheus-server"), "kiali": ("kiali",)}


def addon_pod(addon: str, ready: bool = True, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An addon's pod in istio-system as the API server lists it, with the addon's labels (or these)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{addon}-7d9f8c6b4-k2x7p", "namespace": ISTIO_NAMESPACE,
                         "labels": dict(ADDON_LABELS[addon] if labels is None else labels)},
            "spec": {"containers": [{"name": c, "image": "img"} for c in ADDON_CONTAINERS[addon]]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def seed_addon(api: FakeApi, addon: str, ready: bool = True, labels: Mapping[str, str] | None = None) -> None:
    pod = addon_pod(addon, ready, labels)
    api.objects[f"/api/v1/namespaces/{ISTIO_NAMESPACE}/pods/{pod['metadata']['name']}"] = pod


@dataclass
class Addons:
    prometheus: Prometheus
    kiali: Kiali
    forwarded: list[tuple[str, str, int]]  # (pod, namespace, port) of every port-forward


@contextmanager
def addons(api: FakeApi, monkeypatch: pytest.MonkeyPatch, major: int = 3) -> Iterator[Addons]:
    """Ready Prometheus and Kiali pods in istio-system whose ports (9090, 20001), forwarded, reach
    the stand-ins."""
    prometheus, kiali = Prometheus(major), Kiali()
    servers = {PROMETHEUS.port: serve_json(prometheus.answer), KIALI.port: serve_json(kiali.answer)}
    forwarded = fake_port_forward(monkeypatch, {port: s.server_address[:2] for port, s in servers.items()})
    for addon in (PROMETHEUS, KIALI):
        seed_addon(api, addon.name)
    try:
        yield Addons(prometheus, kiali, forwarded)
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()


# ---------------------------------------------------------------------------------------------
# curl's proxy under a reviews split, as pilot-agent prints its stats


def subset_stats(ns: str, by_subset: Mapping[str, int]) -> str:
    """curl's proxy on Istio 1.24+ with the subset clusters of reviews (destination-rule-all.yaml):
    upstream_rq_2xx per subset, which its proxy.istio.io/config keeps (manifests/clients/curl.yaml),
    beside its near misses: the cluster without a subset, another worker's namespace, another
    service."""
    cluster = f"cluster.outbound|9080|{{}}|reviews.{ns}.svc.cluster.local;."
    stats = {f"{cluster.format(subset)}upstream_rq_2xx": n for subset, n in by_subset.items()}
    stats[f"{cluster.format('')}upstream_rq_2xx"] = 11
    stats[f"cluster.outbound|9080|v1|reviews.{ns}-gw1.svc.cluster.local;.upstream_rq_2xx"] = 500
    stats[f"cluster.outbound|9080||ratings.{ns}.svc.cluster.local;.upstream_rq_2xx"] = 7
    stats["server.live"] = 1
    return "\n".join(f"{name}: {value}" for name, value in sorted(stats.items())) + "\n"
