"""Child processes that cannot outlive the harness.

Three layers, because each covers a way the harness can end:
- normal end and Ctrl-C: Supervisor.stop_all() from the target's teardown;
- an exception that skips teardown: atexit;
- SIGKILL of the harness: the kernel's parent-death signal (prctl PR_SET_PDEATHSIG).
"""

import atexit
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


# Held back while forking: Python runs fork hooks in the parent where a KeyboardInterrupt
# is swallowed as "unraisable", and a Ctrl-C would be lost. Delivered right after.
_HELD = {signal.SIGINT, signal.SIGTERM}


def _child_setup(parent_pid: int, mask: set[signal.Signals]) -> None:
    """Runs in the child between fork and exec."""
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The parent may have died before prctl took effect: then nobody would signal us.
    if os.getppid() != parent_pid:
        os._exit(1)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Supervisor:
    """Starts children (from the calling thread, which must live as long as they do)."""

    def __init__(self) -> None:
        self._children: list[Child] = []
        atexit.register(self.stop_all)

    def start(
        self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> Child:
        parent = os.getpid()
        log.parent.mkdir(parents=True, exist_ok=True)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
        try:
            with log.open("ab") as out:
                process = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(os.environ if env is None else env),
                    preexec_fn=lambda: _child_setup(parent, mask),
                    # Own process group: a terminal Ctrl-C reaches the harness only,
                    # which then tears down in order and still writes its report.
                    process_group=0,
                )
            # Recorded while the signals are still held: an interrupt cannot land between the
            # start and the record, so teardown always knows every child.
            child = Child(name, process, log)
            self._children.append(child)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return child

    def stop(self, child: Child, grace: float = 2.0) -> None:
        _terminate([child], grace)
        if child in self._children:
            self._children.remove(child)

    def stop_all(self, grace: float = 2.0) -> None:
        children, self._children = self._children, []
        _terminate(children, grace)

    def children(self) -> list[Child]:
        return list(self._children)


def _terminate(children: Sequence[Child], grace: float) -> None:
    for child in children:
        if child.alive():
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
