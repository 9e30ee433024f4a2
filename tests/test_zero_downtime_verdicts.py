"""The zero-downtime verdicts on made-up loads: the clocks' offset from the batches' windows, replies
placed against a change, and each rule failing where its figures say it must."""

import pytest

from conformance.errors import ConformanceError
from conformance.load import ClockOffset, Window, clock_offset
from conformance.targets.base import Batch, Reply
from conformance.verdicts.zero_downtime import blue_green, no_failures_during, timeline

SKEW = 5.0  # the client's clock runs 5 s ahead of the harness's
CHANGE = 1000.0  # the harness's moment of the change


def reply(at: float, version: str = "v1", status: int = 200, started: bool = True) -> Reply:
    """A reply to a request started at harness time `at`, as the skewed client reports it."""
    body = f'{{"podname": "reviews-{version}-abc-123"}}'
    return Reply(status, {}, body, served_by=f"reviews-{version}-abc-123", elapsed=0.01,
                 started=at + SKEW if started else None)


def load(*replies: Reply) -> tuple[list[Batch], list[Window]]:
    """One batch per reply, sent 1 ms before the request started and back 1 ms after it ended."""
    batches = [Batch("http://reviews:9080/", "ns/curl", (r,)) for r in replies]
    windows = [Window(r.started - SKEW - 0.001, r.started - SKEW + r.elapsed + 0.001)
               if r.started is not None else Window(0, 0) for r in replies]
    return batches, windows


def test_the_offset_is_bounded_by_every_batch_window() -> None:
    batches, windows = load(reply(CHANGE - 1), reply(CHANGE + 1))
    offset = clock_offset(batches, windows)
    assert offset is not None and offset.low <= SKEW <= offset.high and offset.high - offset.low < 0.003
    assert clock_offset([Batch("u", "c", (reply(CHANGE, started=False),))], [Window(0, 1)]) is None


def test_start_times_the_windows_contradict_are_refused() -> None:
    batches, windows = load(reply(CHANGE), reply(CHANGE + 1))
    # The second batch as if the client's clock had stepped back 100 s between the two.
    with pytest.raises(ConformanceError, match="contradict the harness's clock"):
        clock_offset(batches, [windows[0], Window(windows[1].sent + 100, windows[1].returned + 100)])


def test_no_failures_passes_then_names_each_failed_request_with_its_moment() -> None:
    good = load(reply(CHANGE - 0.5), reply(CHANGE + 0.2, "v3"))
    verdict = no_failures_during(timeline(*good), CHANGE, "load")
    assert verdict.ok and "none of 2 requests failed (1 started before the change, 1 at or after it" in verdict.message
    bad = load(reply(CHANGE - 0.5), Reply(503, {}, "", elapsed=0.001, started=CHANGE + 0.25 + SKEW),
               Reply(0, {}, "", error="connection refused", elapsed=0.001, started=CHANGE + 0.3 + SKEW))
    verdict = no_failures_during(timeline(*bad), CHANGE, "load")
    assert not verdict.ok
    assert "2 of 3 requests failed, relative to the change: #2 at +0.2" in verdict.message
    assert "status 503 ''" in verdict.message and "#3 at +0.2" in verdict.message
    assert "connection refused" in verdict.message


def test_a_4xx_reply_fails_as_a_5xx_does() -> None:
    # Envoy's 404 NR: the request reached a proxy whose routes did not name the host yet.
    bad = load(reply(CHANGE - 0.5), Reply(404, {}, "", elapsed=0.001, started=CHANGE + 0.1 + SKEW))
    verdict = no_failures_during(timeline(*bad), CHANGE, "load")
    assert not verdict.ok and "1 of 2 requests failed, relative to the change: #2 at +0.09" in verdict.message
    assert "status 404 ''" in verdict.message


def test_without_start_times_the_harness_fails_not_the_mesh() -> None:
    batches, windows = load(reply(CHANGE), reply(CHANGE + 1, started=False))
    with pytest.raises(ConformanceError, match=r"1 of 2 replies of the load have no start time from the client"):
        timeline(batches, windows)
    with pytest.raises(ConformanceError, match="1 of 1 replies"):
        timeline([Batch("u", "c", (reply(CHANGE, started=False),))], [Window(0, 1)])
    with pytest.raises(ConformanceError, match="sent no request"):
        timeline([], [])


def switch(*replies: Reply, applied: float = CHANGE + 0.05, budget: float = 30.0):  # type: ignore[no-untyped-def]
    return blue_green(timeline(*load(*replies)), CHANGE, applied, "v1", "v3", budget, "reviews")


def test_a_clean_switch_passes_with_its_switch_time() -> None:
    result = switch(reply(CHANGE - 1), reply(CHANGE - 0.1), reply(CHANGE + 0.02), reply(CHANGE + 0.04, "v3"),
                    reply(CHANGE + 0.5, "v3"), reply(CHANGE + 1, "v3"))
    assert result.verdict.ok, result.verdict.message
    assert result.switch_time == pytest.approx(0.04, abs=0.003)
    assert "2 before the change all v1, 2 after convergence all v3; switch time 4" in result.verdict.message


@pytest.mark.parametrize(("replies", "expected"), [
    # blue answered before the change by green
    ((reply(CHANGE - 1, "v3"), reply(CHANGE + 1, "v3")),
     "1 requests started before the change were not answered by v1"),
    # blue again after convergence
    ((reply(CHANGE - 1), reply(CHANGE + 0.1, "v3"), reply(CHANGE + 0.5)),
     "1 of 1 requests started after convergence were not answered by v3: #3 at +0.499..+0.501s by v1"),
    # a failed request during the switch
    ((reply(CHANGE - 1), reply(CHANGE + 0.01, status=503), reply(CHANGE + 1, "v3")),
     "1 of 3 requests failed during the switch, relative to the change: #2 at +0.0"),
    ((reply(CHANGE - 1), reply(CHANGE + 0.01, status=404), reply(CHANGE + 1, "v3")),
     "1 of 3 requests failed during the switch, relative to the change: #2 at +0.0"),
    # never green
    ((reply(CHANGE - 1), reply(CHANGE + 1)), "no request was answered by v3 after the change"),
])
def test_each_broken_rule_fails_the_switch(replies: tuple[Reply, ...], expected: str) -> None:
    result = switch(*replies)
    assert not result.verdict.ok and expected in result.verdict.message, result.verdict.message


def test_a_switch_slower_than_the_budget_fails() -> None:
    result = switch(reply(CHANGE - 1), reply(CHANGE + 3, "v3"), budget=2.0)
    message = result.verdict.message
    assert not result.verdict.ok and "started 3.00" in message and "over the 2s budget" in message


def test_offset_text_names_the_bounds_in_milliseconds() -> None:
    assert str(ClockOffset(-0.001, 0.0191)) == "client clock - harness clock in [-1.0, +19.1] ms"
