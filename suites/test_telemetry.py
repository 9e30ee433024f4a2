"""MESH-TELEMETRY: Istio's standard metrics in Prometheus, the proxies' own counters and Kiali's
service graph, each counted exactly against the traffic the client sent and the replies it saw.

Prometheus holds what its last scrape found: StandardMetrics reads it once every pod has been
scraped after the convergence probes, sends, reads it again once every pod has been scraped after
the traffic (conformance/probes/prometheus.py), and decides that the increases are exact.
ServiceGraph asks Kiali for the graph of the time since its own convergence only, so traffic of
earlier tests cannot draw the edges it waits for."""

from collections import Counter
from collections.abc import Mapping, Sequence
from functools import partial

import pytest

from conformance.checks import converge, decide, measure
from conformance.names import PROMETHEUS_SCRAPE
from conformance.probes import envoy_stats
from conformance.probes.classify import version_of
from conformance.probes.prometheus import metric, now, seconds_since, settled
from conformance.settings import RunSettings
from conformance.targets.base import Batch, Target
from conformance.verdicts import all_status, only_version
from conformance.verdicts.telemetry import (GRAPH_EDGES, REQUEST_DURATION, REQUESTS_TOTAL, buckets, counted,
                                           counters_match, graph_has, istio_edge)
from conformance.waiting import Verdict, wait_for
from conformance.fixtures.mesh import PRODUCT_REVIEWS, REVIEWS, Apply, Bookinfo, Evidence

COUNT = 20  # requests per path: each one is counted
REVIEWS_PORT = 9080
THREE_WAY = ("v1", "v2", "v3")

def scraped_pods(target: Target, ns: str) -> list[str]:
    """The pods Istio's injection pointed Prometheus at: each must be scraped after the traffic."""
    pods = [p.name for p in target.pods(ns) if p.ready and p.annotations.get(PROMETHEUS_SCRAPE) == "true"]
    decide(Verdict(bool(pods), f"{len(pods)} ready pods of {ns} annotated {PROMETHEUS_SCRAPE}: true"))
    return pods


def skip_without_prometheus(target: Target) -> None:
    reason = target.prometheus_unavailable()
    if reason is not None:
        pytest.skip(reason)


def answered(batch: Batch) -> int:
    """productpage's reviews API answers 200 only with reviews' reply: one call each."""
    return sum(r.status == 200 for r in batch)


@pytest.mark.feature("StandardMetrics")
def test_standard_metrics(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                          evidence: Evidence) -> None:
    skip_without_prometheus(target)
    ns = bookinfo.namespace
    applied("istio/traffic/destination-rule-all.yaml", "telemetry/virtual-service-reviews-v2.yaml")
    for url in (REVIEWS, PRODUCT_REVIEWS):  # curl's proxy and productpage's each take the route
        converge(partial(bookinfo.client.send, url, 1), lambda b: only_version(b, "v2"), run_settings.timeouts,
                 f"{url} -> reviews v2")
    counters, pods = (REQUESTS_TOTAL, f"{REQUEST_DURATION}_count"), scraped_pods(target, ns)
    before, _ = settled(target, ns, pods, counters, run_settings.timeouts)
    direct = measure(partial(bookinfo.client.send, REVIEWS, COUNT), f"{COUNT} x GET {REVIEWS}")
    via_productpage = measure(partial(bookinfo.client.send, PRODUCT_REVIEWS, COUNT), f"{COUNT} x GET {PRODUCT_REVIEWS}")
    decide(only_version(direct, "v2"))
    decide(only_version(via_productpage, "v2"))
    n, via = len(direct), answered(via_productpage)
    edges = [
        istio_edge(ns, "source", "curl", "reviews-v2", n),
        istio_edge(ns, "destination", "curl", "reviews-v2", n),
        istio_edge(ns, "destination", "productpage-v1", "reviews-v2", via),
        # reviews v2 asks ratings for the stars of every request it serves.
        istio_edge(ns, "destination", "reviews-v2", "ratings-v1", n + via),
    ]
    after, took = settled(target, ns, pods, counters, run_settings.timeouts)
    requests = decide(counted(REQUESTS_TOTAL, before[REQUESTS_TOTAL], after[REQUESTS_TOTAL], edges))
    timing = decide(counted(counters[1], before[counters[1]], after[counters[1]], edges))
    histogram = decide(buckets(metric(target, f"{REQUEST_DURATION}_bucket", ns), edges[1]))
    evidence(f"{requests}; {timing}; {histogram}; Prometheus held them {took:.1f} s after the last request")


