"""`meshconf gate` on reports build() wrote: regressions, fixes, features added and removed, changes of
target and versions, the two rules that fail it (exit 1) and their words, in markdown and text.
The same against real runs of the local mesh: tests/test_gate_local.py."""

from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.report.gate_compare import Change, compare
from conformance.report.gate_render import markdown
from conformance.report.results import Outcome
from conformance.targets.base import TargetFacts
from tests.report_builders import ISTIO_NEW, ISTIO_OLD, LOCAL, bundle_of, report, write

P, F, S, N = Outcome.PASSED, Outcome.FAILED, Outcome.SKIPPED, Outcome.NOT_SUPPORTED
# WeightedSplit and RouteToVersion are core; CanaryProgression and MeshHTTPRouteWeights extended.
ALL_PASS = {"WeightedSplit": P, "RouteToVersion": P, "CanaryProgression": P, "MeshHTTPRouteWeights": P}


def gate(tmp_path: Path, capsys: pytest.CaptureFixture[str], before: dict[str, Outcome], now: dict[str, Outcome],
         fmt: str = "markdown", facts: tuple[TargetFacts, TargetFacts] = (LOCAL, LOCAL)) -> tuple[int, str]:
    """The CLI on two written reports: its exit code and what it printed."""
    baseline = write(tmp_path / "baseline.yaml", report(before, facts[0]))
    new = write(tmp_path / "new.yaml", report(now, facts[1]))
    code = main(["gate", "--baseline", str(baseline), str(new), "--format", fmt])
    captured = capsys.readouterr()
    assert captured.err == ""
    return code, captured.out


def rows(markdown: str) -> dict[str, list[str]]:
    """The feature table's rows by feature: change, profile, feature, level, before, now, headline."""
    table = [line for line in markdown.splitlines() if line.startswith("| ") and line.count(" | ") == 6]
    assert table[0] == "| change | profile | feature | level | before | now | headline |"
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in table[1:]]
    assert all(len(c) == 7 for c in cells)  # no pipe in a headline split a cell
    return {c[2]: c for c in cells}


def verdict(markdown: str) -> str:
    return markdown.splitlines()[2]


def test_all_passing_against_all_passing_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = gate(tmp_path, capsys, ALL_PASS, ALL_PASS)
    assert code == 0
    assert out.startswith("### meshconf gate: PASS\n")
    assert verdict(out) == "**PASS (exit 0): no regression, no failed core feature**"
    assert {name: row[0] for name, row in rows(out).items()} == dict.fromkeys(ALL_PASS, "same")
    assert "4 features: 0 regressions, 0 fixes, 4 unchanged" in out


def test_a_regression_fails_the_gate_and_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = gate(tmp_path, capsys, ALL_PASS, {**ALL_PASS, "CanaryProgression": F})
    assert code == 1
    assert verdict(out) == "**FAIL (exit 1): regression: CanaryProgression PASSED in the baseline, not now**"
    table = rows(out)
    assert table["CanaryProgression"] == [
        "**regression**", "MESH-TRAFFIC", "CanaryProgression", "extended", "PASSED", "**FAILED**",
        f"AssertionError: 80/20 v1/v2 failed: v2 received 52.7% of 150 requests<br>debug bundle: "
        f"`{bundle_of('CanaryProgression')}`"]
    assert list(table)[0] == "CanaryProgression"  # changes first
    assert table["WeightedSplit"][0] == "same" and table["WeightedSplit"][6].startswith("80/20 v1/v2 held: 600")


@pytest.mark.parametrize("now", [S, N])
def test_passed_then_skipped_or_unsupported_is_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            now: Outcome) -> None:
    code, out = gate(tmp_path, capsys, ALL_PASS, {**ALL_PASS, "MeshHTTPRouteWeights": now})
    assert code == 1 and rows(out)["MeshHTTPRouteWeights"][:6] == [
        "**regression**", "MESH-TRAFFIC", "MeshHTTPRouteWeights", "extended", "PASSED", f"**{now.value}**"]


