"""Conformance reports for the gate's and the schema's tests, made by the real build() from ResultBooks
recorded as the plugin records them (one test per feature, decided in its call phase)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from conformance import features
from conformance.probes.latency import WayLatency
from conformance.report.conformance_report import build
from conformance.report.results import Outcome, ResultBook
from conformance.targets.base import TargetFacts

LOCAL = TargetFacts("local", "local reference mesh: real Envoy sidecars and gateway on loopback, no Kubernetes",
                    "meshconf-local (Istio API subset)", "0.1.0", "1.40.0")
ISTIO_OLD = TargetFacts("kind", "kind cluster with Istio installed by meshconf", "istio", "1.28.1", "1.36.3",
                        "v1.34.0")
ISTIO_NEW = TargetFacts("kind", "kind cluster with Istio installed by meshconf", "istio", "1.29.0", "1.37.0",
                        "v1.35.0")
# A reason of each outcome, as the suites word them: a failure's first line, then its table.
REASONS = {
    Outcome.PASSED: "80/20 v1/v2 held: 600 requests, v1 483 (80.5%), v2 117 (19.5%); alpha 1e-04",
    Outcome.FAILED: "AssertionError: 80/20 v1/v2 failed: v2 received 52.7% of 150 requests\n"
                    "destination   weight   expected  observed",
    Outcome.SKIPPED: "interrupted",
    Outcome.NOT_SUPPORTED: "NOT_SUPPORTED on target local: the local reference mesh runs no Kiali",
}
WAY = WayLatency("Gateway API Gateway", 20, {200: 18, 503: 2}, 2.5, 4.25)


def bundle_of(name: str) -> str:
    return f"results/debug/suites_test_{name}"


def result_book(outcomes: Mapping[str, Outcome], facts: TargetFacts | None = LOCAL) -> ResultBook:
    """The features named, in this order, each with one test of that outcome; a failed test leaves
    its debug bundle (named at teardown, as fixtures/mesh.py does)."""
    selected = [features.get(name) for name in outcomes]
    book = ResultBook(selected=selected, facts=facts, target=facts.target if facts else "local",
                      target_reason="--target local", run_id="0a1b2c3d")
    for feature, outcome in zip(selected, outcomes.values()):
        nodeid = f"suites/test_x.py::test_{feature.name}"
        ways = [WAY] if feature.name == "GatewayAPIIngress" else []
        book.record(nodeid, feature, "call", outcome, REASONS[outcome], duration=1.25, ways=ways)
        bundle = bundle_of(feature.name) if outcome is Outcome.FAILED else None
        book.record(nodeid, feature, "teardown", Outcome.PASSED, duration=0.5, debug_bundle=bundle)
    return book


def report(outcomes: Mapping[str, Outcome], facts: TargetFacts | None = LOCAL) -> dict[str, Any]:
    return build(result_book(outcomes, facts))


def write(path: Path, report_: Mapping[str, Any]) -> Path:
    """The report as `meshconf run` writes it (conformance_report.write)."""
    path.write_text(yaml.safe_dump(dict(report_), sort_keys=False))
    return path
