"""Reading Istio's standard metrics on a cluster once Prometheus holds every request that has ended
(conformance/probes/prometheus.py), against the fake API's port-forward to a Prometheus stand-in
(tests/fake_prometheus.py) that keeps its own clock and plays its scrapes of each pod."""

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import ConformanceError, NotConverged
from conformance.names import ISTIO_NAMESPACE
from conformance.probes.prometheus import RECORDED_WITHIN, last_scrapes, now, scraped_since, seconds_since, settled
from conformance.settings import Timeouts
from conformance.targets.cluster import ClusterTarget
from conformance.verdicts.telemetry import REQUEST_DURATION as DURATION
from conformance.verdicts.telemetry import REQUESTS_TOTAL as REQUESTS
from conformance.verdicts.telemetry import Edge, buckets, counted, istio_edge
from tests.cluster_builders import running_cluster
from tests.fakeapi import FakeApi
from tests.fake_prometheus import Prometheus, Sample, pod_name
from tests.telemetry_builders import ISTIO_REQUEST_LABELS, addons, duration_buckets, request_series

NS, OTHER = "bookinfo-r1", "bookinfo-r1-gw1"  # the run's namespace, and a parallel worker's


@pytest.fixture
def cluster(api: FakeApi, tmp_path: Path) -> Iterator[ClusterTarget]:
    with running_cluster(api, tmp_path, ISTIO_NAMESPACE) as target:
        yield target




# --- Istio's standard metrics, from Prometheus through the port-forward -----------------------------


def edge(reporter: str, source: str, destination: str, count: int) -> Edge:
    return istio_edge(NS, reporter, source, destination, count)


def test_the_suites_edges_select_on_labels_istios_proxies_emit() -> None:
    keys = set(edge("destination", "curl", "reviews-v2", 1).labels)
    assert "destination_workload" in keys and "source_principal" in keys
    assert sorted(keys - ISTIO_REQUEST_LABELS) == []


def query(target: ClusterTarget, name: str) -> list[dict[str, Any]]:
    """As suites/test_telemetry.py metric() asks."""
    return target.prometheus_query(f'{name}{{destination_workload_namespace="{NS}"}}')


N, VIA = 20, 18  # requests from curl to reviews v2, and pages through productpage that called it
EDGES = [edge("source", "curl", "reviews-v2", N), edge("destination", "curl", "reviews-v2", N),
         edge("destination", "productpage-v1", "reviews-v2", VIA), edge("destination", "reviews-v2", "ratings-v1", N + VIA)]


def scraped(name: str, curl: int, productpage: int, ratings: int, failed: int) -> list[Any]:
    """What Prometheus holds of `name`: the suite's edges with these totals (productpage's absent
    while 0), beside series that must not count: `failed` 503s of curl's edge, the reporter that is
    not asked for, and the same edge in a parallel worker's namespace."""
    series = [request_series(name, NS, "source", "curl", "reviews-v2", curl),
              request_series(name, NS, "destination", "curl", "reviews-v2", curl),
              request_series(name, NS, "destination", "curl", "reviews-v2", failed, code="503"),
              request_series(name, NS, "source", "reviews-v2", "ratings-v1", ratings + 3),
              request_series(name, NS, "destination", "reviews-v2", "ratings-v1", ratings),
              request_series(name, OTHER, "destination", "curl", "reviews-v2", 100 + curl)]
    if productpage:
        series.append(request_series(name, NS, "destination", "productpage-v1", "reviews-v2", productpage))
    return series


