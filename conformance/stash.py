"""What the plugin keeps on the pytest config, and the run settings resolved from its options.

The plugin's hooks and the suites' fixtures both read these; neither imports the other.
"""

from dataclasses import replace
from pathlib import Path

import pytest

from conformance import options
from conformance.report.results import ResultBook
from conformance.settings import RunSettings, Timeouts
from conformance.targets import select

BOOK = pytest.StashKey[ResultBook]()
SETTINGS = pytest.StashKey[RunSettings]()
CALL_REPORT = pytest.StashKey[pytest.TestReport]()

# What the xdist controller hands each worker (config.workerinput) and gets back (workeroutput).
WORKER_SETTINGS = "meshconf_settings"
WORKER_ACCESS = "meshconf_access"
WORKER_BRING_UP_ERROR = "meshconf_bring_up_error"
WORKER_RESULTS = "meshconf_results"


def worker_id(config: pytest.Config) -> str | None:
    """The xdist worker's id (gw0, gw1, ...), None in a serial run or on the controller."""
    workerinput = getattr(config, "workerinput", None)
    return None if workerinput is None else str(workerinput["workerid"])


def is_controller(config: pytest.Config) -> bool:
    """True on the xdist controller (which runs no test), False on workers and in serial runs."""
    return config.pluginmanager.has_plugin("dsession")


def settings(config: pytest.Config) -> RunSettings:
    """RunSettings from the options, resolved once (auto picks a target here).

    Workers take the controller's settings, so that every process of a run shares one run id
    and one target.
    """
    if SETTINGS not in config.stash:
        workerinput = getattr(config, "workerinput", None)
        if workerinput is not None and WORKER_SETTINGS in workerinput:
            resolved = replace(RunSettings.from_json(workerinput[WORKER_SETTINGS]),
                               worker=str(workerinput["workerid"]))
        else:
            resolved = _from_options(config)
        config.stash[SETTINGS] = resolved
        book = config.stash[BOOK]
        book.run_id, book.target_reason = resolved.run_id, resolved.target_reason
        book.target = resolved.target
    return config.stash[SETTINGS]


def _from_options(config: pytest.Config) -> RunSettings:
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
    options.check_applicable(opt, resolved.target, resolved.target_reason)
    options.check_upgrade_from(resolved)
    return resolved
