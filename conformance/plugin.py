"""The pytest plugin: options, the feature marker, selection, and result recording.

Hooks and options only; the machinery lives in modules named for what they do.
"""

import argparse
from dataclasses import replace
from pathlib import Path

import pytest

from conformance import features, options
from conformance.errors import ConformanceError
from conformance.report import conformance_report, summary
from conformance.report.results import NOT_SUPPORTED_PREFIX, Outcome, ResultBook, Record
from conformance.settings import TARGETS, RunSettings, Timeouts
from conformance.targets import select

BOOK = pytest.StashKey[ResultBook]()
SETTINGS = pytest.StashKey[RunSettings]()
CALL_REPORT = pytest.StashKey[pytest.TestReport]()


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
    group.addoption("--consistency-timeout", type=float, default=None,
                    help="seconds for configuration to converge (default 30)")
    options.add_cluster_options(group.addoption)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "feature(name): the conformance feature a suite test checks")
    config.stash[BOOK] = ResultBook()


def settings(config: pytest.Config) -> RunSettings:
    """RunSettings from the options, resolved once (auto picks a target here)."""
    if SETTINGS not in config.stash:
        opt = config.option
        timeouts = Timeouts.from_env().with_overrides(consistency=opt.consistency_timeout)
        resolved = select.resolve(
            RunSettings(
                target=opt.target,
                profiles=tuple(opt.profile),
                features=tuple(opt.feature),
                mutants=tuple(opt.local_mutant),
                context=opt.context,
                report=Path(opt.report) if opt.report else None,
                work_dir=Path(opt.meshconf_workdir),
                timeouts=timeouts,
                **options.settings_values(opt),
            )
        )
        if opt.target_reason:
            resolved = replace(resolved, target_reason=opt.target_reason)
        config.stash[SETTINGS] = resolved
        book = config.stash[BOOK]
        book.run_id, book.target_reason = resolved.run_id, resolved.target_reason
    return config.stash[SETTINGS]


def is_suite_test(item: pytest.Item) -> bool:
    return "suites" in Path(str(item.path)).parent.parts


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
    book = config.stash[BOOK]
    book.selected = [f for f in features.CATALOGUE if any(feature_of(i).name == f.name for i in keep if is_suite_test(i))]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report: pytest.TestReport = yield
    if not is_suite_test(item):
        return report
    book = item.config.stash[BOOK]
    if report.when == "call":
        item.stash[CALL_REPORT] = report  # fixtures read it at teardown (debug bundle on failure)
        book.phases["tests"] = book.phases.get("tests", 0.0) + report.duration
    exc = call.excinfo.value if call.excinfo else None
    if isinstance(exc, ConformanceError):
        # An error the user can act on reads as one line, not a traceback.
        report.longrepr = f"{type(exc).__name__}: {exc}"
    book.record(
        Record(item.nodeid, feature_of(item), *_outcome(report), duration=report.duration)
    )
    return report


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
    lines = text.strip().splitlines()
    if "assert " in [line[:7] for line in lines]:
        lines = lines[: [line[:7] for line in lines].index("assert ")]
    return "\n".join(lines) or "failed"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    book = config.stash[BOOK]
    if not book.selected or SETTINGS not in config.stash:
        return
    book.interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    path = settings(config).report
    if path is not None:
        conformance_report.write(book, path)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    book = config.stash[BOOK]
    if book.selected:
        summary.print_summary(book, terminalreporter)
