"""meshconf: run | up | down | doctor | list | report | gate."""

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import NoReturn
from pathlib import Path

import pytest
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import conformance.suites
from conformance import features, options
from conformance.errors import ConformanceError
from conformance.report.gate import DEFAULT_REPORT, FORMATS, gate as compare_reports
from conformance.settings import TARGETS, RunSettings, Timeouts
from conformance.targets import select
from conformance.targets.preflight import Check

# The suites as installed (suites/ in a checkout, conformance/suites/ in a wheel). Their parent
# is pytest's rootdir, so test ids read suites/test_<profile>.py::... in both.
SUITES = Path(conformance.suites.__file__).resolve().parent
# The targets whose prerequisites `meshconf doctor` checks, in the order it prints them.
DOCTOR_TARGETS = ("kind", "local")

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


class Parser(argparse.ArgumentParser):
    """An argument error is one line and exit 2: the usage block would bury it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="meshconf", description="End-to-end service-mesh conformance.")
    sub = p.add_subparsers(dest="command", required=True)

    cluster = Parser(add_help=False)
    cluster.add_argument("--context", help="kubeconfig context (selects the kubeconfig target under auto)")
    options.add_cluster_options(cluster.add_argument)

    run = sub.add_parser("run", parents=[cluster], help="bring up a target, run the suites, write the results")
    run.add_argument("--target", default="auto", help=f"one of {', '.join(TARGETS)} (default auto)")
    run.add_argument("--profile", action="append", default=[], help="run this profile (repeatable)")
    run.add_argument("--feature", action="append", default=[], help="run this feature (repeatable)")
    run.add_argument("--local-mutant", action="append", default=[],
                     help="local target: run with a deliberate defect (see `meshconf list --mutants`)")
    run.add_argument("--results", default="results", help="results directory (default ./results)")
    run.add_argument("--alluredir", help="Allure results directory (default RESULTS/allure)")
    run.add_argument("--report", help="conformance report file (default RESULTS/report.yaml)")
    run.add_argument("--consistency-timeout", type=options.positive_seconds,
                     help="seconds for config to converge (default 30)")
    run.add_argument("-n", "--workers", type=options.positive_int,
                     help="run the tests in N parallel workers (pytest-xdist)")
    run.add_argument("--plan", action="store_true", help="print what the run would do, and run nothing")
    run.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")

    for name, text in (("up", "provision only: a kind cluster with Istio; prints the kubeconfig path"),
                       ("down", "delete the kind cluster that `meshconf up` created")):
        sub.add_parser(name, parents=[cluster], help=text)
    doctor_parser = sub.add_parser("doctor", help="check every prerequisite of the kind and local targets "
                                   "(Docker, kind, limits; Envoy, loopback, ports), each with its fix")
    doctor_parser.add_argument("--target", choices=DOCTOR_TARGETS,
                               help="check only this target's prerequisites (default: both)")

    lst = sub.add_parser("list", help="print the feature catalogue")
    lst.add_argument("--mutants", action="store_true", help="list the local mesh's mutants instead")

    rep = sub.add_parser("report", help="render a run's Allure results as HTML with Allure 3 (npx); "
                         "without Node.js, print the command")
    rep.add_argument("results", nargs="?", default="results", metavar="RESULTS",
                     help="the run's results directory, whose allure/ is rendered (default ./results)")
    rep.add_argument("--history", metavar="DIR", help="carry the report's history (trends) in DIR/history.jsonl")
    rep.add_argument("--output", metavar="DIR", help="where the HTML goes (default RESULTS/allure-report)")

    gate_parser = sub.add_parser("gate", help="compare a conformance report with a baseline, feature by feature: "
                                 "exit 1 on a regression or a failed core feature, 2 on bad input")
    gate_parser.add_argument("--baseline", required=True, metavar="OLD.yaml",
                             help="the earlier report (e.g. the default branch's last run)")
    gate_parser.add_argument("report", nargs="?", default=str(DEFAULT_REPORT), metavar="NEW.yaml",
                             help=f"the new report (default {DEFAULT_REPORT})")
    gate_parser.add_argument("--format", choices=FORMATS, default="text",
                             help="text for a terminal, markdown for a pull request or $GITHUB_STEP_SUMMARY")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    commands = {"list": lambda: list_mutants() if args.mutants else list_features(),
                "run": lambda: run(args), "up": lambda: up(args), "down": lambda: down(args),
                "doctor": lambda: doctor(args), "gate": lambda: gate(args),
                "report": lambda: report(args)}
    try:
        return commands[args.command]()
    except ConformanceError as exc:
        # markup=False: an error quoting "[/...]" (a path, a list) would otherwise raise or lose text.
        console.print(f"meshconf: error: {exc}", soft_wrap=True, markup=False)
        return 2


def settings_from(args: argparse.Namespace, target: str) -> RunSettings:
    return RunSettings(target=target, context=args.context, timeouts=Timeouts.from_env(),
                       mutants=tuple(getattr(args, "local_mutant", ())), **options.settings_values(args))


def list_features() -> int:
    table = Table(title="meshconf features")
    for column in ("profile", "feature", "level", "description"):
        table.add_column(column)
    for f in features.CATALOGUE:
        table.add_row(f.profile, f.name, f.level.value, f.description)
    out.print(table)
    return 0


def list_mutants() -> int:
    from conformance.targets.local.translator import KNOWN_MUTANTS

    table = Table(title="local mesh mutants (--local-mutant NAME)")
    table.add_column("mutant")
    table.add_column("defect")
    for name, description in sorted(KNOWN_MUTANTS.items()):
        table.add_row(name, description)
    out.print(table)
    return 0


def run(args: argparse.Namespace) -> int:
    features.select(args.profile, args.feature)  # unknown names fail here, before anything starts
    settings = select.resolve(settings_from(args, args.target))
    options.check_applicable(args, settings.target, settings.target_reason)
    options.check_upgrade_from(settings)
    results = Path(args.results)
    alluredir = Path(args.alluredir) if args.alluredir else results / "allure"
    report = Path(args.report) if args.report else results / "report.yaml"
    junit = results / "junit.xml"
    if not args.plan:
        for path in (results, alluredir, report.parent):
            require_writable_dir(path)
    console.print(f"meshconf: target [bold]{settings.target}[/] ({settings.target_reason})")
    if settings.target == "kind":
        from conformance.targets.provision import check_versions

        warning = check_versions(settings)
        if warning:
            console.print(f"meshconf: warning: {warning}", soft_wrap=True)
    if args.plan:
        return plan(settings)
    if settings.target == "local":
        console.print("meshconf: the local reference mesh is real Envoy on loopback, not Kubernetes and not Istio; "
                      "features it cannot run are reported NOT_SUPPORTED")
    select.make(settings)  # a target that cannot run here fails now, with its reason
    preflight(settings)
    pytest_args = [
        str(SUITES),
        "--rootdir", str(SUITES.parent),
        # No ini file: the run is configured here, never by a pytest.ini or pyproject.toml
        # that happens to lie above the suites or the working directory.
        "-c", os.devnull,
        "-p", "no:cacheprovider",
        # This process imported conformance before pytest could mark the installed plugin's
        # package for assertion rewriting; the suites' own modules are rewritten as usual.
        "-W", "ignore:Module already imported so cannot be rewritten; conformance:pytest.PytestAssertRewriteWarning",
        "--target", settings.target,
        "--target-reason", settings.target_reason,
        # Cleaned here, once: pytest's --clean-alluredir would run in every xdist worker.
        "--alluredir", str(alluredir),
        "--junitxml", str(junit),
        "--report", str(report),
        "-p", "no:randomly",
    ]
    for flag, values in (("--profile", args.profile), ("--feature", args.feature),
                         ("--local-mutant", args.local_mutant)):
        for value in values:
            pytest_args += [flag, value]
    pytest_args += options.as_pytest_args(args)
    if args.context:
        pytest_args += ["--context", args.context]
    if args.consistency_timeout:
        pytest_args += ["--consistency-timeout", str(args.consistency_timeout)]
    if args.workers:
        # worksteal: a worker that runs out takes tests from a busy one, so a long split test
        # does not leave the other worker idle.
        pytest_args += ["-n", str(args.workers), "--dist", "worksteal"]
    shutil.rmtree(alluredir, ignore_errors=True)
    started = time.time()
    code = int(pytest.main(pytest_args + list(args.pytest_args)))
    written = [f"{name} {path}" for name, path in (("report", report), ("JUnit", junit))
               if path.is_file() and path.stat().st_mtime >= started - 1]
    if alluredir.is_dir() and any(alluredir.iterdir()):
        written.append(f"Allure results {alluredir}")
    if written:
        console.print(f"meshconf: wrote {', '.join(written)}", soft_wrap=True)
    else:
        console.print("meshconf: no report was written", soft_wrap=True)
    return code


def require_writable_dir(path: Path) -> None:
    """Refuse a results location that cannot be written, before anything starts; create nothing."""
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConformanceError(f"cannot write results under {path}: {existing} is not a directory")
    if not _writable(existing):
        raise ConformanceError(f"cannot write results under {path}: {existing} is not writable")


def _writable(directory: Path) -> bool:
    """Only a real write tells: os.access says yes to root even where writes fail (/proc)."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def preflight(settings: RunSettings) -> None:
    """Check what a run needs before anything starts: bad input creates nothing."""
    if settings.target == "kind":
        from conformance.targets import kind
        from conformance.targets.preflight import require

        require(kind.preflight(timeouts=settings.timeouts))
    if settings.target == "kubeconfig":
        from conformance.targets import existing

        existing.preflight(settings)
    if settings.target != "local":
        return
    from conformance import manifests
    from conformance.targets.local.validate import CLUSTER_ONLY, INVALID_BY_DESIGN, check_documents

    for path in manifests.all_files():
        name = path.relative_to(manifests.manifests_dir()).as_posix()
        # The local mesh's workload limits (Deployments only) do not bind pods only dry-run.
        if not name.startswith((*CLUSTER_ONLY, *INVALID_BY_DESIGN, *manifests.DRY_RUN_ONLY)):
            check_documents(manifests.load_file(path), name)


