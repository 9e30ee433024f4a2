"""Circuit breaking, outlier detection and retries decided exactly: the replies the client saw,
counted against the proxy's own counters for the same traffic."""

from collections import Counter
from dataclasses import dataclass

from conformance.targets.base import Batch, Reply
from conformance.verdicts.replies import describe
from conformance.waiting import Verdict

# How Envoy marks a request its circuit breaker refused (envoyproxy/envoy docs
# configuration/http/http_filters/router_filter.rst, x-envoy-overloaded).
OVERLOADED = "x-envoy-overloaded"


def overflowed(reply: Reply) -> bool:
    return reply.status == 503 and reply.headers.get(OVERLOADED) == "true"


@dataclass(frozen=True)
class Overflow:
    """A concurrent load's replies and the client proxy's pending-overflow counter over it."""

    batch: Batch
    counter_increase: int

    @property
    def refused(self) -> int:
        return sum(overflowed(r) for r in self.batch)

    @property
    def others(self) -> Counter[str]:
        """Replies that are neither 200 nor an overflow 503, by status (or error)."""
        return Counter(r.error or str(r.status) for r in self.batch if r.status != 200 and not overflowed(r))


def circuit_broken(load: Overflow) -> Verdict:
    """Some requests refused as overflow, exactly as many as the proxy counted, the rest 200."""
    seen = (f"{load.refused} of {len(load.batch)} replies 503 with {OVERLOADED}: true, "
            f"upstream_rq_pending_overflow +{load.counter_increase}")
    if load.refused == 0:
        return Verdict(False, f"the circuit breaker never tripped: {seen}; {describe(load.batch)}")
    if load.refused != load.counter_increase:
        return Verdict(False, f"the replies and the proxy's counter disagree: {seen}")
    if load.others:
        return Verdict(False, f"{seen}; but other failures too: {dict(load.others)}")
    return Verdict(True, f"{seen}, the others 200")


def never_broken(load: Overflow) -> Verdict:
    """The control: the same load without limits is answered 200 throughout, no overflow counted."""
    bad = [r for r in load.batch if r.status != 200]
    if len(load.batch) > 0 and not bad and load.counter_increase == 0:
        return Verdict(True, f"without limits: all {len(load.batch)} replies 200, upstream_rq_pending_overflow +0")
    return Verdict(False, f"without limits expected all 200 and no overflow: {len(bad)} were not, "
                          f"upstream_rq_pending_overflow +{load.counter_increase}; {describe(load.batch)}")


def retried(requests: int, retry_increase: int, upstream_attempts: int) -> Verdict:
    """The client proxy's retries are the extra attempts the upstream received, exactly."""
    if retry_increase == upstream_attempts - requests:
        return Verdict(True, f"upstream_rq_retry +{retry_increase} = {upstream_attempts} attempts received "
                             f"by httpbin - {requests} requests")
    return Verdict(False, f"upstream_rq_retry +{retry_increase}, but httpbin received {upstream_attempts} attempts "
                          f"for {requests} requests ({upstream_attempts - requests} extra)")
