"""meshconf: run | list."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from conformance import features
from conformance.errors import ConformanceError
from conformance.settings import TARGETS, RunSettings
from conformance.targets import select

REPO = Path(__file__).resolve().parent.parent
SUITES = REPO / "suites"

console = Console(stderr=True, highlight=False)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshconf", description="End-to-end service-mesh conformance.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="bring up a target, run the suites, write the results")
    run.add_argument("--target", default="auto", help=f"one of {', '.join(TARGETS)} (default auto)")
    run.add_argument("--profile", action="append", default=[], help="run this profile (repeatable)")
    run.add_argument("--feature", action="append", default=[], help="run this feature (repeatable)")
    run.add_argument("--context", help="kubeconfig context (selects the kubeconfig target under auto)")
    run.add_argument("--local-mutant", action="append", default=[],
                     help="local target: run with a deliberate defect (see `meshconf list --mutants`)")
    run.add_argument("--results", default="results", help="results directory (default ./results)")
    run.add_argument("--alluredir", help="Allure results directory (default RESULTS/allure)")
    run.add_argument("--report", help="conformance report file (default RESULTS/report.yaml)")
    run.add_argument("--consistency-timeout", type=float, help="seconds for config to converge (default 30)")
    run.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")

    lst = sub.add_parser("list", help="print the feature catalogue")
    lst.add_argument("--mutants", action="store_true", help="list the local mesh's mutants instead")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "list":
            return list_mutants() if args.mutants else list_features()
        return run(args)
    except ConformanceError as exc:
        console.print(f"meshconf: error: {exc}", soft_wrap=True)
        return 2


def list_features() -> int:
    table = Table(title="meshconf features")
    for column in ("profile", "feature", "level", "description"):
        table.add_column(column)
    for f in features.CATALOGUE:
        table.add_row(f.profile, f.name, f.level.value, f.description)
    Console(highlight=False).print(table)
    return 0


def list_mutants() -> int:
    from conformance.targets.local.translator import KNOWN_MUTANTS

    table = Table(title="local mesh mutants (--local-mutant NAME)")
    table.add_column("mutant")
    table.add_column("defect")
    for name, description in sorted(KNOWN_MUTANTS.items()):
        table.add_row(name, description)
    Console(highlight=False).print(table)
    return 0


def run(args: argparse.Namespace) -> int:
    features.select(args.profile, args.feature)  # unknown names fail here, before anything starts
    settings = select.resolve(RunSettings(target=args.target, context=args.context, mutants=tuple(args.local_mutant)))
    console.print(f"meshconf: target [bold]{settings.target}[/] ({settings.target_reason})")
    if settings.target == "local":
        console.print("meshconf: the local reference mesh is real Envoy on loopback, not Kubernetes and not Istio; "
                      "features it cannot run are reported NOT_SUPPORTED")
    select.make(settings)  # a target that cannot run here fails now, with its reason
    preflight(settings)
    results = Path(args.results)
    alluredir = Path(args.alluredir) if args.alluredir else results / "allure"
    report = Path(args.report) if args.report else results / "report.yaml"
    pytest_args = [
        str(SUITES),
        "--rootdir", str(REPO),
        "-c", str(REPO / "pyproject.toml"),
        "--target", settings.target,
        "--target-reason", settings.target_reason,
        "--alluredir", str(alluredir),
        "--clean-alluredir",
        "--junitxml", str(results / "junit.xml"),
        "--report", str(report),
        "-p", "no:randomly",
    ]
    for flag, values in (("--profile", args.profile), ("--feature", args.feature),
                         ("--local-mutant", args.local_mutant)):
        for value in values:
            pytest_args += [flag, value]
    if args.context:
        pytest_args += ["--context", args.context]
    if args.consistency_timeout:
        pytest_args += ["--consistency-timeout", str(args.consistency_timeout)]
    code = int(pytest.main(pytest_args + list(args.pytest_args)))
    console.print(f"meshconf: report {report}, Allure results {alluredir}, JUnit {results / 'junit.xml'}")
    return code


def preflight(settings: RunSettings) -> None:
    """Check every manifest a run may apply before anything starts: bad input creates nothing."""
    from conformance import manifests

    if settings.target != "local":
        return
    from conformance.targets.local.validate import CLUSTER_ONLY, check_documents

    for path in manifests.all_files():
        name = path.relative_to(manifests.manifests_dir()).as_posix()
        if not name.startswith(CLUSTER_ONLY):
            check_documents(manifests.load_file(path), name)


if __name__ == "__main__":
    sys.exit(main())
