"""Continuous traffic while something changes: batches from one client, back to back on a thread,
every reply kept, until the block ends."""

import threading
from collections.abc import Callable
from types import TracebackType

from conformance.errors import ConformanceError
from conformance.targets.base import Batch
from conformance.waiting import wait_for

# How long wait_for_batches waits for the load to make progress: a batch is a few requests.
PROGRESS_TIMEOUT = 60.0


class ContinuousLoad:
    def __init__(self, send: Callable[[], Batch]) -> None:
        self._send = send
        self.batches: list[Batch] = []
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
            try:
                batch = self._send()
            except Exception as error:  # a client that cannot send at all ends the load, reported
                self.error = f"{type(error).__name__}: {error}"
                return
            self.batches.append(batch)

    def wait_for_batches(self, count: int) -> None:
        """Until `count` more batches have come back (the load saw the state it is in now)."""
        wanted = len(self.batches) + count

        def pending() -> str | None:
            if self.error is not None:
                raise ConformanceError(f"the continuous load stopped: {self.error}")
            return None if len(self.batches) >= wanted else f"{len(self.batches)} of {wanted} batches"

        wait_for(pending, PROGRESS_TIMEOUT, 0.05, "the continuous load")
