"""The conformance report's JSON Schema (conformance/report/schema/, one file per apiVersion): every
report build() writes validates, and a report edited to be invalid is refused by `meshconf gate`
(exit 2) naming the file and the field."""

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from conformance.cli import main
from conformance.report.conformance_report import build
from conformance.report.report_schema import SCHEMA_DIR, known_api_versions, problems, schema_file, validator
from conformance.report.results import Outcome, ResultBook
from tests.report_builders import ISTIO_OLD, REASONS, report, result_book, write

EVERY_OUTCOME = {"WeightedSplit": Outcome.PASSED, "RouteToVersion": Outcome.FAILED,
                 "CanaryProgression": Outcome.SKIPPED, "ServiceGraph": Outcome.NOT_SUPPORTED,
                 "GatewayAPIIngress": Outcome.FAILED}


def built_reports() -> dict[str, dict[str, Any]]:
    """What build() writes: every outcome, a way measured, debug bundles; on a cluster with Kubernetes;
    a run interrupted before a target reported its facts; a run that selected nothing."""
    interrupted = result_book({"WeightedSplit": Outcome.PASSED}, facts=None)
    interrupted.selected.append(result_book({"RouteToVersion": Outcome.PASSED}).selected[0])  # never ran
    interrupted.interrupted = True
    return {"every outcome": report(EVERY_OUTCOME), "cluster": report(EVERY_OUTCOME, ISTIO_OLD),
            "interrupted": build(interrupted), "nothing selected": build(ResultBook())}


def test_one_schema_per_api_version_and_each_is_a_valid_draft_2020_12_schema() -> None:
    assert known_api_versions() == ["meshconf.dev/v1alpha1"]
    for path in SCHEMA_DIR.glob("*.json"):
        schema = json.loads(path.read_text())
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["properties"]["apiVersion"]["const"] == path.stem.replace("_", "/", 1)


@pytest.mark.parametrize("name", list(built_reports()))
def test_every_report_build_writes_validates_as_written_and_read_back(name: str) -> None:
    built = built_reports()[name]
    check = validator(built["apiVersion"])
    assert schema_file(built["apiVersion"]).is_file()
    assert problems(check, built) == []
    assert problems(check, yaml.safe_load(yaml.safe_dump(built))) == []  # statuses' keys: integers
    assert problems(check, json.loads(json.dumps(built))) == []  # ... and strings


def test_the_built_reports_hold_what_the_schema_makes_optional() -> None:
    """Else the validation above would prove little: each optional part is there in one of them."""
    built = built_reports()
    every = built["every outcome"]
    assert {f["outcome"] for f in every["features"]} == {o.value for o in Outcome}
    assert every["ingressComparison"][0]["statuses"] == {200: 18, 503: 2}
    assert [t.get("debugBundle") for f in every["features"] for t in f["tests"] if f["outcome"] == "FAILED"] == \
        ["results/debug/suites_test_RouteToVersion", "results/debug/suites_test_GatewayAPIIngress"]
    assert built["cluster"]["implementation"]["kubernetesVersion"] == "v1.34.0"
    assert built["interrupted"]["result"] == "interrupted" and built["interrupted"]["implementation"]["mesh"] is None
    assert "reason" in every["features"][0] and built["nothing selected"]["features"] == []


def edit(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    edited = copy.deepcopy(report(EVERY_OUTCOME))
    change(edited)
    return edited


# (what was edited, the edit, what the refusal must say)
EDITS: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    ("an outcome misspelt", lambda r: r["features"][3].update(outcome="PASS"),
     "features[3].outcome: 'PASS' is not one of ['PASSED', 'FAILED', 'SKIPPED', 'NOT_SUPPORTED']"),
    ("a test without its id", lambda r: r["features"][1]["tests"][0].pop("id"),
     "features[1].tests[0].id: required, missing"),
    ("a field meshconf does not write", lambda r: r["run"].update(targt="kind"),
     "run.targt: not a field of this apiVersion"),
    ("a level in capitals", lambda r: r["features"][0].update(level="Core"),
     "features[0].level: 'Core' is not one of ['core', 'extended']"),
    ("an overall result unknown", lambda r: r.update(result="passed"),
     "result: 'passed' is not one of ['success', 'partial', 'failure', 'interrupted']"),
    ("a negative count", lambda r: r["profiles"][0]["core"]["statistics"].update(PASSED=-1),
     "profiles[0].core.statistics.PASSED: -1 is less than the minimum of 0"),
    ("a latency in words", lambda r: r["ingressComparison"][0].update(p50Ms="fast"),
     "ingressComparison[0].p50Ms: 'fast' is not of type 'number'"),
    ("the features section gone", lambda r: r.pop("features"), "features: required, missing"),
    ("a feature twice", lambda r: r["features"][4].update(name="WeightedSplit"),
     "features[4].name: 'WeightedSplit' appears more than once"),
    ("another kind", lambda r: r.update(kind="Report"), "kind: 'ConformanceReport' was expected"),
]


