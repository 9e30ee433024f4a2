"""The one consistency model: wait_for() and converged(), tenacity inside."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from conformance.errors import NotConverged
from conformance.settings import Timeouts

T = TypeVar("T")


@dataclass(frozen=True)
class Verdict:
    """Whether a check holds, and what was seen: the failure message, or the evidence."""

    ok: bool
    message: str


def wait_for(pending: Callable[[], str | None], timeout: float, interval: float, what: str) -> None:
    """Poll until pending() returns None; its string says what is still awaited.

    An exception from pending() ends the wait at once (a failure that cannot heal).
    """
    last: str | None = None

    def check() -> None:
        nonlocal last
        last = pending()
        if last is not None:
            raise _Pending(last)

    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout),
            wait=tenacity.wait_fixed(interval),
            retry=tenacity.retry_if_exception_type(_Pending),
            reraise=True,
        ):
            with attempt:
                check()
    except _Pending:
        raise NotConverged(f"{what}: not within {timeout:g}s: {last}") from None


def converged(probe: Callable[[], Verdict], timeouts: Timeouts, what: str) -> int:
    """Require `required_successes` consecutive successful probes within the consistency timeout.

    Returns the number of probes it took. Only a probe that the new configuration
    alone can answer makes this meaningful.
    """
    streak = 0
    probes = 0
    last = Verdict(False, "no probe ran")

    def once() -> None:
        nonlocal streak, probes, last
        probes += 1
        last = probe()
        streak = streak + 1 if last.ok else 0
        if streak < timeouts.required_successes:
            raise _Pending(last.message)

    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeouts.consistency),
            wait=lambda rs: 0 if streak else timeouts.poll,
            retry=tenacity.retry_if_exception_type(_Pending),
            reraise=True,
        ):
            with attempt:
                once()
    except _Pending:
        raise NotConverged(
            f"{what}: not converged within {timeouts.consistency:g}s "
            f"({probes} probes, needed {timeouts.required_successes} in a row); "
            f"last probe: {last.message}"
        ) from None
    return probes


class _Pending(Exception):
    pass
