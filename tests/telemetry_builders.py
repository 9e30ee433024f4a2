"""Shared helpers of the telemetry tests on a cluster: Istio's standard metrics as Prometheus holds
them, and stand-ins for the Prometheus and Kiali pods of Istio's samples/addons, reached through
the fake API's port-forward (tests/fakeforward.py). The Prometheus stand-in keeps its own clock,
minutes off this machine's, and when it scraped each pod, so a test can play its scrapes.

Test files import these from here; the rest of the shared helpers are in tests/builders.py and
tests/cluster_builders.py.
"""

import hashlib
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
from conformance.verdicts.telemetry import BOOKINFO_ACCOUNTS
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
# Envoy's default histogram bounds, in ms (envoyproxy/envoy source/common/stats/histogram_impl.cc).
DURATION_BOUNDS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
                   1800000, 3600000)
# Prometheus's clock against this machine's: a cluster's nodes may be minutes off the test host.
CLOCK_SKEW = -7 * 60.0
# How far back an instant query looks for a series' latest sample (prometheus docs/querying/basics.md,
# "Staleness": --query.lookback-delta, 5m).
LOOKBACK = 300.0


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]  # __name__ among them
    value: float
    scraped: float | None = None  # its timestamp by Prometheus's clock; None: its pod's last scrape


def pod_name(workload: str) -> str:
    """The pod of a workload's one replica, as a Deployment names it (<name>-<template hash>-<suffix>)."""
    return f"{workload}-6c8f7d9b5-x2q4z"


def _app_version(workload: str) -> tuple[str, str]:
    """A Bookinfo workload's app and version labels ("reviews-v2"); curl has no version label."""
    app, _, version = workload.rpartition("-")
    return (app, version) if re.fullmatch(r"v\d+", version) else (workload, "unknown")


def _target_labels(ns: str, pod: str) -> dict[str, str]:
    """What Istio's Prometheus adds to each series of a pod it scrapes, `up` among them (istio/istio
    samples/addons/prometheus.yaml, job kubernetes-pods: the pod's labels, namespace, pod, node), and
    the target's instance: the pod's IP and the status port injection points it at (15020)."""
    app, version = _app_version(pod.rsplit("-", 2)[0])
    ip = int(_node_id(ns, pod)[:4], 16)
    labels = {"app": app, "namespace": ns, "pod": pod, "node": "kind-worker", "job": "kubernetes-pods",
              "instance": f"10.244.{(ip >> 8) % 4}.{ip % 250 + 2}:15020", "pod_template_hash": "6c8f7d9b5",
              "security_istio_io_tlsMode": "istio", "service_istio_io_canonical_name": app,
              "service_istio_io_canonical_revision": version if version != "unknown" else "latest"}
    if version != "unknown":
        labels["version"] = version
    return labels


def request_series(name: str, ns: str, reporter: str, source: str, destination: str, value: float,
                   code: str = "200", **extra: str) -> Sample:
    """One series of an Istio standard metric as Prometheus holds it: the proxy's labels for a request
    from workload `source` to `destination` over mutual TLS, and those of the pod scraped (the
    reporter's)."""
    (source_app, source_version), (app, version) = _app_version(source), _app_version(destination)
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
        **_target_labels(ns, pod_name(source if reporter == "source" else destination)),
    }
    return Sample({**labels, **extra}, value)


def duration_buckets(ns: str, reporter: str, source: str, destination: str, count: int) -> list[Sample]:
    """istio_request_duration_milliseconds_bucket of one edge as scraped, every request under 25 ms."""
    bounds = [*(f"{b:g}" for b in DURATION_BOUNDS), "+Inf"]
    counts = [0 if b in (0.5, 1, 5, 10) else count for b in DURATION_BOUNDS] + [count]
    return [request_series("istio_request_duration_milliseconds_bucket", ns, reporter, source, destination, n, le=le)
            for le, n in zip(bounds, counts)]


# ---------------------------------------------------------------------------------------------
# Stand-ins for the addons' pods


def _serve(answer: Callable[[str, dict[str, list[str]]], tuple[int, Any]]) -> ThreadingHTTPServer:
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


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_SELECTOR = re.compile(rf"\s*({_NAME})?\s*(?:\{{(.*)\}})?\s*")
_TIME = re.compile(r"\s*vector\s*\(\s*time\s*\(\s*\)\s*\)\s*")
_TIMESTAMP = re.compile(r"\s*timestamp\s*\((.*)\)\s*", re.DOTALL)


