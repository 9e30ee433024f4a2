"""`meshconf gate` on real runs of the local mesh (issue 14's done-when): a passing run gates a run with
the ignore-weights mutant (an equal split wherever weights are configured) with exit 1, its markdown
naming the three weighted features as regressions; a second passing run passes (exit 0)."""

from pathlib import Path

import pytest

from tests.builders import WHOLE_MESH, meshconf

pytestmark = WHOLE_MESH

WEIGHTED = ("WeightedSplit", "CanaryProgression", "MeshHTTPRouteWeights")


def local_run(directory: Path, *extra: str) -> Path:
    """`meshconf run` of the three weighted features in directory; the report it wrote."""
    directory.mkdir()
    args = ["run", "--target", "local", *(a for name in WEIGHTED for a in ("--feature", name)), *extra]
    done = meshconf(args, cwd=directory)
    report = directory / "results" / "report.yaml"
    assert report.is_file(), done.stdout[-3000:] + done.stderr[-2000:]
    return report


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two passing runs and a mutant's; each in its own directory, as two CI jobs would be."""
    root = tmp_path_factory.mktemp("gate")
    return {"passing": local_run(root / "passing"), "again": local_run(root / "again"),
            "mutant": local_run(root / "mutant", "--local-mutant", "ignore-weights", "--consistency-timeout", "3")}


def test_a_passing_run_gates_the_ignore_weights_mutant_naming_its_three_regressions(runs: dict[str, Path]) -> None:
    new = runs["mutant"]
    # The new report from its default place (results/report.yaml), as in CI after `meshconf run`.
    done = meshconf(["gate", "--baseline", str(runs["passing"]), "--format", "markdown"], cwd=new.parent.parent)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "### meshconf gate: FAIL"
    assert lines[2] == ("**FAIL (exit 1): regression: WeightedSplit, CanaryProgression, MeshHTTPRouteWeights PASSED "
                        "in the baseline, not now; failed core feature: WeightedSplit FAILED now**")
    rows = {cells[2]: cells for cells in ([c.strip() for c in line.strip("|").split(" | ")] for line in lines
                                          if line.startswith("| **regression** |"))}
    assert set(rows) == set(WEIGHTED)
    for name, cells in rows.items():
        assert cells[4:6] == ["PASSED", "**FAILED**"], cells
        # The failure's first line (the mutant's equal split), and where its debug bundle is.
        assert cells[6].startswith("AssertionError: "), cells
        assert "debug bundle: `debug/suites_test_traffic.py_test_" in cells[6], cells  # beside the report
        assert (new.parent / cells[6].split("debug bundle: `")[1].rstrip("`")).is_dir()
    assert "v2 received" in rows["WeightedSplit"][6] and "v3 has weight 0 but received" in rows["CanaryProgression"][6]
    # The mutant runs in the local mesh's mode, named: the one fact that changed.
    changed = lines[lines.index("| changed | baseline | now |") + 2]
    assert changed.startswith("| mode |") and changed.endswith("with mutants ignore-weights |"), changed


def test_a_passing_run_against_another_passing_run_passes(runs: dict[str, Path]) -> None:
    for fmt in ("markdown", "text"):
        done = meshconf(["gate", "--baseline", str(runs["passing"]), str(runs["again"]), "--format", fmt],
                        cwd=runs["again"].parent.parent)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "PASS (exit 0): no regression, no failed core feature" in done.stdout
        assert "3 features: 0 regressions, 0 fixes, 3 unchanged" in done.stdout
        assert "regression" not in done.stdout.replace("no regression", "").replace("0 regressions", "")


def test_the_mutant_gated_against_a_passing_run_is_a_fix_of_three(runs: dict[str, Path]) -> None:
    done = meshconf(["gate", "--baseline", str(runs["mutant"]), str(runs["passing"])], cwd=runs["passing"].parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 features: 0 regressions, 3 fixes, 0 unchanged" in done.stdout
    assert [line.split()[:3] for line in done.stdout.splitlines() if line.startswith("fix ")] == \
        [["fix", "MESH-TRAFFIC", name] for name in WEIGHTED]
