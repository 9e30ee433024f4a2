"""MESH-RESILIENCE: circuit breaking, outlier detection and retries, decided on every reply and
cross-checked exactly against the proxies' own counters."""

from functools import partial

import allure
import pytest

from conformance.checks import converge, decide, measure
from conformance.probes import envoy_stats
from conformance.settings import RunSettings
from conformance.targets.base import Batch, Target
from conformance.verdicts import all_status
from conformance.verdicts.resilience import Overflow, circuit_broken, never_broken, overflowed, retried
from conformance.verdicts.splits import plan_split, run_split
from conformance.waiting import Verdict
from conformance.fixtures.mesh import Apply, Bookinfo, Evidence

HTTPBIN_PORT, HTTPBIN_TARGET_PORT = 8000, 8080
# The circuit-breaking load: more concurrent requests than one connection and one waiting request
# take, each slow enough to overlap (Istio's task uses fortio -c 3).
LOAD, CONCURRENCY, SLOW = 20, 4, "/delay/0.2"


def httpbin(bookinfo: Bookinfo, path: str) -> str:
    return f"http://httpbin.{bookinfo.namespace}:{HTTPBIN_PORT}{path}"


def client_counter(target: Target, bookinfo: Bookinfo, stat: str, service: str = "httpbin") -> int:
    fqdn = f"{service}.{bookinfo.namespace}.svc.cluster.local"
    stats = envoy_stats.parse(target.proxy_stats("curl", bookinfo.namespace))
    return envoy_stats.total(stats, envoy_stats.outbound_cluster(HTTPBIN_PORT, fqdn, stat))


def concurrent_load(target: Target, bookinfo: Bookinfo, name: str) -> Overflow:
    before = client_counter(target, bookinfo, "upstream_rq_pending_overflow")
    batch = measure(partial(bookinfo.client.send, httpbin(bookinfo, SLOW), LOAD, CONCURRENCY),
                    f"{name}: {LOAD} x GET {SLOW}, {CONCURRENCY} at a time")
    return Overflow(batch, client_counter(target, bookinfo, "upstream_rq_pending_overflow") - before)


def trips(batch: Batch) -> Verdict:
    refused = sum(overflowed(r) for r in batch)
    return Verdict(refused > 0, f"{refused} of {len(batch)} concurrent requests refused as overflow")


@pytest.mark.feature("CircuitBreaking")
def test_circuit_breaking(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                          evidence: Evidence) -> None:
    control = decide(never_broken(concurrent_load(target, bookinfo, "without a DestinationRule")))
    applied("resilience/dr-httpbin-circuit-breaker.yaml")
    url = httpbin(bookinfo, SLOW)
    converge(partial(bookinfo.client.send, url, LOAD, CONCURRENCY), trips, run_settings.timeouts,
             "the connection pool limits take effect")
    tripped = decide(circuit_broken(concurrent_load(target, bookinfo, "with maxConnections 1, 1 pending")))
    # Once the load stops, one request at a time is within the limits again.
    after = decide(all_status(measure(partial(bookinfo.client.send, url, 5), "5 x GET one at a time"), 200))
    evidence(f"{tripped}; control: {control}; after the load: {after}")


@pytest.mark.feature("OutlierDetection")
def test_outlier_detection(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                           evidence: Evidence) -> None:
    applied("resilience/flaky.yaml")
    target.wait_ready(bookinfo.namespace)
    url = f"http://flaky.{bookinfo.namespace}:{HTTPBIN_PORT}/get"
    # Without outlier detection the 503 endpoint keeps its share.
    before = measure(partial(bookinfo.client.send, url, 20), "20 x GET without outlier detection")
    failing = sum(r.status == 503 for r in before)
    applied("resilience/dr-flaky-outlier.yaml")
    ejections = partial(client_counter, target, bookinfo, "outlier_detection.ejections_enforced_total", "flaky")
    ejected_before = ejections()
    # The first 503 ejects the failing endpoint (consecutive5xxErrors 1): then only the healthy one answers.
    converge(partial(bookinfo.client.send, url, 5), lambda b: all_status(b, 200), run_settings.timeouts,
             "the failing endpoint is ejected")
    during = measure(partial(bookinfo.client.send, url, 40), "40 x GET while the endpoint is ejected (30 s)")
    ejected = ejections() - ejected_before
    verdict = decide(all_status(during, 200))
    decide(Verdict(ejected >= 1, f"outlier_detection.ejections_enforced_total +{ejected} (at least 1)"))
    decide(Verdict(failing > 0, f"without outlier detection {failing} of {len(before)} replies were 503"))
    evidence(f"without outlier detection {failing} of {len(before)} replies 503; after the ejection {verdict}; "
             f"ejections_enforced_total +{ejected}")