def _selector(query: str) -> list[tuple[str, str, str]] | str:
    """An instant vector selector's matchers (the metric name as __name__), or why it does not parse."""
    whole = _SELECTOR.fullmatch(query)
    if not query.strip() or whole is None:
        return ("unsupported or malformed expression (the stand-in knows instant vector selectors, "
                "timestamp() of one, and vector(time()))")
    name, body = whole.groups()
    matchers = [("__name__", "=", name)] if name else []
    rest = body or ""
    while rest.strip():
        m = _MATCHER.match(rest)
        if m is None:
            return f"unexpected {rest.strip()[:20]!r} in label matching"
        matchers.append((m[1], m[2], m[3].replace('\\"', '"').replace("\\\\", "\\")))
        rest = rest[m.end():]
    return matchers if matchers else "vector selector must contain at least one non-empty matcher"


def _matches(labels: Mapping[str, str], matchers: Sequence[tuple[str, str, str]]) -> bool:
    def one(label: str, op: str, value: str) -> bool:
        have = labels.get(label, "")  # an absent label matches as the empty string
        if op in ("=", "!="):
            return (have == value) == (op == "=")
        return bool(re.fullmatch(value, have)) == (op == "=~")  # anchored, as in PromQL
    return all(one(*m) for m in matchers)


def _pod_of(labels: Mapping[str, str]) -> tuple[str, str] | None:
    return (labels["namespace"], labels["pod"]) if "namespace" in labels and "pod" in labels else None


def _vector(result: list[dict[str, Any]]) -> tuple[int, Any]:
    return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


@dataclass
class Prometheus:
    """Prometheus `major` (2 or 3) answering /api/v1/query at its `clock` over what it scraped last
    (`samples`, and `up` of each pod stamped with its last scrape: `scrapes`, else when the stand-in
    started) in its HTTP API's shape (prometheus docs/querying/api.md): {"status": "success", "data":
    {"resultType": "vector", "result": [{"metric": {...}, "value": [time, "number"]}]}}. It evaluates
    instant vector selectors, timestamp() of one (each sample's own time, the metric name dropped, as
    PromQL does) and vector(time()); anything else is 400 bad_data; `refusal` (status, errorType,
    error) refuses every query. 3.x stores a histogram's `le` normalized as a float, "1" becoming
    "1.0" (prometheus/prometheus docs/migration.md, "le and quantile label values"); 2.x as scraped."""

    major: int = 3
    samples: list[Sample] = field(default_factory=list)
    refusal: tuple[int, str, str] | None = None
    asked: list[str] = field(default_factory=list)
    # Seconds since the epoch; it moves only by advance(), as a test plays it.
    clock: float = field(default_factory=lambda: float(int(time.time() + CLOCK_SKEW)))
    scrapes: dict[tuple[str, str], float] = field(default_factory=dict)  # (namespace, pod): last scrape
    # Called with each query before it is answered: where a test plays what Prometheus does meanwhile.
    on_query: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        self.started = self.clock
        self._lock = threading.Lock()  # the server answers on its own threads

    def advance(self, seconds: float) -> float:
        with self._lock:
            self.clock += seconds
            return self.clock

    def scrape(self, ns: str, pod: str, samples: Sequence[Sample] | None = None, at: float | None = None) -> None:
        """Prometheus scrapes `pod` of `ns` at `at` (its clock's now): the pod's series become those
        of `samples` that carry its namespace and pod labels, when given."""
        with self._lock:
            self.scrapes[(ns, pod)] = self.clock if at is None else at
            if samples is not None:
                self.samples = [*(s for s in self.samples if _pod_of(s.labels) != (ns, pod)),
                                *(s for s in samples if _pod_of(s.labels) == (ns, pod))]

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if path != "/api/v1/query":
            return 404, b"404 page not found\n"
        promql = (query.get("query") or [""])[0]
        self.asked.append(promql)
        if self.on_query is not None:
            self.on_query(promql)
        if self.refusal is not None:
            status, kind, error = self.refusal
            return status, {"status": "error", "errorType": kind, "error": error}
        with self._lock:
            return self._evaluate(promql)

    def _evaluate(self, promql: str) -> tuple[int, Any]:
        at = self.clock
        if _TIME.fullmatch(promql):
            return _vector([{"metric": {}, "value": [_seconds(at), _number(at)]}])
        timestamp = _TIMESTAMP.fullmatch(promql)
        matchers = _selector(timestamp[1] if timestamp else promql)
        if isinstance(matchers, str):
            return 400, {"status": "error", "errorType": "bad_data",
                         "error": f'invalid parameter "query": 1:1: parse error: {matchers}'}
        # The latest sample of each series within the lookback window.
        held = [(labels, value, t) for labels, value, t in self._held()
                if _matches(labels, matchers) and at - LOOKBACK < t <= at]
        if not timestamp:
            return _vector([{"metric": labels, "value": [_seconds(at), _number(value)]} for labels, value, _ in held])
        result = [{"metric": {k: v for k, v in labels.items() if k != "__name__"}, "value": [_seconds(at), _number(t)]}
                  for labels, _, t in held]
        if len({json.dumps(r["metric"], sort_keys=True) for r in result}) < len(result):
            return 422, {"status": "error", "errorType": "execution",
                         "error": "vector cannot contain metrics with the same labelset"}
        return _vector(result)

    def _held(self) -> list[tuple[dict[str, str], float, float]]:
        """(labels as stored, value, timestamp) of every series: `samples`, and `up` of each pod scraped."""
        pods = {pod: self.started for s in self.samples if (pod := _pod_of(s.labels)) is not None}
        pods.update(self.scrapes)
        def stamp(s: Sample) -> float:
            return pods.get(_pod_of(s.labels) or ("", ""), self.started) if s.scraped is None else s.scraped
        held = [(self._stored(s.labels), s.value, stamp(s)) for s in self.samples]
        return held + [({"__name__": "up", **_target_labels(ns, pod)}, 1.0, t) for (ns, pod), t in pods.items()]

    def _stored(self, labels: Mapping[str, str]) -> dict[str, str]:
        le = labels.get("le")
        if self.major < 3 or le is None or le == "+Inf" or "e" in le or "." in le:
            return dict(labels)
        return {**labels, "le": f"{le}.0"}


