"""One proxy's Istio request metrics: `istio_requests_total` and
`istio_request_duration_milliseconds` per label set, in Prometheus' text format.

istio_stats adds one to the counter and records the duration in whole milliseconds in the
histogram for every request (istio/proxy 1.28.0 istio_stats.cc IstioStatsFilter::log); Envoy
exports a histogram with its default buckets (envoyproxy/envoy source/common/stats/
histogram_impl.cc HistogramSettingsImpl::defaultBuckets), each `le` written as "{:.32g}" formats
it (source/server/admin/prometheus_stats.cc). The text itself is prometheus_client's.

Two mutants act here: METRICS_SWAPPED_LABELS reports every source_* value as the matching
destination_* value and back; METRICS_UNDERCOUNT leaves every tenth request of a proxy uncounted.
"""

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from conformance.targets.local.telemetry.labels import STANDARD_LABELS, Labels
from conformance.targets.local.translator.mutants import METRICS_SWAPPED_LABELS, METRICS_UNDERCOUNT
from conformance.verdicts.telemetry import ENVOY_DEFAULT_BUCKETS, REQUEST_DURATION, REQUESTS_TOTAL
# The labels that name one side of a request, each with a source_ and a destination_ form.
SIDE_LABELS = ("workload", "workload_namespace", "principal", "app", "version", "canonical_service",
               "canonical_revision", "cluster")
UNDERCOUNT_EVERY = 10


@dataclass
class Series:
    """One label set's counter and duration histogram (bucket i counts durations <= bound i)."""

    requests: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(ENVOY_DEFAULT_BUCKETS))
    durations: int = 0  # requests with a duration (one that never completed has none)
    duration_sum: int = 0

    def record(self, duration_ms: int | None) -> None:
        self.requests += 1
        if duration_ms is None:
            return
        self.durations += 1
        self.duration_sum += duration_ms
        for i, bound in enumerate(ENVOY_DEFAULT_BUCKETS):
            if duration_ms <= bound:
                self.buckets[i] += 1

    def cumulative_buckets(self) -> list[tuple[str, int]]:
        return [*((f"{bound:.32g}", count) for bound, count in zip(ENVOY_DEFAULT_BUCKETS, self.buckets)),
                ("+Inf", self.durations)]


class ProxyMetrics:
    """The metrics of one proxy, fed the labels of each request it logged."""

    def __init__(self, mutants: frozenset[str] = frozenset()) -> None:
        self.mutants = mutants
        self._series: dict[tuple[str, ...], Series] = {}
        self._seen = 0
        self._lock = threading.Lock()

    def record(self, labels: Labels, duration_ms: int | None) -> None:
        with self._lock:
            self._seen += 1
            if METRICS_UNDERCOUNT in self.mutants and self._seen % UNDERCOUNT_EVERY == 0:
                return  # the mutant: this request is not counted
            if METRICS_SWAPPED_LABELS in self.mutants:
                labels = swap_sides(labels)
            key = tuple(labels[name] for name in STANDARD_LABELS)
            self._series.setdefault(key, Series()).record(duration_ms)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text exposition format."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self._families()))
        return generate_latest(registry)

    def _families(self) -> list[Metric]:
        requests = CounterMetricFamily(REQUESTS_TOTAL, "Requests by Istio's standard labels.",
                                       labels=STANDARD_LABELS)
        durations = HistogramMetricFamily(REQUEST_DURATION, "Request durations in milliseconds.",
                                          labels=STANDARD_LABELS)
        with self._lock:
            for key, series in sorted(self._series.items()):
                requests.add_metric(key, series.requests)
                if series.durations:
                    durations.add_metric(key, series.cumulative_buckets(), series.duration_sum)
        return [requests, durations]


def swap_sides(labels: Mapping[str, str]) -> Labels:
    """METRICS_SWAPPED_LABELS: each source_<x> takes destination_<x>'s value and the reverse."""
    swapped = dict(labels)
    for side in SIDE_LABELS:
        source, destination = f"source_{side}", f"destination_{side}"
        swapped[source], swapped[destination] = labels[destination], labels[source]
    return swapped


class _Collector:
    """A prometheus_client collector of families made beforehand."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