def test_a_failed_core_feature_fails_the_gate_without_a_regression(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    before = {**ALL_PASS, "WeightedSplit": F}
    code, out = gate(tmp_path, capsys, before, before)
    assert code == 1
    assert verdict(out) == "**FAIL (exit 1): failed core feature: WeightedSplit FAILED now**"
    assert rows(out)["WeightedSplit"][:6] == ["same", "MESH-TRAFFIC", "WeightedSplit", "core", "FAILED", "**FAILED**"]
    # The same failure on an extended feature is no rule's business: an old failure, not a core one.
    before = {**ALL_PASS, "CanaryProgression": F}
    assert gate(tmp_path, capsys, before, before)[0] == 0


def test_both_rules_fire_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = gate(tmp_path, capsys, ALL_PASS, {**ALL_PASS, "WeightedSplit": F, "MeshHTTPRouteWeights": F})
    assert code == 1 and verdict(out) == (
        "**FAIL (exit 1): regression: WeightedSplit, MeshHTTPRouteWeights PASSED in the baseline, not now; "
        "failed core feature: WeightedSplit FAILED now**")


def test_a_fix_passes_the_gate_and_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = gate(tmp_path, capsys, {**ALL_PASS, "RouteToVersion": F, "CanaryProgression": N}, ALL_PASS)
    assert code == 0
    table = rows(out)
    assert table["RouteToVersion"][:6] == ["fix", "MESH-TRAFFIC", "RouteToVersion", "core", "FAILED", "PASSED"]
    assert table["CanaryProgression"][:6] == ["fix", "MESH-TRAFFIC", "CanaryProgression", "extended",
                                              "NOT_SUPPORTED", "PASSED"]
    assert "4 features: 0 regressions, 2 fixes, 2 unchanged" in out


def test_features_added_and_removed_are_listed_not_regressions(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    before = {"WeightedSplit": P, "RouteToVersion": P}
    now = {"WeightedSplit": P, "CanaryProgression": F}
    code, out = gate(tmp_path, capsys, before, now)
    assert code == 0  # a feature one run did not select shows nothing about the mesh
    table = rows(out)
    assert list(table) == ["CanaryProgression", "RouteToVersion", "WeightedSplit"]  # added, removed, same
    assert table["CanaryProgression"][:6] == ["added", "MESH-TRAFFIC", "CanaryProgression", "extended",
                                              "\u2014", "FAILED"]
    assert table["RouteToVersion"][:6] == ["removed", "MESH-TRAFFIC", "RouteToVersion", "core", "PASSED", "\u2014"]
    assert table["RouteToVersion"][6].startswith("80/20 v1/v2 held")  # the baseline's headline
    assert "3 features: 0 regressions, 0 fixes, 1 added, 1 removed, 1 unchanged" in out


def test_not_supported_on_both_sides_is_no_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    both = {**ALL_PASS, "ServiceGraph": N}
    code, out = gate(tmp_path, capsys, both, both)
    assert code == 0
    assert rows(out)["ServiceGraph"][:6] == ["same", "MESH-TELEMETRY", "ServiceGraph", "extended",
                                             "NOT_SUPPORTED", "NOT_SUPPORTED"]


def test_a_change_of_versions_is_shown_beside_what_stayed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = gate(tmp_path, capsys, ALL_PASS, ALL_PASS, facts=(ISTIO_OLD, ISTIO_NEW))
    assert code == 0  # a new version is news, not a failure
    lines = out.splitlines()
    start = lines.index("| changed | baseline | now |")
    assert lines[start + 2:start + 5] == ["| mesh version | 1.28.1 | 1.29.0 |", "| Envoy | 1.36.3 | 1.37.0 |",
                                          "| Kubernetes | v1.34.0 | v1.35.0 |"]
    assert lines[start + 5] == ""
    assert lines[start + 6] == ("Unchanged: target kind, mode kind cluster with Istio installed by meshconf, "
                                "mesh istio, meshconf 0.1.0")
    code, out = gate(tmp_path, capsys, ALL_PASS, ALL_PASS, facts=(LOCAL, ISTIO_NEW))
    table = out[out.index("| changed |"):out.index("Unchanged:")]
    assert "| target | local | kind |" in table and "| Kubernetes | \u2014 | v1.35.0 |" in table
    assert "| mesh | meshconf-local (Istio API subset) | istio |" in table


def test_the_text_format_says_the_same(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = gate(tmp_path, capsys, ALL_PASS, {**ALL_PASS, "WeightedSplit": F}, fmt="text",
                     facts=(ISTIO_OLD, ISTIO_NEW))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == ("meshconf gate: FAIL (exit 1): regression: WeightedSplit PASSED in the baseline, not now; "
                        "failed core feature: WeightedSplit FAILED now")
    assert "changed: mesh version: 1.28.1 -> 1.29.0" in lines
    first = lines.index("regression  MESH-TRAFFIC  WeightedSplit         core      PASSED -> FAILED")
    assert lines[first + 1:first + 3] == [
        "            AssertionError: 80/20 v1/v2 failed: v2 received 52.7% of 150 requests",
        f"            debug bundle: {bundle_of('WeightedSplit')}"]
    assert "same        MESH-TRAFFIC  RouteToVersion        core      PASSED -> PASSED" in lines


def test_the_new_report_defaults_to_results_report_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    write(tmp_path / "results" / "report.yaml", report({**ALL_PASS, "RouteToVersion": F}))
    baseline = write(tmp_path / "baseline.yaml", report(ALL_PASS))
    assert main(["gate", "--baseline", str(baseline)]) == 1
    assert "now:      results/report.yaml (run 0a1b2c3d" in capsys.readouterr().out


def test_a_headline_with_a_pipe_or_markup_stays_in_its_cell(tmp_path: Path) -> None:
    """Markdown meets text the mesh wrote: a pipe would split the row, a tag vanish, stars embolden."""
    edited: dict[str, Any] = report({"WeightedSplit": F})
    edited["features"][0]["headline"] = "503 | <unknown> upstream *reset*"
    comparison = compare(report({"WeightedSplit": P}), edited, Path("a.yaml"), Path("b.yaml"))
    cell = rows(markdown(comparison))["WeightedSplit"][6]
    assert cell.startswith(r"503 \| &lt;unknown&gt; upstream \*reset\*<br>debug bundle: ")
    assert comparison.rows[0].change is Change.REGRESSION
