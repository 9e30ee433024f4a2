"""Istio's standard metrics as Prometheus holds them, read once every request that has ended is
in: a successful scrape of every pod of the namespace later than the traffic, by Prometheus's own clock.

A Prometheus instant query returns series: {"metric": {label: value}, "value": [time, "number"]}
(prometheus docs/querying/api.md). The pods' `namespace` and `pod` labels are those of Istio's
samples/addons/prometheus.yaml (job kubernetes-pods)."""

import math
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

from conformance.settings import Timeouts
from conformance.waiting import wait_for

Series = dict[str, Any]
# A proxy may record a request up to this long after it ended (the local mesh's Envoys flush their
# access logs every second, so a record can take that long and a little more; Istio's proxies count
# at once): a scrape that much later holds it.
RECORDED_WITHIN = 2.0


class Prometheus(Protocol):
    def prometheus_query(self, promql: str) -> list[Series]: ...


def metric(prometheus: Prometheus, name: str, ns: str) -> list[Series]:
    """Every series of `name` whose destination is in `ns`."""
    return prometheus.prometheus_query(f'{name}{{destination_workload_namespace="{ns}"}}')


def now(prometheus: Prometheus) -> float:
    """Prometheus's clock: scrape times are compared with it, never with this machine's."""
    [sample] = prometheus.prometheus_query("vector(time())")
    return float(sample["value"][1])


def last_scrapes(ns: str) -> str:
    """Each pod's last successful scrape. A failed scrape (up 0) marks the pod's series stale, so
    only a scrape that succeeded holds them. `timestamp(up == 1)` would not do: timestamp() of
    anything but a plain selector is the evaluation time (Prometheus promql/engine.go, its special
    case for timestamp() of a VectorSelector); `and` keeps the left side's samples, scrape times."""
    up = f'up{{namespace="{ns}"}}'
    return f"timestamp({up}) and {up} == 1"


def scraped_since(prometheus: Prometheus, ns: str, pods: Sequence[str], since: float) -> str | None:
    """None once Prometheus has scraped each of `pods` (in `ns`) successfully at or after `since`;
    else which not. A pod it has not discovered yet, or whose last scrape failed, is as late as one
    it has not scraped again."""
    scrapes: dict[str, float] = {}
    for s in prometheus.prometheus_query(last_scrapes(ns)):
        # A pod two jobs scrape has two `up` series: the older scrape decides.
        pod = str(s["metric"].get("pod"))
        scrapes[pod] = min(float(s["value"][1]), scrapes.get(pod, float("inf")))
    late = sorted(pod for pod in pods if scrapes.get(pod, 0.0) < since)
    return f"{len(late)} of {len(pods)} pods not scraped since: {', '.join(late[:5])}" if late else None


def seconds_since(prometheus: Prometheus, moment: float) -> int:
    """Whole seconds from `moment` to now by Prometheus's clock, rounded up: a range that long,
    ending now, starts at or before `moment`."""
    return max(1, math.ceil(now(prometheus) - moment))


def settled(prometheus: Prometheus, ns: str, pods: Sequence[str], names: Sequence[str],
            timeouts: Timeouts) -> tuple[dict[str, list[Series]], float]:
    """The metrics `names` of `ns` once they hold every request `pods` ended by now, and how long that took."""
    since, start = now(prometheus) + RECORDED_WITHIN, time.monotonic()
    wait_for(partial(scraped_since, prometheus, ns, pods, since), timeouts.metrics, timeouts.metrics_poll,
             f"Prometheus scrapes the pods of {ns} after the requests")
    return {name: metric(prometheus, name, ns) for name in names}, time.monotonic() - start