@pytest.mark.parametrize("major", [2, 3])
@pytest.mark.parametrize("last_counted", [N, N - 1, N + 1])
def test_increases_between_two_settled_readings_are_counted_exactly_per_edge(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch, major: int, last_counted: int) -> None:
    with addons(api, monkeypatch, major) as fake:
        earlier = fake.prometheus.samples = scraped(REQUESTS, 5, 0, 9, failed=2)  # a parallel worker's among them
        # Each settled(): one look too soon, then every pod of NS scraped in time.
        fake.prometheus.on_query = playing(fake.prometheus, [{}, {pod: earlier for pod in PODS}])
        before, _ = settled(cluster, NS, PODS, [REQUESTS], WAIT)
        later = scraped(REQUESTS, 5 + last_counted, VIA, 9 + N + VIA, failed=3)
        fake.prometheus.on_query = playing(fake.prometheus, [{}, {pod: later for pod in PODS}])
        after, _ = settled(cluster, NS, PODS, [REQUESTS], WAIT)
    assert fake.prometheus.asked == ["vector(time())", UP, UP, READ] * 2
    assert {pod for pod, _, _ in fake.forwarded} == {"prometheus-7d9f8c6b4-k2x7p"}
    assert {(ns, port) for _, ns, port in fake.forwarded} == {(ISTIO_NAMESPACE, 9090)}
    assert all(s["metric"]["destination_workload_namespace"] == NS for s in before[REQUESTS] + after[REQUESTS])
    verdict = counted(REQUESTS, before[REQUESTS], after[REQUESTS], EDGES)
    assert verdict.ok == (last_counted == N), verdict.message
    curls = (f"source curl -> reviews-v2 +{last_counted} (sent {N}); destination curl -> reviews-v2 +{last_counted} "
             f"(sent {N}); ")
    others = (f"destination productpage-v1 -> reviews-v2 +{VIA} (sent {VIA}); destination reviews-v2 -> ratings-v1 "
              f"+{N + VIA} (sent {N + VIA})")
    if last_counted == N:
        assert verdict.message == f"{REQUESTS}: {curls}{others}"
    else:  # one short or one over on both of curl's edges
        assert verdict.message.startswith(f"{REQUESTS}: expected each edge to increase by exactly its requests; "
                                          f"2 did not: {curls}{others}; increased: "), verdict.message


@pytest.mark.parametrize("major", [2, 3])
def test_the_duration_histogram_has_its_buckets_in_either_prometheus(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch, major: int) -> None:
    name = f"{DURATION}_bucket"
    with addons(api, monkeypatch, major) as fake:
        fake.prometheus.samples = duration_buckets(NS, "destination", "curl", "reviews-v2", N)
        series = query(cluster, name)
        fake.prometheus.samples = [s for s in fake.prometheus.samples if s.labels["le"] != "+Inf"]
        without_inf = query(cluster, name)
    assert ("1.0" if major == 3 else "1") in {s["metric"]["le"] for s in series}
    verdict = buckets(series, EDGES[1])
    assert verdict.ok and verdict.message == "destination curl -> reviews-v2: 20 buckets", verdict.message
    assert not buckets(without_inf, EDGES[1]).ok


@pytest.mark.parametrize(("promql", "refusal", "error"), [
    # Prometheus' parser (its HTTP API answers 400 bad_data).
    (f'{REQUESTS}{{destination_workload_namespace="{NS}"', None, "bad_data: invalid parameter \"query\": 1:1: "
                                                                 "parse error: unsupported or malformed expression"),
    # Valid PromQL the stand-in does not evaluate: refused the same way rather than answered wrong.
    (f"timestamp(rate({REQUESTS}[5m]))", None, "bad_data: invalid parameter \"query\": 1:1: parse error: unsupported"),
    # Too much for the server (422 execution).
    (f'{REQUESTS}{{destination_workload_namespace="{NS}"}}',
     (422, "execution", "query processing would load too many samples into memory in query execution"),
     "execution: query processing would load too many samples into memory in query execution"),
])
def test_a_query_prometheus_refuses_is_an_error_naming_the_query(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch, promql: str,
        refusal: tuple[int, str, str] | None, error: str) -> None:
    with addons(api, monkeypatch) as fake:
        fake.prometheus.refusal = refusal
        with pytest.raises(ConformanceError) as refused:
            cluster.prometheus_query(promql)
    assert str(refused.value).startswith(f"Prometheus refused the query {promql!r}: {error}"), str(refused.value)
    assert fake.prometheus.asked == [promql]


# --- reading Prometheus once it has scraped every pod after the traffic ------------------------------