def subset_counters(target: Target, ns: str, versions: Sequence[str]) -> dict[str, int]:
    stats = envoy_stats.parse(target.proxy_stats("curl", ns))
    fqdn = f"reviews.{ns}.svc.cluster.local"
    return {v: envoy_stats.total(stats, envoy_stats.outbound_cluster(REVIEWS_PORT, fqdn, "upstream_rq_2xx", v))
            for v in versions}


def replies_by_version(batch: Batch) -> Counter[str]:
    return Counter(version_of(r.served_by) or "<unknown>" for r in batch if r.status == 200)


def only_versions(batch: Batch, versions: Sequence[str]) -> Verdict:
    seen = replies_by_version(batch)
    ok = len(seen) > 0 and sum(seen.values()) == len(batch) and set(seen) <= set(versions)
    return Verdict(ok, f"replies by version {dict(seen)} of {len(batch)}, expected only {', '.join(versions)}")


@pytest.mark.feature("ProxyStats")
def test_proxy_stats(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                     evidence: Evidence) -> None:
    ns = bookinfo.namespace
    applied("istio/traffic/destination-rule-all.yaml", "istio/traffic/virtual-service-reviews-80-20.yaml")
    versions = ("v1", "v2")
    converge(partial(bookinfo.client.send, REVIEWS, 10), partial(only_versions, versions=versions),
             run_settings.timeouts, "reviews split over v1 and v2 only")
    before = subset_counters(target, ns, versions)
    batch = measure(partial(bookinfo.client.send, REVIEWS, 5 * COUNT), f"{5 * COUNT} x GET {REVIEWS}")
    after = subset_counters(target, ns, versions)
    seen = replies_by_version(batch)
    verdict = decide(counters_match(seen, {v: after[v] - before[v] for v in versions}, "upstream_rq_2xx"))
    decide(all_status(batch, 200))
    evidence(f"{len(batch)} requests: {verdict}")


def all_versions(batch: Batch, versions: Sequence[str]) -> Verdict:
    """Every reply 200, and each of `versions` served some."""
    seen = replies_by_version(batch)
    ok = sum(seen.values()) == len(batch) > 0 and set(versions) <= set(seen)
    return Verdict(ok, f"replies by version {dict(seen)} of {len(batch)}, expected 200s from each of "
                       f"{', '.join(versions)}")


@pytest.mark.feature("ServiceGraph")
def test_service_graph(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                       evidence: Evidence) -> None:
    skip_without_prometheus(target)
    ns = bookinfo.namespace
    applied("istio/traffic/destination-rule-all.yaml", "istio/traffic/virtual-service-reviews-three-way.yaml")
    probe = partial(bookinfo.client.send, PRODUCT_REVIEWS, COUNT)
    converge(probe, partial(all_versions, versions=THREE_WAY), run_settings.timeouts,
             "productpage's reviews from v1, v2 and v3")
    # Kiali draws an edge for a rate over its window above zero, so the window must hold a scrape
    # of each pod from before the pages: the moment, then a scrape of every pod after it.
    since = now(target)
    settled(target, ns, scraped_pods(target, ns), (), run_settings.timeouts)
    pages = measure(partial(bookinfo.client.send, PRODUCT_REVIEWS, 3 * COUNT), f"{3 * COUNT} x GET {PRODUCT_REVIEWS}")
    spread = decide(all_versions(pages, THREE_WAY))
    last: Mapping[str, object] = {}

    def pending() -> str | None:
        nonlocal last
        # Kiali's default window is 10 minutes (kiali graph/options.go): earlier tests' traffic
        # would draw the same edges. This one starts at the moment, by Prometheus's clock, which
        # Kiali's shares (both are pods of the cluster).
        last = target.kiali_graph(ns, seconds_since(target, since))
        verdict = graph_has(last, GRAPH_EDGES)
        return None if verdict.ok else verdict.message

    wait_for(pending, run_settings.timeouts.metrics, run_settings.timeouts.metrics_poll, "Kiali's graph")
    evidence(f"{len(pages)} requests through productpage ({spread}): {decide(graph_has(last, GRAPH_EDGES))}")
