"""Per-test and per-feature outcomes, as the plugin records them."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from conformance.features import Feature, Level
from conformance.targets.base import TargetFacts

NOT_SUPPORTED_PREFIX = "NOT_SUPPORTED: "


class Outcome(StrEnum):
    PASSED = "PASSED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    NOT_SUPPORTED = "NOT_SUPPORTED"


@dataclass
class Record:
    nodeid: str
    feature: Feature
    outcome: Outcome
    reason: str = ""
    duration: float = 0.0


@dataclass
class ResultBook:
    """What a run found; filled by the plugin, read by the report and the summary."""

    selected: list[Feature] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    facts: TargetFacts | None = None
    target_reason: str = ""
    run_id: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False

    def record(self, rec: Record) -> None:
        """setup, call and teardown each report: the worst outcome wins, durations add up."""
        for i, old in enumerate(self.records):
            if old.nodeid == rec.nodeid:
                worse = rec if _rank(rec.outcome) > _rank(old.outcome) else old
                reason = worse.reason or (old.reason if worse is rec else rec.reason)
                self.records[i] = Record(old.nodeid, old.feature, worse.outcome, reason,
                                             old.duration + rec.duration)
                return
        self.records.append(rec)

    def for_feature(self, feature: Feature) -> list[Record]:
        return [r for r in self.records if r.feature.name == feature.name]

    def feature_outcome(self, feature: Feature) -> tuple[Outcome, str]:
        return aggregate(self.for_feature(feature))


def _rank(outcome: Outcome) -> int:
    return [Outcome.PASSED, Outcome.SKIPPED, Outcome.NOT_SUPPORTED, Outcome.FAILED].index(outcome)


def aggregate(records: Iterable[Record]) -> tuple[Outcome, str]:
    """A feature's outcome from its tests: any failure fails it; all unsupported is NOT_SUPPORTED."""
    recs = list(records)
    if not recs:
        return Outcome.SKIPPED, "no test ran"
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
