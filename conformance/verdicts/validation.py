"""Istio's validation webhook decided per invalid resource: refused at apply by the webhook (not
by the CRD's schema or anything else), with Istio's words for the problem, and not stored."""

from collections.abc import Sequence
from dataclasses import dataclass

from conformance.names import ISTIO_VALIDATION_DENIED
from conformance.waiting import Verdict

# How it words a refusal by the CRD's OpenAPI schema (field errors: "spec.x: Required value").
SCHEMA_MARKS = ("Required value", "Invalid value", "Unsupported value", "must be of type")


@dataclass(frozen=True)
class Attempt:
    case: str  # the manifest
    expected: str  # Istio's words for the problem; "" for a valid resource, which must be accepted
    error: str | None  # what apply raised, None when it was accepted
    stored: bool  # whether the object exists afterwards


def refused_by(error: str | None) -> str:
    if error is None:
        return "accepted"
    if ISTIO_VALIDATION_DENIED in error:
        return "webhook"
    if any(mark in error for mark in SCHEMA_MARKS):
        return "schema"
    return "other"


def _row(attempt: Attempt) -> tuple[str, str, str, bool]:
    by = refused_by(attempt.error)
    if not attempt.expected:
        ok = by == "accepted" and attempt.stored
        return attempt.case, "accepted", "accepted" if by == "accepted" else f"refused ({by}): {attempt.error}", ok
    ok = by == "webhook" and attempt.expected in (attempt.error or "") and not attempt.stored
    seen = "accepted" if by == "accepted" else f"refused by {by}: {(attempt.error or '').split(': ', 1)[-1][:160]}"
    if attempt.stored:
        seen += " (stored)"
    return attempt.case, f"refused by webhook: {attempt.expected}", seen, ok


def validation_table(attempts: Sequence[Attempt]) -> Verdict:
    rows = [_row(a) for a in attempts]
    wrong = sum(not ok for *_, ok in rows)
    lines = [f"{case}: expected {expected}; observed {seen}{'' if ok else '  WRONG'}"
             for case, expected, seen, ok in rows]
    table = "\n".join(lines)
    if wrong or not attempts:
        return Verdict(False, f"{wrong} of {len(attempts)} validation cases differ from Istio's webhook:\n{table}")
    return Verdict(True, f"all {len(attempts)} validation cases as Istio's webhook decides:\n{table}")
