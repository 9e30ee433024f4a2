"""Status and latency of one batch through one way in, for reports that compare ways of exposing a page."""

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from conformance.tables import render_table
from conformance.targets.base import Batch

# A suite test's user property carrying one WayLatency, as JSON text: it crosses from a pytest-xdist
# worker to the process that writes the reports, and reads as itself in JUnit's <property>.
WAY_PROPERTY = "ingressWay"
WAY_COLUMNS = ("way", "requests", "statuses", "p50 ms", "p95 ms")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (the smallest value at or above `fraction` of the sorted values)."""
    if not values:
        raise ValueError("no values")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is not in (0, 1]")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class WayLatency:
    """What one way in gave for N requests of a page: their statuses and the client's latency."""

    way: str
    requests: int
    statuses: dict[int, int]
    p50_ms: float
    p95_ms: float

    def describe(self) -> str:
        return f"{self.way}: {self.status_counts()}; latency p50 {self.p50_ms:.1f} ms, p95 {self.p95_ms:.1f} ms"

    def status_counts(self) -> str:
        return ", ".join(f"{count} x {status}" for status, count in sorted(self.statuses.items()))

    def cells(self) -> tuple[str, ...]:
        """This way's row under WAY_COLUMNS."""
        return (self.way, str(self.requests), self.status_counts(), f"{self.p50_ms:.1f}", f"{self.p95_ms:.1f}")

    def to_property(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_property(cls, text: str) -> "WayLatency":
        data = json.loads(text)
        # JSON keys are strings; a status is a number
        statuses = {int(status): count for status, count in data.pop("statuses").items()}
        return cls(statuses=statuses, **data)


def way_latency(way: str, batch: Batch) -> WayLatency:
    elapsed = [reply.elapsed * 1000.0 for reply in batch]
    return WayLatency(way, len(batch), dict(batch.statuses()), percentile(elapsed, 0.5), percentile(elapsed, 0.95))


def compare(ways: Sequence[WayLatency]) -> str:
    """One line per way, then each way's p50 against the first's (the reference way)."""
    lines = [w.describe() for w in ways]
    reference = ways[0]
    for other in ways[1:]:
        if reference.p50_ms > 0:
            lines.append(f"{other.way} p50 is {other.p50_ms / reference.p50_ms:.2f}x {reference.way}'s")
    return "; ".join(lines)


def ways_table(ways: Sequence[WayLatency]) -> str:
    """The ways side by side, as plain text (an Allure attachment)."""
    return render_table(WAY_COLUMNS, [w.cells() for w in ways])