def _number(value: float) -> str:
    """A sample's value as the API writes it (Go's strconv 'f' format, shortest: "20", "0.5")."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _seconds(at: float) -> float | int:
    """An evaluation time as the API writes it: seconds, to the millisecond, no fraction when whole."""
    return int(at) if float(at).is_integer() else round(at, 3)


def _node_id(*parts: str) -> str:
    return hashlib.md5("|".join(parts).encode()).hexdigest()


def kiali_graph(ns: str, calls: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Kiali's workload graph of `ns` in cytoscape's JSON (kiali graph/config/cytoscape): a node per
    workload (ids opaque), an edge per (source, target) workload pair that called."""
    nodes: dict[str, dict[str, Any]] = {}

    def node(workload: str) -> str:
        app, version = _app_version(workload)
        ident = _node_id("Kubernetes", ns, workload)
        nodes.setdefault(ident, {"data": {"id": ident, "nodeType": "workload", "cluster": "Kubernetes",
                                          "namespace": ns, "workload": workload, "app": app, "version": version,
                                          "traffic": [{"protocol": "http", "rates": {"httpIn": "1.00"}}]}})
        return ident

    edges = []
    for source, target in calls:
        app = _app_version(target)[0]
        responses = {"200": {"flags": {"-": "100.0"}, "hosts": {f"{app}.{ns}.svc.cluster.local": "100.0"}}}
        ends = (node(source), node(target))
        edges.append({"data": {"id": _node_id(*ends), "source": ends[0], "target": ends[1], "isMTLS": "100",
                               "responseTime": "12", "throughput": "1534",
                               "traffic": {"protocol": "http", "rates": {"http": "1.00", "httpPercentReq": "100.0"},
                                           "responses": responses}}})
    return {"nodes": list(nodes.values()), "edges": edges}


@dataclass
class Kiali:
    """Kiali answering its workload graph API under the addon's web_root /kiali (istio/istio
    samples/addons/kiali.yaml): {"elements": ...} per namespace in `graphs`, an empty graph for any
    other; 400 {"error": ...} without a namespace or for a graph type the stand-in does not draw."""

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
        nodes = [n for ns in namespaces for n in self.graphs.get(ns, {}).get("nodes", [])]
        edges = [e for ns in namespaces for e in self.graphs.get(ns, {}).get("edges", [])]
        return 200, {"timestamp": int(time.time()), "duration": 600, "graphType": graph_type,
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
    servers = {PROMETHEUS.port: _serve(prometheus.answer), KIALI.port: _serve(kiali.answer)}
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
