"""Decisions on traffic sent while the configuration changed (ConfigChangeUnderLoad, BlueGreen).

Each reply is placed on the harness's clock by its start time on the client's clock and the
bounds of the clocks' offset (conformance/load.py): a reply is "before" a moment only if it
started before it for every offset the bounds allow, "after" likewise; the rest is undecided
and held to the weaker rule (answered, by either version).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from conformance.load import ClockOffset, Window, clock_offset
from conformance.probes.classify import version_of
from conformance.targets.base import Batch, Reply
from conformance.waiting import Verdict

# How many failed requests a message names.
NAMED = 3


@dataclass(frozen=True)
class Placed:
    """A reply and the earliest and latest harness-clock moment it can have started at."""

    index: int  # in the order the load sent it, from 1
    reply: Reply
    earliest: float
    latest: float


@dataclass(frozen=True)
class Timeline:
    replies: tuple[Placed, ...]
    offset: ClockOffset
    unplaced: int  # replies without a start time from the client

    def relative(self, placed: Placed, moment: float) -> str:
        """When `placed` started, in seconds after `moment` (a range when the clocks leave one)."""
        low, high = placed.earliest - moment, placed.latest - moment
        return f"{low:+.3f}s" if high - low < 0.0005 else f"{low:+.3f}..{high:+.3f}s"


def timeline(batches: Sequence[Batch], windows: Sequence[Window]) -> Timeline | None:
    """The load's replies on the harness's clock; None when the client gave no start times."""
    offset = clock_offset(list(batches), list(windows))
    if offset is None:
        return None
    placed, unplaced, index = [], 0, 0
    for batch in batches:
        for reply in batch:
            index += 1
            if reply.started is None:
                unplaced += 1
                continue
            placed.append(Placed(index, reply, reply.started - offset.high, reply.started - offset.low))
    return Timeline(tuple(placed), offset, unplaced)


def failed(reply: Reply) -> bool:
    """A request the switch cost: a 5xx (Envoy's 503 for a missing cluster or a reset upstream) or
    no HTTP response at all."""
    return reply.status == 0 or reply.status >= 500


def _named(line: Timeline, bad: Sequence[Placed], change: float) -> str:
    return "; ".join(
        f"#{p.index} at {line.relative(p, change)}: "
        + (f"status {p.reply.status} {p.reply.body[:80]!r}" if p.reply.status else f"{p.reply.error}")
        for p in bad[:NAMED])


def _unusable(line: Timeline | None) -> str | None:
    if line is None:
        return "the client reported no start times: the requests cannot be placed against the change"
    if line.unplaced:
        return f"{line.unplaced} replies have no start time from the client: they cannot be placed against the change"
    if not line.replies:
        return "no request was sent during the change"
    return None


def no_failures_during(line: Timeline | None, change: float, what: str) -> Verdict:
    """ConfigChangeUnderLoad: not one request of the load failed (5xx or no response) around `change`."""
    why = _unusable(line)
    if why or line is None:
        return Verdict(False, f"{what}: {why}")
    bad = [p for p in line.replies if failed(p.reply)]
    before = sum(p.latest < change for p in line.replies)
    if bad:
        return Verdict(False, f"{what}: {len(bad)} of {len(line.replies)} requests failed, relative to the change: "
                              f"{_named(line, bad, change)}")
    return Verdict(True, f"{what}: none of {len(line.replies)} requests failed ({before} started before the change, "
                         f"{len(line.replies) - before} at or after it; {line.offset})")


@dataclass(frozen=True)
class Switch:
    """A blue-green switch as the load saw it."""

    verdict: Verdict
    switch_time: float | None  # first green reply's start minus the change, latest estimate; None if none


def blue_green(line: Timeline | None, change: float, applied: float, blue: str, green: str,
               budget: float, what: str) -> Switch:
    """BlueGreen: every request answered; each started before `change` by `blue`; each started after
    convergence (the later of `applied`, when the change was accepted, and the first green reply) by
    `green`; the first green reply within `budget` seconds of the change."""
    why = _unusable(line)
    if why or line is None:
        return Switch(Verdict(False, f"{what}: {why}"), None)
    bad = [p for p in line.replies if p.reply.status != 200]
    if bad:
        return Switch(Verdict(False, f"{what}: {len(bad)} of {len(line.replies)} requests failed during the switch, "
                                     f"relative to the change: {_named(line, bad, change)}"), None)
    version = {p.index: version_of(p.reply.served_by) for p in line.replies}
    early = [p for p in line.replies if p.latest < change and version[p.index] != blue]
    if early:
        return Switch(Verdict(False, f"{what}: {len(early)} requests started before the change were not answered by "
                                     f"{blue}: {_versions(line, early, version, change)}"), None)
    greens = [p for p in line.replies if version[p.index] == green]
    if not greens:
        return Switch(Verdict(False, f"{what}: no request was answered by {green} after the change"), None)
    first = min(greens, key=lambda p: p.earliest)
    converged = max(applied, first.latest)
    late = [p for p in line.replies if p.earliest > converged and version[p.index] != green]
    after = sum(p.earliest > converged for p in line.replies)
    if late:
        return Switch(Verdict(False, f"{what}: {len(late)} of {after} requests started after convergence were not "
                                     f"answered by {green}: {_versions(line, late, version, change)}"), None)
    switch = first.latest - change
    if switch > budget:
        return Switch(Verdict(False, f"{what}: the first {green} reply started {switch:.3f}s after the change, "
                                     f"over the {budget:g}s budget"), switch)
    before = sum(p.latest < change for p in line.replies)
    return Switch(Verdict(True, f"{what}: all {len(line.replies)} requests answered; {before} before the change all "
                                f"{blue}, {after} after convergence all {green}; switch time {switch * 1000:.0f} ms "
                                f"(first {green} reply after the change; {line.offset})"), switch)


def _versions(line: Timeline, wrong: Sequence[Placed], version: dict[int, str | None], change: float) -> str:
    return "; ".join(f"#{p.index} at {line.relative(p, change)} by {version[p.index] or p.reply.served_by}"
                     for p in wrong[:NAMED])
