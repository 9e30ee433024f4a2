"""Wall time per named phase, in the order the phases began (bring-up, teardown, an upgrade's steps)."""

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Phases:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = time.monotonic() - started

    def __str__(self) -> str:
        return "; ".join(f"{name} in {seconds:.1f} s" for name, seconds in self.seconds.items())
