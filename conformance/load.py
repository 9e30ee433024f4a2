"""Continuous traffic while something changes: batches from one client, back to back on a thread,
every reply kept, until the block ends.

Each batch is also timed on the harness's clock (sent, returned), so that its replies' start times,
taken on the client's clock, can be placed against the moments the harness changed something
(`mark`): see `clock_offset` and conformance/verdicts/zero_downtime.py.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from conformance.errors import ConformanceError
from conformance.targets.base import Batch
from conformance.waiting import wait_for

# How long wait_for_batches waits for the load to make progress: a batch is a few requests.
PROGRESS_TIMEOUT = 60.0


@dataclass(frozen=True)
class Window:
    """When the harness sent a batch and when it came back, on the harness's clock (epoch seconds)."""

    sent: float
    returned: float


@dataclass(frozen=True)
class ClockOffset:
    """The client's clock minus the harness's, known to lie in [low, high]."""

    low: float
    high: float

    def __str__(self) -> str:
        return f"client clock - harness clock in [{self.low * 1000:+.1f}, {self.high * 1000:+.1f}] ms"


def clock_offset(batches: list[Batch], windows: list[Window]) -> ClockOffset | None:
    """Bounds of the client clock's offset from the batches: a batch's first request cannot start on
    the client before the harness sent it, nor its last end after the harness had it back. Each
    batch bounds the offset; together they narrow it to the batches' overhead. None when no batch
    has start times; ConformanceError when the bounds contradict each other (a clock stepped)."""
    lows, highs = [], []
    for batch, window in zip(batches, windows):
        starts = [r.started for r in batch if r.started is not None]
        if not starts:
            continue
        ends = [r.started + r.elapsed for r in batch if r.started is not None]
        highs.append(min(starts) - window.sent)
        lows.append(max(ends) - window.returned)
    if not lows:
        return None
    offset = ClockOffset(max(lows), min(highs))
    if offset.low > offset.high:
        raise ConformanceError(f"the client's start times contradict the harness's clock ({offset}): did a "
                               "clock step during the load?")
    return offset


class ContinuousLoad:
    def __init__(self, send: Callable[[], Batch]) -> None:
        self._send = send
        self.batches: list[Batch] = []
        self.windows: list[Window] = []  # one per batch, same order
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshconf-load", daemon=True)

    def __enter__(self) -> "ContinuousLoad":
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None and error is None:
            raise ConformanceError(f"the continuous load stopped: {self.error}")

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.time()
            try:
                batch = self._send()
            except Exception as error:  # a client that cannot send at all ends the load, reported
                self.error = f"{type(error).__name__}: {error}"
                return
            # The window before the batch: a reader that sees the batch sees its window.
            self.windows.append(Window(sent, time.time()))
            self.batches.append(batch)

    def mark(self, name: str) -> float:
        """The moment `name` happens, now on the harness's clock (`name` says what, for the reader)."""
        return time.time()

    def wait_for_batches(self, count: int) -> None:
        """Until `count` more batches have come back (the load saw the state it is in now)."""
        wanted = len(self.batches) + count

        def pending() -> str | None:
            if self.error is not None:
                raise ConformanceError(f"the continuous load stopped: {self.error}")
            return None if len(self.batches) >= wanted else f"{len(self.batches)} of {wanted} batches"

        wait_for(pending, PROGRESS_TIMEOUT, 0.05, "the continuous load")
