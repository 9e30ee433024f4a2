"""The YAML conformance report: where it ran, what it covered, what passed."""

import datetime as dt
from pathlib import Path
from typing import Any

import yaml

from conformance import __version__
from conformance.features import Level
from conformance.report.headline import headline
from conformance.report.results import MeasuredWay, Outcome, ResultBook, overall_result, profile_result


def build(book: ResultBook, base: Path | None = None) -> dict[str, Any]:
    """The report; with `base` (the report's folder), debug bundles under it are named relative to it,
    as they sit beside the report in a CI artifact."""
    facts = book.facts
    profiles = []
    for profile in dict.fromkeys(f.profile for f in book.selected):
        entry: dict[str, Any] = {"name": profile}
        for level in Level:
            result = profile_result(book, profile, level)
            if result is None:
                continue
            feats = [f for f in book.selected if f.profile == profile and f.level is level]
            outcomes = {f.name: book.feature_outcome(f)[0] for f in feats}
            entry[level.value] = {
                "result": result,
                "statistics": {o.value: sum(1 for v in outcomes.values() if v is o) for o in Outcome},
                "failedFeatures": [n for n, o in outcomes.items() if o is Outcome.FAILED],
                "skippedFeatures": [n for n, o in outcomes.items() if o is Outcome.SKIPPED],
                "unsupportedFeatures": [n for n, o in outcomes.items() if o is Outcome.NOT_SUPPORTED],
            }
        profiles.append(entry)
    features = []
    for f in book.selected:
        outcome, reason = book.feature_outcome(f)
        features.append(
            {
                "name": f.name,
                "profile": f.profile,
                "level": f.level.value,
                "outcome": outcome.value,
                **({"reason": reason} if reason else {}),
                "headline": headline(outcome, reason),
                "tests": [
                    {"id": r.nodeid, "outcome": r.outcome.value, "duration": round(r.duration, 3),
                     **({"reason": r.reason} if r.reason else {}),
                     **({"debugBundle": beside(r.debug_bundle, base)} if r.debug_bundle else {})}
                    for r in book.for_feature(f)
                ],
            }
        )
    ways = book.measured_ways()
    return {
        "apiVersion": "meshconf.dev/v1alpha1",
        "kind": "ConformanceReport",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "harness": {"name": "meshconf", "version": __version__},
        "run": {
            "id": book.run_id,
            # The settings' target when no target reported its facts (a run interrupted early).
            "target": facts.target if facts else book.target or None,
            "targetReason": book.target_reason,
            "mode": facts.mode if facts else None,
        },
        "implementation": {
            "mesh": facts.mesh if facts else None,
            "meshVersion": facts.mesh_version if facts else None,
            "envoyVersion": facts.envoy_version if facts else None,
            "kubernetesVersion": facts.kubernetes_version if facts else None,
        },
        "result": overall_result(book),
        "profiles": profiles,
        "features": features,
        # Only when a way in was measured (GatewayAPIIngress, KubernetesIngress).
        **({"ingressComparison": [comparison_row(w) for w in ways]} if ways else {}),
        "timings": {k: round(v, 3) for k, v in book.phases.items()},
    }


def comparison_row(measured: MeasuredWay) -> dict[str, Any]:
    way = measured.way
    return {
        "way": way.way,
        "feature": measured.feature.name,
        "outcome": measured.outcome.value,
        "requests": way.requests,
        "statuses": dict(sorted(way.statuses.items())),
        "p50Ms": round(way.p50_ms, 2),
        "p95Ms": round(way.p95_ms, 2),
    }


def beside(bundle: str, base: Path | None) -> str:
    """`bundle` relative to `base` when it lies under it, else as it is."""
    if base is None:
        return bundle
    try:
        return Path(bundle).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return bundle


def write(book: ResultBook, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(build(book, path.parent), sort_keys=False))
