"""Two conformance reports compared feature by feature, for release gating (`meshconf gate`).

A regression is a feature PASSED in the baseline and not PASSED now (FAILED, SKIPPED or
NOT_SUPPORTED: whatever the cause, it no longer shows conformance); a fix the reverse. A feature
in one report only is added or removed, never a regression: runs may select different features.
The gate fails (exit 1) on any regression and on any core feature FAILED in the new report,
whether or not it failed before: a core failure is never accepted because it is old.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from conformance.features import Level
from conformance.report.headline import headline
from conformance.report.results import Outcome

PASSED = Outcome.PASSED.value
FAILED = Outcome.FAILED.value
# What the gate tells apart about where each report ran: (label, section, key).
FACTS = (
    ("target", "run", "target"),
    ("mode", "run", "mode"),
    ("mesh", "implementation", "mesh"),
    ("mesh version", "implementation", "meshVersion"),
    ("Envoy", "implementation", "envoyVersion"),
    ("Kubernetes", "implementation", "kubernetesVersion"),
    ("meshconf", "harness", "version"),
)


class Change(StrEnum):
    """A feature between the two reports; the order is the order of the gate's table."""

    REGRESSION = "regression"
    FIX = "fix"
    CHANGED = "changed"  # another outcome, neither a regression nor a fix (e.g. FAILED -> SKIPPED)
    ADDED = "added"
    REMOVED = "removed"
    SAME = "same"


@dataclass(frozen=True)
class FeatureRow:
    name: str
    profile: str
    level: str
    before: str | None  # its outcome in the baseline; None when the baseline did not run it
    now: str | None  # its outcome in the new report; None when that did not run it
    headline: str  # the new report's (the baseline's for a removed feature)
    bundles: tuple[str, ...] = ()  # the debug bundles its tests left (in the report it comes from)

    @property
    def change(self) -> Change:
        if self.before is None:
            return Change.ADDED
        if self.now is None:
            return Change.REMOVED
        if self.before == PASSED and self.now != PASSED:
            return Change.REGRESSION
        if self.before != PASSED and self.now == PASSED:
            return Change.FIX
        return Change.CHANGED if self.before != self.now else Change.SAME

    @property
    def failed_core(self) -> bool:
        return self.now == FAILED and self.level == Level.CORE.value


@dataclass(frozen=True)
class Side:
    """One report as the gate names it."""

    path: Path
    run_id: str
    date: str


@dataclass
class Comparison:
    baseline: Side
    new: Side
    rows: list[FeatureRow]  # changed features first (in Change order), each group in report order
    facts: list[tuple[str, Any, Any]]  # (label, baseline, now) for each fact that differs
    same_facts: list[tuple[str, Any]] = field(default_factory=list)  # (label, value) of those that do not

    def having(self, change: Change) -> list[FeatureRow]:
        return [r for r in self.rows if r.change is change]

    @property
    def failed_core(self) -> list[FeatureRow]:
        return [r for r in self.rows if r.failed_core]

    def rules_fired(self) -> list[str]:
        """Why the gate fails, one sentence per rule; [] when it passes."""
        fired = []
        regressions = self.having(Change.REGRESSION)
        if regressions:
            fired.append(f"regression: {names(regressions)} PASSED in the baseline, not now")
        if self.failed_core:
            fired.append(f"failed core feature: {names(self.failed_core)} FAILED now")
        return fired

    @property
    def exit_code(self) -> int:
        return 1 if self.rules_fired() else 0

    def counts(self) -> str:
        """e.g. "30 features: 3 regressions, 1 fix, 26 unchanged"."""
        counted = {c: len(self.having(c)) for c in Change}
        parts = [plural(counted[Change.REGRESSION], "regression"), plural(counted[Change.FIX], "fix", "fixes"),
                 *(f"{counted[c]} {c}" for c in (Change.CHANGED, Change.ADDED, Change.REMOVED) if counted[c]),
                 f"{counted[Change.SAME]} unchanged"]
        return f"{plural(len(self.rows), 'feature')}: {', '.join(parts)}"


def compare(baseline: dict[str, Any], new: dict[str, Any], baseline_path: Path, new_path: Path) -> Comparison:
    """Two valid reports (report_schema.load), feature by feature and fact by fact."""
    before = {f["name"]: f for f in baseline["features"]}
    now = {f["name"]: f for f in new["features"]}
    rows = [row(now[name], before.get(name, {}).get("outcome"), now[name]["outcome"]) for name in now]
    rows += [row(f, f["outcome"], None) for name, f in before.items() if name not in now]
    order = list(Change)
    rows.sort(key=lambda r: order.index(r.change))  # stable: report order within a group
    facts, same = [], []
    for label, section, key in FACTS:
        old_value, new_value = baseline[section][key], new[section][key]
        if old_value != new_value:
            facts.append((label, old_value, new_value))
        else:
            same.append((label, new_value))
    return Comparison(side(baseline, baseline_path), side(new, new_path), rows, facts, same)


def row(feature: dict[str, Any], before: str | None, now: str | None) -> FeatureRow:
    reason = feature.get("reason", "")
    # Reports written before the headline existed (same apiVersion): the same line, made here.
    line = feature.get("headline", headline(Outcome(feature["outcome"]), reason))
    bundles = tuple(t["debugBundle"] for t in feature["tests"] if "debugBundle" in t)
    return FeatureRow(feature["name"], feature["profile"], feature["level"], before, now, line, bundles)


def side(report: dict[str, Any], path: Path) -> Side:
    return Side(path, report["run"]["id"], report["date"])


def names(rows: list[FeatureRow]) -> str:
    return ", ".join(r.name for r in rows)


def plural(count: int, noun: str, nouns: str = "") -> str:
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"

