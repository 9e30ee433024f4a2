"""The plugin's collection rules: every suite test names exactly one known feature."""

import pytest

SUITE = """
import pytest

@pytest.mark.feature("RouteToVersion")
def test_route():
    pass

@pytest.mark.feature("IngressGateway")
def test_ingress():
    pass
"""


def make_suite(pytester: pytest.Pytester, body: str) -> None:
    suites = pytester.mkpydir("suites")
    (suites / "test_suite.py").write_text(body)


def test_missing_feature_is_a_collection_error(pytester: pytest.Pytester) -> None:
    make_suite(pytester, "def test_unlabelled():\n    pass\n")
    result = pytester.runpytest("--collect-only", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_unlabelled: a suite test carries exactly one*found 0*"])


def test_unknown_feature_is_a_collection_error(pytester: pytest.Pytester) -> None:
    make_suite(pytester, "import pytest\n@pytest.mark.feature('Teleport')\ndef test_x():\n    pass\n")
    result = pytester.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_x: unknown feature 'Teleport'*"])


def test_two_features_is_a_collection_error(pytester: pytest.Pytester) -> None:
    body = "import pytest\n@pytest.mark.feature('RouteToVersion')\n@pytest.mark.feature('IngressGateway')\ndef test_x():\n    pass\n"
    make_suite(pytester, body)
    result = pytester.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*found 2*"])


@pytest.mark.parametrize(("args", "kept"), [
    ([], {"test_route", "test_ingress"}),
    (["--feature", "IngressGateway"], {"test_ingress"}),
    (["--profile", "MESH-TRAFFIC"], {"test_route"}),
    (["--profile", "MESH-TRAFFIC", "--feature", "IngressGateway"], {"test_route", "test_ingress"}),
])
def test_selection(pytester: pytest.Pytester, args: list[str], kept: set[str]) -> None:
    make_suite(pytester, SUITE)
    result = pytester.runpytest("--collect-only", "-q", *args)
    assert result.ret == pytest.ExitCode.OK
    collected = {line.split("::")[-1] for line in result.outlines if "::" in line}
    assert collected == kept


def test_unknown_profile_is_a_usage_error(pytester: pytest.Pytester) -> None:
    make_suite(pytester, SUITE)
    result = pytester.runpytest("--collect-only", "--profile", "MESH-NOPE")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown profile 'MESH-NOPE'*"])


def test_tests_outside_suites_are_not_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    assert pytester.runpytest().ret == pytest.ExitCode.OK


def test_a_checkout_under_a_folder_named_suites_is_not_a_suite(pytester: pytest.Pytester) -> None:
    # Only <rootdir>/suites/ holds suite tests: a project cloned into ~/suites/ keeps its own tests.
    checkout = pytester.mkdir("suites") / "project"
    (checkout / "tests").mkdir(parents=True)
    (checkout / "tests" / "test_plain.py").write_text("def test_plain():\n    pass\n")
    result = pytester.runpytest(str(checkout / "tests"), "--rootdir", str(checkout))
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)


def test_a_crashed_workers_test_is_failed_not_interrupted() -> None:
    from types import SimpleNamespace

    from conformance import features
    from conformance.plugin import FEATURE_PROPERTY, Recorder
    from conformance.report.results import Outcome, ResultBook
    from conformance.stash import BOOK

    book = ResultBook()
    config = SimpleNamespace(stash={BOOK: book})
    recorder = Recorder(config)  # type: ignore[arg-type]
    nodeid = "suites/test_traffic.py::test_route_to_version"
    setup = pytest.TestReport(nodeid, ("f", 0, "t"), {}, "passed", None, "setup",
                              user_properties=[(FEATURE_PROPERTY, "RouteToVersion")])
    recorder.pytest_runtest_logreport(setup)
    assert book.feature_outcome(features.get("RouteToVersion")) == (Outcome.SKIPPED, "interrupted")
    # What pytest-xdist reports for the test a worker was running when it died.
    crash = pytest.TestReport(nodeid, ("f", 0, "t"), {}, "failed", "worker 'gw0' crashed while running it", "???")
    recorder.pytest_runtest_logreport(crash)
    outcome, reason = book.feature_outcome(features.get("RouteToVersion"))
    assert outcome is Outcome.FAILED and "the worker running it crashed" in reason and "gw0" in reason