def outcome_counts(batch: Batch) -> dict[str, int]:
    succeeded = sum(r.status == 200 for r in batch)
    return {"succeeded": succeeded, "failed": len(batch) - succeeded}


def decided_share(target: Target, bookinfo: Bookinfo, url: str, weights: dict[str, float],
                  name: str) -> tuple[str, int, int, int]:
    """The success share decided by the sequential test; with the retries the client's proxy
    counted and the attempts httpbin's proxy received over the same requests."""
    sent: list[Batch] = []
    retries_before = client_counter(target, bookinfo, "upstream_rq_retry")
    attempts_before = server_requests(target, bookinfo)

    def send(count: int) -> dict[str, int]:
        sent.append(bookinfo.client.send(url, count))
        return outcome_counts(sent[-1])

    with allure.step(f"measure: {name}"):
        verdict = decide(run_split(send, plan_split(weights)))
    requests = sum(len(b) for b in sent)
    return (verdict, requests, client_counter(target, bookinfo, "upstream_rq_retry") - retries_before,
            server_requests(target, bookinfo) - attempts_before)


def server_requests(target: Target, bookinfo: Bookinfo) -> int:
    stats = envoy_stats.parse(target.proxy_stats("httpbin", bookinfo.namespace))
    return envoy_stats.total(stats, envoy_stats.inbound_http(HTTPBIN_TARGET_PORT, "downstream_rq_total"))


FAILURE_RATE, ATTEMPTS = 0.5, 2  # go-httpbin's /unstable fails this share; the VirtualService's retries


@pytest.mark.feature("Retries")
def test_retries(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                 evidence: Evidence) -> None:
    url = httpbin(bookinfo, f"/unstable?failure_rate={FAILURE_RATE}")
    proofs = []
    for manifest, attempts in (("resilience/vs-httpbin-retries.yaml", ATTEMPTS),
                               ("resilience/vs-httpbin-no-retries.yaml", 0)):
        docs = applied(manifest)
        failing = FAILURE_RATE ** (attempts + 1)  # every attempt fails, independently
        weights = {"succeeded": 1 - failing, "failed": failing}
        # Converged once the route carries the manifest's policy: no retry counted on a probe with
        # attempts 0, some retries with attempts 2 (a probe of 20 gives one with certainty 1 - 2^-20).
        converge(partial(bookinfo.client.send, url, 20), RetriesPerProbe(target, bookinfo, attempts),
                 run_settings.timeouts, f"retries attempts {attempts} take effect")
        verdict, requests, retries, received = decided_share(
            target, bookinfo, url, weights, f"success share with attempts {attempts}")
        proofs.append(f"attempts {attempts}: {verdict}; " + decide(retried(requests, retries, received)))
        target.delete(docs, bookinfo.namespace)
    evidence(" | ".join(proofs))


class RetriesPerProbe:
    """Convergence on a route's retry policy: the client proxy's retries over each probe (since the
    previous one), none with attempts 0 and some with more."""

    def __init__(self, target: Target, bookinfo: Bookinfo, attempts: int) -> None:
        self.target, self.bookinfo, self.attempts = target, bookinfo, attempts
        self.last = client_counter(target, bookinfo, "upstream_rq_retry")

    def __call__(self, batch: Batch) -> Verdict:
        now = client_counter(self.target, self.bookinfo, "upstream_rq_retry")
        increase, self.last = now - self.last, now
        ok = increase > 0 if self.attempts else increase == 0
        return Verdict(ok, f"upstream_rq_retry +{increase} over a probe (attempts {self.attempts})")