UP = last_scrapes(NS)  # as conformance/probes/prometheus.py asks when it last scraped each pod successfully
READ = f'{REQUESTS}{{destination_workload_namespace="{NS}"}}'
PODS = [pod_name(w) for w in ("curl", "details-v1", "reviews-v2", "ratings-v1")]  # as the suite lists them
CURL, DETAILS, REVIEWS_V2, RATINGS = PODS
WAIT = Timeouts(metrics=10.0, metrics_poll=0.01)  # ended by the scrapes a test plays, never by the timeout


def test_now_is_prometheuss_clock_not_this_machines(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    with addons(api, monkeypatch) as fake:
        clock = fake.prometheus.advance(0.25)
        read = now(cluster)
    assert read == clock and abs(read - time.time()) > 5 * 60  # minutes off, as a cluster's clock can be
    assert fake.prometheus.asked == ["vector(time())"]


def test_timestamp_of_up_is_each_pods_last_scrape_under_the_jobs_labels_without_the_metric_name(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    with addons(api, monkeypatch) as fake:
        scraped_at = fake.prometheus.advance(4.5)
        fake.prometheus.scrape(NS, CURL)
        clock = fake.prometheus.advance(10)
        [up] = cluster.prometheus_query(f'timestamp(up{{namespace="{NS}", pod="{CURL}"}})')
    assert up["value"] == [clock, str(scraped_at)]
    assert "__name__" not in up["metric"]
    assert {k: up["metric"][k] for k in ("job", "namespace", "pod")} == {"job": "kubernetes-pods", "namespace": NS,
                                                                        "pod": CURL}
    assert re.fullmatch(r"10\.244\.\d+\.\d+:15020", up["metric"]["instance"]), up["metric"]


def test_scraped_since_names_the_pods_not_scraped_since_and_one_prometheus_has_not_found(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    with addons(api, monkeypatch) as fake:
        prometheus = fake.prometheus
        since = prometheus.clock + 10
        prometheus.advance(15)
        prometheus.scrape(NS, CURL, at=since)  # at the moment itself: in time
        prometheus.scrape(NS, REVIEWS_V2, at=since - 0.001)
        prometheus.scrape(NS, RATINGS)
        for pod in PODS:  # a parallel worker's pods of the same names, details among them, just scraped
            prometheus.scrape(OTHER, pod)
        late = scraped_since(cluster, NS, PODS, since)  # details: no `up` series in NS at all
        prometheus.scrape(NS, REVIEWS_V2)
        prometheus.scrape(NS, DETAILS)
        caught_up = scraped_since(cluster, NS, PODS, since)
    assert late == f"2 of 4 pods not scraped since: {DETAILS}, {REVIEWS_V2}"
    assert caught_up is None
    assert prometheus.asked == [UP, UP]


def test_a_pod_whose_last_scrape_failed_is_waited_for_until_one_succeeds(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed scrape (up 0) marks the pod's series stale: its time is no scrape that holds them."""
    with addons(api, monkeypatch) as fake:
        prometheus = fake.prometheus
        prometheus.samples = scraped(REQUESTS, 5, 0, 9, failed=2)
        since = prometheus.advance(10)
        for pod in PODS:
            prometheus.scrape(NS, pod, at=since + 1)
        prometheus.scrape(NS, REVIEWS_V2, at=since + 2, ok=False)
        prometheus.advance(5)
        failed = scraped_since(cluster, NS, PODS, since)
        stale = query(cluster, REQUESTS)
        # What the plain timestamp of `up` says: the failed scrape, in time.
        every_scrape = {s["metric"]["pod"]: float(s["value"][1]) for s in cluster.prometheus_query(
            f'timestamp(up{{namespace="{NS}"}})')}
        prometheus.scrape(NS, REVIEWS_V2, at=since + 3)
        recovered = scraped_since(cluster, NS, PODS, since)
    assert failed == f"1 of 4 pods not scraped since: {REVIEWS_V2}"
    assert every_scrape[REVIEWS_V2] == since + 2  # why the probe asks for successful scrapes only
    assert {s["metric"]["pod"] for s in stale} == {CURL, RATINGS}  # reviews-v2's series are stale
    assert recovered is None


def test_the_timestamp_of_anything_but_a_selector_is_the_evaluation_time(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """As real Prometheus answers (2.42 and 3.x): `timestamp(up == 1)` would call every pod just scraped."""
    with addons(api, monkeypatch) as fake:
        scraped_at = fake.prometheus.advance(1)
        fake.prometheus.scrape(NS, CURL)
        clock = fake.prometheus.advance(30)
        filtered = cluster.prometheus_query(f'timestamp(up{{namespace="{NS}"}} == 1)')
        [kept] = cluster.prometheus_query(UP)
        [up] = cluster.prometheus_query(f'up{{namespace="{NS}"}} == 1')
        none = cluster.prometheus_query(f'up{{namespace="{NS}"}} != 1')
    assert [float(s["value"][1]) for s in filtered] == [clock]
    assert (kept["metric"]["pod"], float(kept["value"][1])) == (CURL, scraped_at)
    assert "__name__" not in kept["metric"] and up["metric"]["__name__"] == "up"  # a filter keeps the name
    assert none == []


def test_seconds_since_counts_whole_seconds_on_prometheuss_clock_rounded_up(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    with addons(api, monkeypatch) as fake:
        moment = fake.prometheus.advance(0.4)
        fake.prometheus.advance(12.2)
        later = seconds_since(cluster, moment)
        fake.prometheus.advance(0.8)
        whole = seconds_since(cluster, moment)
        at_once = seconds_since(cluster, fake.prometheus.clock)
    assert (later, whole, at_once) == (13, 13, 1)


def playing(prometheus: Prometheus, rounds: list[dict[str, list[Sample]]]) -> Callable[[str], None]:
    """Before each look at `up`, RECORDED_WITHIN / 2 passes and Prometheus scrapes the next round's pods,
    each holding then its series of those given."""
    def scrape(promql: str) -> None:
        if promql == UP and rounds:
            prometheus.advance(RECORDED_WITHIN / 2)
            for pod, series in rounds.pop(0).items():
                prometheus.scrape(NS, pod, series)
    return scrape


def test_settled_waits_until_the_last_pod_is_scraped_after_it_was_called_and_reads_the_metrics_then(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    short = scraped(REQUESTS, 5 + N - 1, VIA, 9 + N + VIA - 1, failed=3)  # before the last requests were recorded
    after = scraped(REQUESTS, 5 + N, VIA, 9 + N + VIA, failed=3)
    rounds = [{CURL: short, REVIEWS_V2: short, RATINGS: short},  # sooner than RECORDED_WITHIN: each too early
              {CURL: after, REVIEWS_V2: after, DETAILS: []},  # exactly RECORDED_WITHIN later; details found
              {},
              {RATINGS: after}]
    with addons(api, monkeypatch) as fake:
        fake.prometheus.samples = scraped(REQUESTS, 5, 0, 9, failed=2)  # curl, reviews and ratings, not details
        fake.prometheus.on_query = playing(fake.prometheus, rounds)
        read, took = settled(cluster, NS, PODS, [REQUESTS], WAIT)
    assert fake.prometheus.asked == ["vector(time())", UP, UP, UP, UP, READ]
    assert {frozenset(s["metric"].items()): float(s["value"][1]) for s in read[REQUESTS]} == {
        frozenset(s.labels.items()): s.value for s in after if s.labels["destination_workload_namespace"] == NS}
    assert 0 <= took < WAIT.metrics


def test_settled_gives_up_when_the_timeout_passes_naming_the_pods_still_not_scraped(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    with addons(api, monkeypatch) as fake:
        fake.prometheus.samples = scraped(REQUESTS, 5, 0, 9, failed=2)
        fake.prometheus.on_query = playing(fake.prometheus, [{}, {CURL: []}])
        with pytest.raises(NotConverged) as late:
            settled(cluster, NS, PODS, [REQUESTS], Timeouts(metrics=0.3, metrics_poll=0.02))
    assert str(late.value) == (f"Prometheus scrapes the pods of {NS} after the requests: not within 0.3s: "
                               f"3 of 4 pods not scraped since: {DETAILS}, {RATINGS}, {REVIEWS_V2}")
    assert fake.prometheus.asked[:3] == ["vector(time())", UP, UP] and READ not in fake.prometheus.asked
