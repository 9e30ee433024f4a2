"""The pytest plugin: options, the feature marker, selection, and result recording.

Hooks and options only; the machinery lives in modules named for what they do.

Outcomes are recorded from pytest_runtest_logreport, which the process that writes the
report sees in every mode: the one process of a serial run, or the pytest-xdist controller,
to which the workers send their reports. Only that process writes the report.
"""

import argparse
import os
from pathlib import Path

import pytest

from conformance import features, interrupts, options
from conformance.errors import ConformanceError
from conformance.probes.latency import WAY_PROPERTY, WayLatency
from conformance.report import conformance_report, summary
from conformance.report import allure_labels, allure_results, failure_kinds
from conformance.report.results import DEBUG_BUNDLE_PROPERTY, NOT_SUPPORTED_PREFIX, Outcome, ResultBook
from conformance.settings import TARGETS
from conformance.stash import BOOK, CALL_REPORT, settings
from conformance import parallel, stash

FEATURE_PROPERTY = "feature"  # a test report's user property naming its feature (JUnit shows it too)
SUITES_DIR = "suites"  # suite tests live under <rootdir>/suites/


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshconf", "mesh conformance")
    group.addoption("--target", choices=TARGETS, default="auto", help="where the mesh runs (default: auto)")
    group.addoption("--profile", action="append", default=[], help="run this profile (repeatable)")
    group.addoption("--feature", action="append", default=[], help="run this feature (repeatable)")
    group.addoption("--context", default=None, help="kubeconfig context (kubeconfig target)")
    group.addoption("--local-mutant", action="append", default=[], dest="local_mutant",
                    help="local target only: run with this deliberate defect (repeatable)")
    # `meshconf run` resolves `auto` itself and hands the reason on, so the report can say why.
    group.addoption("--target-reason", default=None, help=argparse.SUPPRESS)
    group.addoption("--report", default=None, help="write the YAML conformance report here")
    group.addoption("--meshconf-workdir", default=".meshconf", help="where runs keep config and logs")
    group.addoption("--consistency-timeout", type=options.positive_seconds, default=None,
                    help="seconds for configuration to converge (default 30)")
    options.add_cluster_options(group.addoption)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "feature(name): the conformance feature a suite test checks")
    config.stash[BOOK] = ResultBook()
    interrupts.install()
    if stash.worker_id(config) is None:  # xdist workers send their reports to the controller
        config.pluginmanager.register(Recorder(config), "meshconf-recorder")


def pytest_unconfigure(config: pytest.Config) -> None:
    interrupts.restore()


def is_suite_test(item: pytest.Item) -> bool:
    """A test under <rootdir>/suites/: the check is relative, so a checkout's own path never matters."""
    try:
        relative = Path(str(item.path)).relative_to(item.config.rootpath)
    except ValueError:
        return False
    return relative.parts[:1] == (SUITES_DIR,)


def feature_of(item: pytest.Item) -> features.Feature:
    marks = list(item.iter_markers("feature"))
    if len(marks) != 1 or len(marks[0].args) != 1:
        raise pytest.UsageError(
            f"{item.nodeid}: a suite test carries exactly one @pytest.mark.feature(NAME); found {len(marks)}"
        )
    try:
        return features.get(marks[0].args[0])
    except ConformanceError as exc:
        raise pytest.UsageError(f"{item.nodeid}: {exc}") from None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    suite_items = [i for i in items if is_suite_test(i)]
    if not suite_items:
        return
    opt = config.option
    try:
        chosen = {f.name for f in features.select(opt.profile, opt.feature)}
    except ConformanceError as exc:
        raise pytest.UsageError(str(exc)) from None
    keep, drop = [], []
    for item in items:
        if is_suite_test(item) and feature_of(item).name not in chosen:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    kept = {feature_of(i).name for i in keep if is_suite_test(i)}
    for item in keep:
        if is_suite_test(item):
            item.user_properties.append((FEATURE_PROPERTY, feature_of(item).name))
            allure_labels.label(item, feature_of(item))
    config.stash[BOOK].selected = features.in_catalogue_order(kept)
    _resolve(config)