def plan(settings: RunSettings) -> int:
    """`run --plan`: the cluster config, the exact commands and the manifests; nothing runs."""
    from conformance import manifests
    from conformance.targets.provision import KindProvisioner, manifests_to_apply

    if settings.target == "kind":
        for line in KindProvisioner(settings).plan():
            out.print(line, soft_wrap=True)
    else:
        out.print(f"# target {settings.target}: no provisioning commands")
    out.print("# manifests the suites apply (server-side apply on clusters):")
    listing = manifests_to_apply()
    for name, objects in listing:
        if name not in manifests.DRY_RUN_ONLY:
            out.print(f"{name}: {', '.join(objects)}", soft_wrap=True)
    out.print("# manifests the suites only create as a server-side dry run (dryRun=All: webhooks called, nothing stored):")
    for name, objects in listing:
        if name in manifests.DRY_RUN_ONLY:
            out.print(f"{name}: {', '.join(objects)}", soft_wrap=True)
    return 0


def up(args: argparse.Namespace) -> int:
    from conformance.targets.provision import KindProvisioner

    settings = settings_from(args, "kind")
    provisioner = KindProvisioner(settings)
    try:
        access = provisioner.up()
    except BaseException:
        provisioner.down()
        raise
    provisioner.mark_created()
    # Plain print: scripts read this line, and rich would wrap a long path at 80 columns
    # and take "[...]" in it for markup.
    print(access.kubeconfig)
    return 0


