"""Per-test and per-feature outcomes, as the plugin records them."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from conformance.features import Feature, Level
from conformance.probes.latency import WayLatency
from conformance.targets.base import TargetFacts

NOT_SUPPORTED_PREFIX = "NOT_SUPPORTED: "


class Outcome(StrEnum):
    PASSED = "PASSED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    NOT_SUPPORTED = "NOT_SUPPORTED"


# The user property in which a failed test's teardown names its debug bundle (fixtures/mesh.py).
DEBUG_BUNDLE_PROPERTY = "debugBundle"
# A test whose check never ran to the end (Ctrl-C, SIGTERM, a cancelled CI job) is never PASSED.
INTERRUPTED = "interrupted"


@dataclass
class Record:
    nodeid: str
    feature: Feature
    outcome: Outcome
    reason: str = ""
    duration: float = 0.0
    # False until a phase decided the outcome: a setup that passed decides nothing.
    decided: bool = False
    ways: list[WayLatency] = field(default_factory=list)  # the ways in this test measured
    debug_bundle: str | None = None  # the directory of its debug bundle, written when it failed


class MeasuredWay(NamedTuple):
    """One row of the ingress comparison: a way, the feature whose test measured it, and that feature's outcome."""

    feature: Feature
    outcome: Outcome
    way: WayLatency


@dataclass
class ResultBook:
    """What a run found; filled by the plugin, read by the report and the summary."""

    selected: list[Feature] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    facts: TargetFacts | None = None
    target: str = ""
    target_reason: str = ""
    run_id: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False

    def record(self, nodeid: str, feature: Feature, when: str, outcome: Outcome, reason: str = "",
               duration: float = 0.0, ways: Sequence[WayLatency] = (), debug_bundle: str | None = None) -> None:
        """One phase's report (setup, call, teardown) of one test.

        Only the call phase can pass a test; a failure or skip in any phase decides it, and a
        later failure (teardown) overrides a pass. Until then the test reads as interrupted.
        The ways are taken from the call phase, passed or failed: every phase's report repeats the
        test's properties, and what the call measured is a fact whatever was decided after.
        """
        rec = next((r for r in self.records if r.nodeid == nodeid), None)
        if rec is None:
            rec = Record(nodeid, feature, Outcome.SKIPPED, INTERRUPTED)
            self.records.append(rec)
        rec.duration += duration
        rec.debug_bundle = debug_bundle or rec.debug_bundle
        if when == "call":
            rec.ways.extend(ways)
        if outcome is Outcome.PASSED and when != "call":
            return
        if not rec.decided or _rank(outcome) > _rank(rec.outcome):
            rec.outcome, rec.reason, rec.decided = outcome, reason, True

    def for_feature(self, feature: Feature) -> list[Record]:
        return [r for r in self.records if r.feature.name == feature.name]

    def feature_outcome(self, feature: Feature) -> tuple[Outcome, str]:
        return aggregate(self.for_feature(feature), self.interrupted)

    def debug_bundles(self, feature: Feature) -> list[str]:
        """The debug bundles the feature's failed tests left."""
        return [r.debug_bundle for r in self.for_feature(feature) if r.debug_bundle]

    def measured_ways(self) -> list[MeasuredWay]:
        """Every way measured, in catalogue order of the features, then in the order each test measured them.

        A way measured by two features (the Istio Gateway, the reference of both) keeps one row per
        feature: they are two measurements, at different moments, beside different ways.
        """
        return [MeasuredWay(f, self.feature_outcome(f)[0], way)
                for f in self.selected for r in self.for_feature(f) for way in r.ways]


def _rank(outcome: Outcome) -> int:
    return [Outcome.PASSED, Outcome.SKIPPED, Outcome.NOT_SUPPORTED, Outcome.FAILED].index(outcome)


def aggregate(records: Iterable[Record], interrupted: bool = False) -> tuple[Outcome, str]:
    """A feature's outcome from its tests: any failure fails it; all unsupported is NOT_SUPPORTED."""
    recs = list(records)
    if not recs:
        return Outcome.SKIPPED, INTERRUPTED if interrupted else "no test ran"
    for outcome in (Outcome.FAILED, Outcome.SKIPPED):
        hit = [r for r in recs if r.outcome is outcome]
        if hit:
            return outcome, "; ".join(r.reason for r in hit if r.reason)
    if all(r.outcome is Outcome.NOT_SUPPORTED for r in recs):
        return Outcome.NOT_SUPPORTED, recs[0].reason
    return Outcome.PASSED, "; ".join(r.reason for r in recs if r.reason)


def profile_result(book: ResultBook, profile: str, level: Level) -> str | None:
    """success | partial | failure for one profile's core or extended features, None if none ran."""
    outcomes = [book.feature_outcome(f)[0] for f in book.selected if f.profile == profile and f.level is level]
    if not outcomes:
        return None
    if Outcome.FAILED in outcomes:
        return "failure"
    if Outcome.SKIPPED in outcomes:
        return "partial"
    return "success"


def overall_result(book: ResultBook) -> str:
    """interrupted, or the worst profile result: failure > partial > success."""
    if book.interrupted:
        return "interrupted"
    results = {profile_result(book, f.profile, f.level) for f in book.selected}
    for worst in ("failure", "partial"):
        if worst in results:
            return worst
    return "success"
