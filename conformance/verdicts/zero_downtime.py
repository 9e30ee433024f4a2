"""Decisions on traffic sent while the configuration changed (ConfigChangeUnderLoad, BlueGreen).

Each reply is placed on the harness's clock by its start time on the client's clock and the
bounds of the clocks' offset (conformance/load.py): a reply is "before" a moment only if it
started before it for every offset the bounds allow, "after" likewise; the rest is undecided
and held to the weaker rule (answered, by either version). A load whose replies cannot all be placed
is the harness's failure (ConformanceError), not a verdict on the mesh.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from conformance.errors import ConformanceError
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

    def relative(self, placed: Placed, moment: float) -> str:
        """When `placed` started, in seconds after `moment` (a range when the clocks leave one)."""
        low, high = placed.earliest - moment, placed.latest - moment
        return f"{low:+.3f}s" if high - low < 0.0005 else f"{low:+.3f}..{high:+.3f}s"


def timeline(batches: Sequence[Batch], windows: Sequence[Window]) -> Timeline:
    """The load's replies on the harness's clock. ConformanceError when there are none, or when the
    client gave a reply no start time (its `date` prints no %N, as busybox's): such a reply cannot be
    placed against a change, and that is the client's limit, not the mesh's."""
    unplaced = sum(r.started is None for batch in batches for r in batch)
    if unplaced:
        total = sum(len(batch) for batch in batches)
        raise ConformanceError(f"{unplaced} of {total} replies of the load have no start time from the client "
                               "(its `date +%s.%N` printed no nanoseconds?): they cannot be placed against the change")
    offset = clock_offset(list(batches), list(windows))
    if offset is None:
        raise ConformanceError("the continuous load sent no request: there is nothing to place against the change")
    placed = [Placed(index, reply, reply.started - offset.high, reply.started - offset.low)
              for index, reply in enumerate((r for batch in batches for r in batch), start=1)
              if reply.started is not None]
    return Timeline(tuple(placed), offset)


def failed(reply: Reply) -> bool:
    """A request the change cost: any reply but a 200 (Envoy's 503 for a missing cluster, its 404 NR
    for a route not there yet) or no HTTP response at all."""
    return reply.status != 200


def _named(line: Timeline, bad: Sequence[Placed], change: float) -> str:
    return "; ".join(
        f"#{p.index} at {line.relative(p, change)}: "
        + (f"status {p.reply.status} {p.reply.body[:80]!r}" if p.reply.status else f"{p.reply.error}")
        for p in bad[:NAMED])


def no_failures_during(line: Timeline, change: float, what: str) -> Verdict:
    """ConfigChangeUnderLoad: every request of the load around `change` answered 200."""
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


def blue_green(line: Timeline, change: float, applied: float, blue: str, green: str,
               budget: float, what: str) -> Switch:
    """BlueGreen: every request answered; each started before `change` by `blue`; each started after
    convergence (the later of `applied`, when the change was accepted, and the first green reply) by
    `green`; the first green reply within `budget` seconds of the change."""
    bad = [p for p in line.replies if failed(p.reply)]
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
