"""SIGTERM and SIGHUP end a run the way Ctrl-C does: teardown, report, then exit 128 + signal.

CI runners cancel a job with SIGTERM (and SIGKILL after a grace period); without this the
harness would die at once, leaving its mesh, its run directory and no report.
"""

import signal
import threading
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_received: list[int] = []
# One entry per install(): a pytest run inside another (the harness's own tests) restores its own.
_previous: list[dict[int, object]] = []


def install() -> None:
    """Route HANDLED signals to KeyboardInterrupt in the main thread (elsewhere: a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _received.clear()
    # A signal the caller ignores (SIGHUP under nohup) stays ignored.
    wanted = [sig for sig in HANDLED if signal.getsignal(sig) is not signal.SIG_IGN]
    _previous.append({sig: signal.signal(sig, _interrupt) for sig in wanted})


def restore() -> None:
    """The handlers from before install(), for a process that goes on after the run."""
    if threading.current_thread() is not threading.main_thread() or not _previous:
        return
    for sig, handler in _previous.pop().items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    first = not _received
    _received.append(signum)
    # Only the first signal interrupts: a second one must not cut the teardown it started short.
    if first:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def received() -> int | None:
    """The first signal that interrupted this run, if any."""
    return _received[0] if _received else None


def exit_code() -> int | None:
    """128 + the signal number (130 for SIGINT, 143 for SIGTERM), as a shell reports it."""
    signum = received()
    return None if signum is None else 128 + signum
