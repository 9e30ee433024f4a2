"""Allure results that read by profile and feature: titles, the profile > feature tree, failures
sorted into categories by kind, and the run's environment, executor and Allure 3 config.

The categories are checked against real result files: allure-pytest writes them for suite tests
that fail in each way, through the real fixtures and the real verdict and convergence code; each
file's status and message are then matched as Allure 2 matches (Java, DOTALL, the whole message)
and as Allure 3 matches (RegExp.test, anywhere in it).
"""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from conformance import features
from conformance.features import CATALOGUE
from conformance.report import allure_labels, allure_results, failure_kinds
from conformance.report.failure_kinds import FailureKind
from conformance.report.results import ResultBook
from conformance.targets.base import TargetFacts
from tests.fake_npx import CONFIG_FIELDS

CONFTEST = '''
import os
import pytest
from conformance.errors import ConformanceError
from conformance.targets import select
from conformance.targets.base import TargetFacts
pytest_plugins = ["conformance.fixtures.mesh"]  # the real target fixture, with select.make faked below


class Fake:
    name = "local"

    def up(self):
        if os.environ.get("FAKE_BRING_UP_FAILS"):
            raise ConformanceError("the local mesh did not come up: port 15010 is in use")

    def down(self):
        pass

    def facts(self):
        return TargetFacts(target="local", mode="fake mesh", mesh="meshconf-local", mesh_version="1.28.0",
                           envoy_version="1.40.0")

    def phases(self):
        return {}

    def supports(self, feature):
        return True


select.make = lambda settings: Fake()
'''

SUITE = '''
import pytest
from conformance.checks import converge, decide
from conformance.errors import TargetUnavailable
from conformance.settings import Timeouts
from conformance.verdicts import Verdict

@pytest.mark.feature("RouteToVersion")
def test_verdict():
    decide(Verdict(False, "reviews v2 answered 20 of 100 requests"))

@pytest.mark.feature("WeightedSplit")
def test_not_converged():
    converge(lambda: None, lambda batch: Verdict(False, "the old weights still answer"),
             Timeouts(consistency=0.3, poll=0.05), "80/20 in force")

@pytest.mark.feature("HeaderMatchRouting")
def test_harness_error():
    {}["jason"]

@pytest.mark.feature("CanaryProgression")
def test_plain_assert():
    assert 302 == 200, "login as jason failed"

@pytest.mark.feature("FaultInjection")
def test_target_unavailable():
    raise TargetUnavailable("the cluster stopped answering")

@pytest.mark.feature("IngressGateway")
def test_passes():
    pass
'''

