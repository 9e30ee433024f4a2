"""The consistency model: consecutive successes, and a message that says what was last seen."""

import pytest

from conformance.errors import ConformanceError, NotConverged
from conformance.settings import Timeouts
from conformance.waiting import Verdict, converged, wait_for

FAST = Timeouts(consistency=1.0, required_successes=3, poll=0.01)


def test_converged_needs_consecutive_successes() -> None:
    answers = iter([True, True, False, True, True, True])
    assert converged(lambda: Verdict(next(answers), "seen"), FAST, "x") == 6


def test_not_converged_names_the_last_observation() -> None:
    with pytest.raises(NotConverged, match="last probe: served by v2"):
        converged(lambda: Verdict(False, "served by v2"), FAST, "reviews v1")


def test_wait_for_stops_early_on_a_hard_failure() -> None:
    def pending() -> str | None:
        raise ConformanceError("process exited")

    with pytest.raises(ConformanceError, match="process exited"):
        wait_for(pending, 5, 0.01, "pods")


def test_wait_for_timeout_message() -> None:
    with pytest.raises(NotConverged, match="pods: not within 0.2s: not ready: a"):
        wait_for(lambda: "not ready: a", 0.2, 0.01, "pods")


def test_timeouts_from_env() -> None:
    t = Timeouts.from_env({"MESHCONF_TIMEOUT_CONSISTENCY": "5", "MESHCONF_TIMEOUT_REQUIRED_SUCCESSES": "4"})
    assert (t.consistency, t.required_successes) == (5.0, 4)
    with pytest.raises(ConformanceError, match="not a number"):
        Timeouts.from_env({"MESHCONF_TIMEOUT_POLL": "fast"})
