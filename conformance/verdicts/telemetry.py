"""Istio's standard metrics as Prometheus returns them, the proxies' own counters, and Kiali's
graph, each decided exactly against the traffic the client sent and saw.

A Prometheus instant query returns series: {"metric": {label: value}, "value": [time, "number"]}
(prometheus docs/querying/api.md). Istio's labels: istio/proxy
testdata/metric/*_request_total.yaml.tmpl and istio.io docs reference/config/metrics.
"""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conformance.names import spiffe_id
from conformance.waiting import Verdict

Series = Mapping[str, Any]
# Istio's standard HTTP metrics (istio/proxy 1.28.0 istio_stats.cc; istio.io docs reference/config/metrics),
# as the suite reads them and the local mesh makes them.
REQUESTS_TOTAL = "istio_requests_total"
REQUEST_DURATION = "istio_request_duration_milliseconds"
# The duration histogram's bounds in ms: Envoy's default buckets, which Istio keeps
# (envoyproxy/envoy source/common/stats/histogram_impl.cc HistogramSettingsImpl::defaultBuckets).
ENVOY_DEFAULT_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                         60000, 300000, 600000, 1800000, 3600000)
# The labels that tell one edge of the traffic from another in a message.
SHOWN = ("reporter", "source_workload", "destination_workload", "destination_version", "response_code",
         "connection_security_policy")


@dataclass(frozen=True)
class Edge:
    """One expected increase of a metric: the sum over every series whose labels include `labels`."""

    name: str
    labels: Mapping[str, str]
    expected: int


# Service accounts of Istio's samples/bookinfo/platform/kube/bookinfo.yaml and samples/curl, by workload.
BOOKINFO_ACCOUNTS = {"curl": "curl", "productpage-v1": "bookinfo-productpage", "details-v1": "bookinfo-details",
                     "reviews-v1": "bookinfo-reviews", "reviews-v2": "bookinfo-reviews",
                     "reviews-v3": "bookinfo-reviews", "ratings-v1": "bookinfo-ratings"}
# The edges of Kiali's workload graph that productpage's pages draw with reviews split three ways
# (reviews v1 calls no ratings).
GRAPH_EDGES = (("productpage-v1", "reviews-v1"), ("productpage-v1", "reviews-v2"),
               ("productpage-v1", "reviews-v3"), ("reviews-v2", "ratings-v1"), ("reviews-v3", "ratings-v1"))


def istio_edge(ns: str, reporter: str, source: str, destination: str, count: int) -> Edge:
    """The requests of one Bookinfo workload to another (`<app>-<version>`, its Service named for
    the app) as one reporter counts them: Istio's labels for them, all 200, over mutual TLS."""
    app, _, version = destination.rpartition("-")
    labels = {
        "reporter": reporter,
        "source_workload": source, "source_workload_namespace": ns,
        "destination_workload": destination, "destination_workload_namespace": ns,
        "destination_app": app, "destination_version": version,
        "destination_service": f"{app}.{ns}.svc.cluster.local", "destination_service_name": app,
        "destination_service_namespace": ns,
        "request_protocol": "http", "response_code": "200",
        # The server's proxy knows the connection was mutual TLS; the client's reports unknown.
        "connection_security_policy": "mutual_tls" if reporter == "destination" else "unknown",
    }
    if reporter == "destination":
        labels["source_principal"] = spiffe_id(ns, BOOKINFO_ACCOUNTS[source])
    return Edge(f"{reporter} {source} -> {destination}", labels, count)


def value(series: Iterable[Series], labels: Mapping[str, str]) -> float:
    return sum(float(s["value"][1]) for s in series if all(s["metric"].get(k) == v for k, v in labels.items()))


def increase(before: Sequence[Series], after: Sequence[Series], edge: Edge) -> float:
    """A series absent before (no request of its kind yet) counts from zero."""
    return value(after, edge.labels) - value(before, edge.labels)


