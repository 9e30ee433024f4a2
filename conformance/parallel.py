"""Runs under pytest-xdist: what the controller shares with its workers, and gets back.

- Every worker takes the controller's settings: one run id, one target, one report.
- On a cluster target the controller brings the cluster and the mesh up once, before the
  workers start, and removes them after the last one ends; workers attach to it, each with
  its own Bookinfo namespace. On the local target each worker runs its own mesh (bring-up
  takes under a second) on its own loopback range.
- Workers send back what is not in their test reports: the target's facts, their phase
  timings and the features they collected.
"""

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from conformance import features
from conformance.errors import ConformanceError
from conformance.report.results import ResultBook
from conformance.stash import BOOK, WORKER_ACCESS, WORKER_BRING_UP_ERROR, WORKER_SETTINGS, settings
from conformance.targets import select
from conformance.targets.base import Target, TargetFacts
from conformance.targets.local import rundirs

CLUSTER_TARGETS = ("kind", "kubeconfig")

SHARED = pytest.StashKey[Target]()
BRING_UP_ERROR = pytest.StashKey[str]()


def runs_suites(config: pytest.Config) -> bool:
    """True when the command line names the suites (<rootdir>/suites or a path below it): only
    then does the controller resolve a target, let alone provision one."""
    suites = config.rootpath / "suites"
    for arg in config.args:
        path = Path(arg.split("::", 1)[0])
        path = path if path.is_absolute() else Path(config.invocation_params.dir) / path
        if path.resolve().is_relative_to(suites.resolve()):
            return True
    return False


def provision(config: pytest.Config) -> None:
    """Controller: bring a cluster target up once. A failure is handed to the workers, whose
    tests then fail with it, as in a serial run; what was brought up is removed at the end
    whatever happens next (config.add_cleanup)."""
    run = settings(config)
    if run.target not in CLUSTER_TARGETS:
        return
    try:
        target = select.make(run)
        target.up()  # removes what it created itself when it fails, Ctrl-C included
    except ConformanceError as exc:
        config.stash[BRING_UP_ERROR] = str(exc)
        return
    config.stash[SHARED] = target
    config.add_cleanup(lambda: release(config))
    config.stash[BOOK].facts = target.facts()


def hand_over(config: pytest.Config, workerinput: dict[str, Any]) -> None:
    """Controller, per worker: the settings, and the shared cluster's access (or its failure)."""
    if not runs_suites(config):
        return
    workerinput[WORKER_SETTINGS] = settings(config).to_json()
    if BRING_UP_ERROR in config.stash:
        workerinput[WORKER_BRING_UP_ERROR] = config.stash[BRING_UP_ERROR]
    target = config.stash.get(SHARED, None)
    if target is not None:
        from conformance.targets.attached import access_to_json

        workerinput[WORKER_ACCESS] = access_to_json(target.access)  # type: ignore[attr-defined]


def sweep_local_workers(config: pytest.Config) -> None:
    """Controller, after xdist has ended its workers: remove the local run directories of
    workers that are gone. xdist ends a worker that is still tearing down after its exit
    timeout (execnet's terminate), which can leave the worker's run directory behind."""
    if not runs_suites(config):
        return
    run = settings(config)
    if run.target == "local":
        rundirs.sweep(run.work_dir.resolve())


def release(config: pytest.Config) -> None:
    """Controller, after the last worker: remove the shared cluster (what the run created)."""
    target = config.stash.get(SHARED, None)
    if target is None:
        return
    del config.stash[SHARED]
    target.down()
    config.stash[BOOK].phases.update(target.phases())


def attached_target(config: pytest.Config) -> Target | None:
    """Worker: the cluster the controller brought up, if it did; its failure raised here."""
    workerinput = getattr(config, "workerinput", None) or {}
    if WORKER_BRING_UP_ERROR in workerinput:
        raise ConformanceError(workerinput[WORKER_BRING_UP_ERROR])
    if WORKER_ACCESS not in workerinput:
        return None
    from conformance.targets.attached import AttachedCluster, access_from_json
    from conformance.targets.cluster import ClusterTarget

    run = settings(config)
    return ClusterTarget(run, AttachedCluster(run, access_from_json(workerinput[WORKER_ACCESS])))


def worker_results(book: ResultBook) -> dict[str, Any]:
    return {
        "facts": asdict(book.facts) if book.facts else None,
        "phases": dict(book.phases),
        "selected": [f.name for f in book.selected],
    }


def merge(book: ResultBook, results: dict[str, Any]) -> None:
    """Controller: one worker's results into the run's. Workers run side by side, so a phase
    takes as long as its slowest worker."""
    if book.facts is None and results.get("facts"):
        book.facts = TargetFacts(**results["facts"])
    for name, seconds in results.get("phases", {}).items():
        if name != "tests":  # the controller adds up the tests' own durations
            book.phases[name] = max(book.phases.get(name, 0.0), seconds)
    names = {f.name for f in book.selected} | set(results.get("selected", []))
    book.selected = features.in_catalogue_order(names)


def select_recorded(book: ResultBook, chosen: list[features.Feature]) -> None:
    """A feature with a recorded test was selected, whatever a worker managed to send back; when
    no worker sent its selection (an interrupted parallel run), the options' choice stands."""
    names = {f.name for f in book.selected} | {r.feature.name for r in book.records}
    if not book.selected and book.interrupted:
        names |= {f.name for f in chosen}
    book.selected = features.in_catalogue_order(names)
