"""Checks of every reply in a batch (status, version, header), each a Verdict that explains itself."""

from collections import Counter

from conformance.probes.classify import version_of
from conformance.targets.base import Batch
from conformance.waiting import Verdict

# How much earlier than configured an Envoy timer (fault delay, route timeout) may fire as the
# client measures it: libevent schedules a timer from the time it cached when the event-loop
# iteration began, so the iteration's work before the request arrived is counted in. Measured
# 4-6 ms on a loaded machine, once 6.3 ms; 20 ms still tells a 100 ms delay or a 200 ms timeout
# from none.
ENVOY_TIMER_EARLY = 0.02


def describe(batch: Batch) -> str:
    """N, who served, which statuses and errors: the observation in one paragraph."""
    served = ", ".join(f"{k}: {v}" for k, v in sorted(batch.served_by().items()))
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(batch.statuses().items()))
    text = f"{len(batch)} requests from {batch.client} to {batch.url}; served by {{{served}}}; status {{{statuses}}}"
    errors = batch.errors()
    if errors:
        text += "; errors {" + ", ".join(f"{k}: {v}" for k, v in errors.most_common(3)) + "}"
    return text


def only_version(batch: Batch, version: str) -> Verdict:
    """Every reply 200 and served by a pod of `version`; anything else fails, counted."""
    versions = Counter(version_of(r.served_by) or "<unknown>" for r in batch if r.status == 200)
    wrong = len(batch) - versions.get(version, 0)
    if len(batch) > 0 and wrong == 0:
        return Verdict(True, f"all {len(batch)} replies from {version}")
    return Verdict(
        False,
        f"expected all {len(batch)} replies from {version} with status 200, {wrong} were not; "
        f"by version {dict(sorted(versions.items()))}; {describe(batch)}",
    )


def all_status(batch: Batch, status: int, body_contains: str | None = None) -> Verdict:
    bad = [r for r in batch if r.status != status or (body_contains is not None and body_contains not in r.body)]
    if len(batch) > 0 and not bad:
        what = f" containing {body_contains!r}" if body_contains else ""
        return Verdict(True, f"all {len(batch)} replies {status}{what}")
    example = bad[0] if bad else None
    detail = f"; first bad reply: status {example.status}, {example.error or example.body[:120]!r}" if example else ""
    return Verdict(
        False,
        f"expected all {len(batch)} replies with status {status}"
        + (f" and body containing {body_contains!r}" if body_contains else "")
        + f", {len(bad)} were not; {describe(batch)}{detail}",
    )


def all_header(batch: Batch, name: str, value: str) -> Verdict:
    seen = Counter(r.headers.get(name.lower(), "<absent>") for r in batch)
    if len(batch) > 0 and seen == Counter({value: len(batch)}):
        return Verdict(True, f"all {len(batch)} replies carry {name}: {value}")
    return Verdict(False, f"expected header {name}: {value} on all {len(batch)} replies; seen {dict(seen)}")