def _number(x: float) -> str:
    return f"{x:g}"


def counted(metric: str, before: Sequence[Series], after: Sequence[Series], edges: Sequence[Edge]) -> Verdict:
    """Every edge increased by exactly its count: no request lost, none counted twice or elsewhere."""
    seen = [f"{e.name} +{_number(increase(before, after, e))} (sent {e.expected})" for e in edges]
    wrong = [e for e in edges if increase(before, after, e) != e.expected]
    if wrong:
        return Verdict(False, f"{metric}: expected each edge to increase by exactly its requests; "
                              f"{len(wrong)} did not: {'; '.join(seen)}{_what_moved(before, after)}")
    return Verdict(True, f"{metric}: {'; '.join(seen)}")


def _what_moved(before: Sequence[Series], after: Sequence[Series], most: int = 6) -> str:
    """The series that did increase, by their telling labels: where the counts went instead."""
    moved: Counter[str] = Counter()
    for s in after:
        labels = s["metric"]
        grew = float(s["value"][1]) - value(before, labels)
        if grew > 0:
            moved[", ".join(f"{k}={labels.get(k, '')}" for k in SHOWN)] += int(grew)
    if not moved:
        return "; no series of it increased"
    listed = "; ".join(f"{{{k}}} +{n}" for k, n in moved.most_common(most))
    return f"; increased: {listed}"


def buckets(series: Sequence[Series], edge: Edge) -> Verdict:
    """The edge's histogram has buckets, +Inf among them (Envoy's default bounds, 0.5 ms to 1 h)."""
    bounds = {s["metric"].get("le") for s in series if all(s["metric"].get(k) == v for k, v in edge.labels.items())}
    if "+Inf" in bounds and len(bounds) > 1:
        return Verdict(True, f"{edge.name}: {len(bounds)} buckets")
    return Verdict(False, f"{edge.name}: expected histogram buckets up to le=+Inf; found {sorted(b or '' for b in bounds)}")


def counters_match(seen: Mapping[str, int], counted_by_proxy: Mapping[str, int], counter: str) -> Verdict:
    """The replies the client saw per version equal its proxy's counter per subset cluster, exactly."""
    versions = sorted(set(seen) | set(counted_by_proxy))
    pairs = "; ".join(f"{v}: saw {seen.get(v, 0)}, {counter} +{counted_by_proxy.get(v, 0)}" for v in versions)
    if all(seen.get(v, 0) == counted_by_proxy.get(v, 0) for v in versions) and sum(seen.values()) > 0:
        return Verdict(True, pairs)
    return Verdict(False, f"expected the client proxy's {counter} per subset to equal the 200 replies per version; "
                          f"{pairs}")


def graph_edges(elements: Mapping[str, Any]) -> set[tuple[str, str]]:
    """Kiali's graph (elements.nodes/edges, kiali graph/config/cytoscape) as (source, target)
    workload pairs; a node without a workload (a service node) goes by its app."""
    names = {}
    for node in elements.get("nodes") or []:
        data = node.get("data", {})
        names[data.get("id")] = data.get("workload") or data.get("app") or data.get("service") or "?"
    return {(names.get(e["data"].get("source"), "?"), names.get(e["data"].get("target"), "?"))
            for e in elements.get("edges") or [] if "data" in e}


def graph_has(elements: Mapping[str, Any], wanted: Iterable[tuple[str, str]]) -> Verdict:
    found = graph_edges(elements)
    missing = [w for w in wanted if w not in found]
    shown = ", ".join(f"{s} -> {t}" for s, t in sorted(found)) or "none"
    if missing:
        return Verdict(False, f"expected Kiali's graph to show {', '.join(f'{s} -> {t}' for s, t in missing)}; "
                              f"its edges: {shown}")
    return Verdict(True, f"Kiali's graph shows {', '.join(f'{s} -> {t}' for s, t in wanted)}")
