"""Each feature in one line (a passed one's key figure, another's first line of its reason) in the
report and the terminal summary, and a failed test's debug bundle named in both."""

from pathlib import Path

import pytest
import yaml

from conformance import features
from conformance.plugin import FEATURE_PROPERTY, Recorder
from conformance.report.conformance_report import build, write
from conformance.report.failure_kinds import NOTE_PREFIX, FailureKind
from conformance.report.headline import LIMIT, first_line, key_figure
from conformance.report.results import DEBUG_BUNDLE_PROPERTY, ResultBook
from conformance.report.summary import render
from conformance.stash import BOOK

SPLIT = features.get("WeightedSplit")
ROUTE = features.get("RouteToVersion")
EVIDENCE = ("80/20 v1/v2 held: 650 requests, v1 524 (80.6%), v2 126 (19.4%); alpha 1e-04, power 0.99 at +-5 points; "
            "50/50 v1/v3 held: 2400 requests")
FAILURE = ("AssertionError: 80/20 v1/v2 rejected: 400 requests, v1 400 (100.0%), v2 0 (0.0%)\n"
           "| version | expected | observed |")
BUNDLE = "results/debug/suites_test_traffic.py__test_weighted_split"


def test_the_key_figure_is_the_first_clause_of_the_evidence() -> None:
    assert key_figure(EVIDENCE) == "80/20 v1/v2 held: 650 requests, v1 524 (80.6%), v2 126 (19.4%)"
    assert key_figure("STRICT namespace: all 10 refused | PERMISSIVE namespace: all 10 answered") == \
        "STRICT namespace: all 10 refused"
    assert key_figure("") == ""


def test_a_long_line_is_cut_with_an_ellipsis_to_fit_a_cell() -> None:
    cut = first_line("x" * 300 + "\nsecond line")
    assert len(cut) == LIMIT and cut.endswith("\u2026")
    assert first_line("short\nsecond") == "short"


def record(call: str) -> ResultBook:
    """WeightedSplit (passed, or failed with its bundle named at teardown) and RouteToVersion (passed)."""
    book = ResultBook(selected=[ROUTE, SPLIT])
    recorder = Recorder(type("Config", (), {"stash": {BOOK: book}})())  # type: ignore[arg-type]
    for nodeid, feature, outcome in (("r", ROUTE, "passed"), ("s", SPLIT, call)):
        for when in ("setup", "call", "teardown"):
            properties = [(FEATURE_PROPERTY, feature.name)]
            if when == "call" and outcome == "passed":
                properties.append(("evidence", EVIDENCE if feature is SPLIT else "100 v1 held: 90 requests"))
            if when == "teardown" and outcome == "failed":
                properties.append((DEBUG_BUNDLE_PROPERTY, BUNDLE))
            failed = when == "call" and outcome == "failed"
            recorder.pytest_runtest_logreport(pytest.TestReport(
                nodeid, ("f", 0, "t"), {}, "failed" if failed else "passed", FAILURE if failed else None, when,
                user_properties=properties))
    return book


def test_the_report_gives_each_feature_its_headline_and_a_failed_test_its_bundle() -> None:
    report = build(record("failed"))
    route, split = report["features"]
    assert route["headline"] == "100 v1 held: 90 requests" and "debugBundle" not in route["tests"][0]
    assert split["outcome"] == "FAILED"
    assert split["headline"] == "AssertionError: 80/20 v1/v2 rejected: 400 requests, v1 400 (100.0%), v2 0 (0.0%)"
    assert split["tests"][0]["debugBundle"] == BUNDLE
    passed = build(record("passed"))["features"][1]
    assert passed["headline"] == key_figure(EVIDENCE) and "debugBundle" not in passed["tests"][0]


def test_the_summary_shows_the_key_figure_and_under_a_failure_its_bundle() -> None:
    text = render(record("failed"), width=200)
    [split] = [line for line in text.splitlines() if "WeightedSplit" in line]
    assert "FAILED" in split and "80/20 v1/v2 rejected: 400 requests" in split
    assert f"debug: {BUNDLE}" in text
    assert "| version |" not in text  # one line each: the table stays in the report
    passed = render(record("passed"), width=200)
    assert "80/20 v1/v2 held: 650 requests, v1 524 (80.6%), v2 126 (19.4%)" in passed
    assert "alpha 1e-04" not in passed and "debug:" not in passed


def test_the_written_report_names_a_bundle_beside_it_relative_to_it(tmp_path: Path) -> None:
    book = record("failed")
    results = tmp_path / "results"
    book.records[1].debug_bundle = str(results / "debug" / "suites_test_traffic.py__test_weighted_split")
    write(book, results / "report.yaml")
    split = yaml.safe_load((results / "report.yaml").read_text())["features"][1]
    assert split["tests"][0]["debugBundle"] == "debug/suites_test_traffic.py__test_weighted_split"
    elsewhere = build(record("failed"), results)["features"][1]  # a bundle outside the folder stays whole
    assert elsewhere["tests"][0]["debugBundle"] == BUNDLE


def test_the_reason_leaves_out_the_allure_category_note() -> None:
    book = ResultBook(selected=[SPLIT])
    recorder = Recorder(type("Config", (), {"stash": {BOOK: book}})())  # type: ignore[arg-type]
    noted = f"{FAILURE}\n{FailureKind.VERDICT.note}"
    recorder.pytest_runtest_logreport(pytest.TestReport(
        "s", ("f", 0, "t"), {}, "failed", noted, "call", user_properties=[(FEATURE_PROPERTY, SPLIT.name)]))
    reason = book.feature_outcome(SPLIT)[1]
    assert reason.startswith("AssertionError: 80/20 v1/v2 rejected") and NOTE_PREFIX not in reason
