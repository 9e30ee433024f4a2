"""Run directories (.meshconf/run-*): each names its owning process, and a later run removes
the ones whose owner is gone (a run killed with SIGKILL never cleans up after itself)."""

import json
import os
import shutil
from pathlib import Path

OWNER_FILE = "owner.json"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: a pid can be reused, this pair cannot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def claim(run_dir: Path) -> None:
    """Create run_dir and record this process as its owner."""
    run_dir.mkdir(parents=True, exist_ok=True)
    owner = {"pid": os.getpid(), "start": _start_time(os.getpid())}
    (run_dir / OWNER_FILE).write_text(json.dumps(owner))


def owner_alive(run_dir: Path) -> bool:
    """True unless run_dir's owner file names a process that is gone. No owner file: unknown,
    so alive (never delete what we cannot prove abandoned)."""
    try:
        owner = json.loads((run_dir / OWNER_FILE).read_text())
        pid, start = int(owner["pid"]), owner["start"]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    if start is None:  # the owner's start time could not be read: nothing to compare
        return True
    return _start_time(pid) == start


def sweep(work_dir: Path) -> list[Path]:
    """Remove run-* directories under work_dir whose owner is gone; return them."""
    removed = []
    for run_dir in sorted(work_dir.glob("run-*")):
        if run_dir.is_dir() and not owner_alive(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            removed.append(run_dir)
    return removed