def _resolve(config: pytest.Config) -> None:
    """Resolve the run settings now: bad input is a usage error before any test starts."""
    try:
        settings(config)
    except ConformanceError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_sessionstart(session: pytest.Session) -> None:
    # The xdist controller collects nothing: it resolves the settings here, and brings a
    # cluster up once for all workers, before they start.
    if stash.is_controller(session.config) and parallel.runs_suites(session.config):
        _resolve(session.config)
        parallel.provision(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # type: ignore[no-untyped-def]
    """xdist controller, before a worker starts: the run's settings and the shared cluster."""
    parallel.hand_over(node.config, node.workerinput)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # type: ignore[no-untyped-def]
    """xdist controller: what a worker found besides its test reports (facts, timings, selection)."""
    output = getattr(node, "workeroutput", None) or {}
    if stash.WORKER_RESULTS in output:
        parallel.merge(node.config.stash[BOOK], output[stash.WORKER_RESULTS])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    failure = call.excinfo.value if call.excinfo else None
    if is_suite_test(item) and isinstance(failure, (Exception, pytest.fail.Exception)):
        # Before the report is made, so that pytest's and Allure's messages name the kind.
        failure_kinds.annotate(failure, failure_kinds.kind_of(failure, call.excinfo.tb))  # type: ignore[union-attr]
    report: pytest.TestReport = yield
    if not is_suite_test(item):
        return report
    if report.when == "call":
        item.stash[CALL_REPORT] = report  # fixtures read it at teardown (debug bundle on failure)
    exc = call.excinfo.value if call.excinfo else None
    if isinstance(exc, ConformanceError):
        # An error the user can act on reads as one line, not a traceback.
        report.longrepr = f"{type(exc).__name__}: {exc}"
    return report


class Recorder:
    """Records every phase's report of a suite test, in the process that writes the report."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        book = self.config.stash[BOOK]
        feature_name = dict(report.user_properties).get(FEATURE_PROPERTY)
        if feature_name is None:
            # xdist's report for the test a crashed worker was running carries no properties.
            started = next((r for r in book.records if r.nodeid == report.nodeid), None)
            if started is not None and report.failed:
                book.record(report.nodeid, started.feature, "call", Outcome.FAILED,
                            f"the worker running it crashed: {_failure_text(report)}")
            return
        if report.when == "call":
            book.phases["tests"] = book.phases.get("tests", 0.0) + report.duration
        ways = [WayLatency.from_property(str(v)) for k, v in report.user_properties if k == WAY_PROPERTY]
        bundle = dict(report.user_properties).get(DEBUG_BUNDLE_PROPERTY)
        book.record(report.nodeid, features.get(str(feature_name)), report.when, *_outcome(report),
                    duration=report.duration, ways=ways, debug_bundle=str(bundle) if bundle else None)


def _outcome(report: pytest.TestReport) -> tuple[Outcome, str]:
    if report.passed:
        evidence = [str(v) for k, v in report.user_properties if k == "evidence"]
        return Outcome.PASSED, "; ".join(evidence)
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith(NOT_SUPPORTED_PREFIX):
            return Outcome.NOT_SUPPORTED, reason.removeprefix(NOT_SUPPORTED_PREFIX)
        return Outcome.SKIPPED, reason
    return Outcome.FAILED, _failure_text(report)


def _failure_text(report: pytest.TestReport) -> str:
    """The failure's own message (a verdict's table included), without pytest's introspection."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    # The category note is for Allure's categories; the report's reason is the failure's own words.
    lines = [line for line in text.strip().splitlines() if not line.startswith(failure_kinds.NOTE_PREFIX)]
    if "assert " in [line[:7] for line in lines]:
        lines = lines[: [line[:7] for line in lines].index("assert ")]
    prefix = "" if report.when == "call" else f"error in {report.when}: "
    return prefix + ("\n".join(lines) or "failed")


@pytest.hookimpl(trylast=True)  # after the runner's session teardown: its timings are in
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    book = config.stash[BOOK]
    if stash.is_controller(config):
        try:
            parallel.release(config)
            parallel.sweep_local_workers(config)
        finally:
            _write_report(session, exitstatus)
        return
    if stash.worker_id(config) is not None:
        config.workeroutput[stash.WORKER_RESULTS] = parallel.worker_results(book)  # type: ignore[attr-defined]
        return
    _write_report(session, exitstatus)


def _write_report(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    book = config.stash[BOOK]
    book.interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or interrupts.received() is not None
    code = interrupts.exit_code()
    if code is not None:
        session.exitstatus = code
    if stash.SETTINGS not in config.stash:  # no suite test was collected, or bad input
        return
    parallel.select_recorded(book, features.select(config.option.profile, config.option.feature))
    if not book.selected:
        return
    path = settings(config).report
    if path is not None:
        conformance_report.write(book, path)
    alluredir = getattr(config.option, "allure_report_dir", None)  # allure-pytest's --alluredir
    if alluredir:
        allure_results.write(Path(alluredir), book, os.environ)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    book = config.stash[BOOK]
    if book.selected or book.records:
        summary.print_summary(book, terminalreporter)