def down(args: argparse.Namespace) -> int:
    from conformance.targets.provision import KindProvisioner

    KindProvisioner(settings_from(args, "kind")).down_from_up()
    return 0


def doctor(args: argparse.Namespace) -> int:
    """Each chosen target's checks under its title; exit 1 if any of them failed."""
    failed = 0
    for target in [args.target] if args.target else DOCTOR_TARGETS:
        out.print(f"[bold]{target} target[/]")
        checks = doctor_checks(target)
        for check in checks:
            mark = "[green]ok  [/]" if check.ok else "[bold red]FAIL[/]"
            # Escaped: a detail quotes tool output, whose "[...]" is text, not markup.
            fix = "" if check.ok else f"\n     fix: {escape(check.fix)}"
            out.print(f"{mark} {check.name}: {escape(check.detail)}{fix}", soft_wrap=True)
        target_failed = sum(not c.ok for c in checks)
        out.print(f"{len(checks) - target_failed} of {len(checks)} prerequisites met")
        failed += target_failed
    return 1 if failed else 0


def doctor_checks(target: str) -> list[Check]:
    if target == "kind":
        from conformance.targets import kind

        return kind.preflight()
    from conformance.targets.local import preflight as local

    return local.preflight()


def report(args: argparse.Namespace) -> int:
    from conformance.report import render

    return render.report(Path(args.results), Path(args.history) if args.history else None,
                         Path(args.output) if args.output else None)


def gate(args: argparse.Namespace) -> int:
    return compare_reports(Path(args.baseline), Path(args.report), args.format)


if __name__ == "__main__":
    sys.exit(main())