EXPECTED = {
    "test_verdict": ("failed", FailureKind.VERDICT),
    "test_not_converged": ("broken", FailureKind.NOT_CONVERGED),
    "test_harness_error": ("broken", FailureKind.HARNESS),
    "test_plain_assert": ("failed", FailureKind.HARNESS),
    "test_target_unavailable": ("broken", FailureKind.TARGET),
}
GITHUB = {"GITHUB_ACTIONS": "true", "GITHUB_WORKFLOW": "conformance", "GITHUB_RUN_NUMBER": "42",
          "GITHUB_RUN_ID": "9001", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/mesh"}


def run_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str,
              env: dict[str, str] | None = None) -> tuple[pytest.RunResult, Path]:
    suites = pytester.mkpydir("suites")
    (suites / "conftest.py").write_text(CONFTEST)
    (suites / "test_s.py").write_text(SUITE)
    for key in [*GITHUB, "GITLAB_CI"]:
        monkeypatch.delenv(key, raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    alluredir = pytester.path / "allure"
    result = pytester.runpytest_subprocess(
        str(suites), "--target", "local", "--alluredir", str(alluredir), "-p", "no:cacheprovider",
        "-p", "no:randomly", "--rootdir", str(pytester.path), *args)
    return result, alluredir


def results_by_test(alluredir: Path) -> dict[str, dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in alluredir.glob("*-result.json")]
    return {r["fullName"].rsplit("#", 1)[1]: r for r in found}


def allure2_category(result: dict[str, Any], categories: list[dict[str, Any]]) -> str | None:
    """allure2 CategoriesPlugin: the first category whose statuses and whole-message regex match."""
    message = result.get("statusDetails", {}).get("message") or ""
    return next((c["name"] for c in categories if result["status"] in c["matchedStatuses"]
                 and re.fullmatch(c["messageRegex"], message, re.DOTALL)), None)


def allure3_category(result: dict[str, Any], categories: list[dict[str, Any]]) -> str | None:
    """allure3 matchObjectMatcher: statuses, then RegExp.test of the message (a search)."""
    message = result.get("statusDetails", {}).get("message") or ""
    return next((c["name"] for c in categories if result["status"] in c["matchedStatuses"]
                 and re.search(c["messageRegex"], message)), None)


def labels(result: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for label in result["labels"]:
        out.setdefault(label["name"], []).append(label["value"])
    return out


def test_each_kind_of_failure_lands_in_its_category_in_real_results(pytester: pytest.Pytester,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    result, alluredir = run_suite(pytester, monkeypatch, "-n", "2", env=GITHUB)
    result.assert_outcomes(passed=1, failed=5)
    written = results_by_test(alluredir)
    categories = json.loads((alluredir / allure_results.CATEGORIES_FILE).read_text())
    config = json.loads((alluredir / allure_results.CONFIG_FILE).read_text())
    assert config["categories"] == categories  # Allure 3 reads its own config, Allure 2 categories.json
    for test, (status, kind) in EXPECTED.items():
        found = written[test]
        assert found["status"] == status, (test, found["statusDetails"])
        assert allure2_category(found, categories) == kind.category, (test, found["statusDetails"]["message"])
        assert allure3_category(found, categories) == kind.category, (test, found["statusDetails"]["message"])
    assert allure2_category(written["test_passes"], categories) is None
    # The kind is named in the terminal too: it is part of the failure's message.
    result.stdout.fnmatch_lines([f"*{FailureKind.VERDICT.note}*"])


def test_a_target_that_never_came_up_is_the_targets_failure_for_every_test(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result, alluredir = run_suite(pytester, monkeypatch, "--feature", "RouteToVersion", "--feature", "IngressGateway",
                                  env={"FAKE_BRING_UP_FAILS": "1"})
    result.assert_outcomes(errors=2)
    categories = json.loads((alluredir / allure_results.CATEGORIES_FILE).read_text())
    written = results_by_test(alluredir)
    assert set(written) == {"test_verdict", "test_passes"}
    for found in written.values():
        assert found["status"] == "broken"
        assert "port 15010 is in use" in found["statusDetails"]["message"]
        assert allure2_category(found, categories) == allure3_category(found, categories) == FailureKind.TARGET.category
        # The note is added once, though the session fixture's error is raised for each test.
        assert found["statusDetails"]["message"].count(failure_kinds.NOTE_PREFIX) == 1
    # Titled and filed under profile > feature though the setup failed.
    assert written["test_verdict"]["name"] == "RouteToVersion: all to v1, then to v3"
    properties = (alluredir / allure_results.ENVIRONMENT_FILE).read_text()
    assert "target=local\n" in properties and "mesh=" not in properties  # no facts from a target never up


def test_tests_are_titled_by_feature_and_filed_under_profile_and_feature(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result, alluredir = run_suite(pytester, monkeypatch, "--feature", "WeightedSplit", "--feature", "IngressGateway")
    result.assert_outcomes(passed=1, failed=1)
    written = results_by_test(alluredir)
    split = written["test_not_converged"]
    assert split["name"] == "WeightedSplit: 80/20, 50/50, 50/30/20"
    assert {k: v for k, v in labels(split).items() if k in ("parentSuite", "suite", "subSuite", "epic", "feature",
                                                          "severity")} == {
        "parentSuite": ["MESH-TRAFFIC"], "suite": ["WeightedSplit"], "epic": ["MESH-TRAFFIC"],
        "feature": ["WeightedSplit"], "severity": ["critical"]}
    assert labels(written["test_passes"])["parentSuite"] == ["MESH-INGRESS"]
    # A serial run writes them too; outside CI there is no executor.
    assert not (alluredir / allure_results.EXECUTOR_FILE).exists()
    properties = (alluredir / allure_results.ENVIRONMENT_FILE).read_text()
    assert "profiles=MESH-TRAFFIC, MESH-INGRESS\n" in properties
    assert "meshVersion=1.28.0\n" in properties and "kubernetesVersion=none\n" in properties


def test_the_run_writes_environment_and_executor_from_github_actions(pytester: pytest.Pytester,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    result, alluredir = run_suite(pytester, monkeypatch, "-n", "2", "--feature", "IngressGateway",
                                  "--feature", "RouteToVersion", env=GITHUB)
    result.assert_outcomes(passed=1, failed=1)
    assert json.loads((alluredir / allure_results.EXECUTOR_FILE).read_text()) == {
        "name": "GitHub Actions", "type": "github", "url": "https://github.com/acme/mesh", "buildOrder": 42,
        "buildName": "conformance #42", "buildUrl": "https://github.com/acme/mesh/actions/runs/9001",
        "reportName": "meshconf conformance"}
    properties = dict(line.split("=", 1) for line in
                      (alluredir / allure_results.ENVIRONMENT_FILE).read_text().splitlines())
    assert properties["target"] == "local" and properties["mesh"] == "meshconf-local"
    assert properties["envoyVersion"] == "1.40.0" and properties["profiles"] == "MESH-TRAFFIC, MESH-INGRESS"
    assert len(properties["runId"]) > 0


def test_gitlab_ci_executor_and_none_elsewhere() -> None:
    gitlab = {"GITLAB_CI": "true", "CI_PIPELINE_ID": "777", "CI_JOB_NAME": "conformance",
              "CI_JOB_URL": "https://gitlab.example/acme/mesh/-/jobs/5",
              "CI_PIPELINE_URL": "https://gitlab.example/acme/mesh/-/pipelines/777"}
    assert allure_results.executor(gitlab) == {
        "name": "GitLab CI", "type": "gitlab", "url": "https://gitlab.example/acme/mesh/-/pipelines/777",
        "buildOrder": 777, "buildName": "conformance (pipeline #777)",
        "buildUrl": "https://gitlab.example/acme/mesh/-/jobs/5", "reportName": "meshconf conformance"}
    assert allure_results.executor({"CI": "true"}) is None
    assert allure_results.executor({"GITHUB_ACTIONS": "false"}) is None


def test_environment_properties_escape_what_java_properties_would_misread() -> None:
    text = allure_results.properties({"mode": "a\\b\nc", "mesh": "naïve"})
    assert text == "mode=a\\\\b\\nc\nmesh=na\\u00efve\n"
    book = ResultBook(facts=TargetFacts("kind", "kind cluster", "istio", "1.28.1", "1.36.2", "v1.33.1"),
                      run_id="r1", selected=[CATALOGUE[0]])
    assert allure_results.environment(book) == {
        "target": "kind", "mode": "kind cluster", "mesh": "istio", "meshVersion": "1.28.1", "envoyVersion": "1.36.2",
        "kubernetesVersion": "v1.33.1", "runId": "r1", "profiles": "MESH-INJECTION",
        "harness": allure_results.environment(book)["harness"]}


def test_the_allure3_config_uses_only_fields_allure3_knows_and_groups_by_profile_then_feature() -> None:
    config = allure_results.allure3_config(Path("/h/history.jsonl"))
    assert set(config) <= CONFIG_FIELDS
    assert config["plugins"]["awesome"]["options"]["groupBy"] == ["parentSuite", "suite"]
    assert config["historyPath"] == "/h/history.jsonl"
    assert "historyPath" not in allure_results.allure3_config()


def test_every_feature_has_a_title_that_allure_will_not_format() -> None:
    assert [f.name for f in CATALOGUE if not f.covers.strip()] == []
    assert allure_labels.title(features.get("WeightedSplit")) == "WeightedSplit: 80/20, 50/50, 50/30/20"
    # allure-pytest formats a title with the test's parameters (SafeFormatter): no braces.
    assert not [f.covers for f in CATALOGUE if "{" in f.covers or "}" in f.covers]


def test_category_regexes_are_literal_in_every_dialect() -> None:
    for kind in FailureKind:
        assert re.fullmatch(failure_kinds.literal(kind.note), kind.note)
    assert failure_kinds.literal("a (b).c") == r"a \(b\)\.c"