def gate(capsys: pytest.CaptureFixture[str], baseline: Path, new: Path) -> tuple[int, str]:
    code = main(["gate", "--baseline", str(baseline), str(new)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("what", "change", "message"), EDITS, ids=[e[0] for e in EDITS])
def test_a_report_edited_to_be_invalid_is_refused_naming_the_file_and_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str,
        change: Callable[[dict[str, Any]], object], message: str) -> None:
    good = write(tmp_path / "baseline.yaml", report(EVERY_OUTCOME))
    assert gate(capsys, good, good)[0] == 1  # valid: compared (a core feature FAILED, so 1)
    bad = write(tmp_path / "edited.yaml", edit(change))
    for baseline, new in ((good, bad), (bad, good)):  # refused on either side
        code, err = gate(capsys, baseline, new)
        assert code == 2, err
        assert f"meshconf: error: report {bad} does not match the meshconf.dev/v1alpha1 schema " \
               "(meshconf.dev_v1alpha1.json):" in err
        assert f"  {message}" in err.splitlines(), err


def test_every_problem_is_named_not_only_the_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path / "edited.yaml", edit(lambda r: (r["features"][0].update(outcome="OK"), r["run"].pop("id"))))
    code, err = gate(capsys, bad, bad)
    assert code == 2
    assert "  features[0].outcome: 'OK' is not one of" in err and "  run.id: required, missing" in err


def test_a_report_of_meshconf_before_the_headline_still_validates(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Written by meshconf 0.1.0 under the same apiVersion: no headline, no debugBundle. The baseline
    of a first gated run comes from there; the gate makes the headline from the reason."""
    old = edit(lambda r: [f.pop("headline") for f in r["features"]])
    for feature in old["features"]:
        for test in feature["tests"]:
            test.pop("debugBundle", None)
    baseline = write(tmp_path / "old.yaml", old)
    code = main(["gate", "--baseline", str(baseline), str(baseline), "--format", "markdown"])
    out = capsys.readouterr().out
    assert code == 1 and "| same | MESH-TRAFFIC | RouteToVersion | core | FAILED | **FAILED** | " \
        "AssertionError: 80/20 v1/v2 failed: v2 received 52.7% of 150 requests |" in out
    assert REASONS[Outcome.FAILED].splitlines()[1] not in out


@pytest.mark.parametrize(("content", "message"), [
    ("apiVersion: meshconf.dev/v2\nkind: ConformanceReport\n",
     "apiVersion 'meshconf.dev/v2' is not one this meshconf knows (known: meshconf.dev/v1alpha1)"),
    ("kind: ConformanceReport\n", "apiVersion None is not one this meshconf knows"),
    ("features: [\n", "not valid YAML: while parsing a flow"),
    ("- WeightedSplit\n", "not a conformance report (expected a mapping with apiVersion and kind "
                          "ConformanceReport, got list)"),
    ("", "not a conformance report"),
])
def test_input_that_is_no_report_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    content: str, message: str) -> None:
    good = write(tmp_path / "good.yaml", report({"WeightedSplit": Outcome.PASSED}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    code, err = gate(capsys, good, bad)
    assert code == 2 and f"meshconf: error: report {bad}: {message}" in err, err


def test_a_missing_report_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "good.yaml", report({"WeightedSplit": Outcome.PASSED}))
    code, err = gate(capsys, tmp_path / "nowhere.yaml", good)
    assert code == 2 and f"meshconf: error: report {tmp_path / 'nowhere.yaml'}: no such file" in err
