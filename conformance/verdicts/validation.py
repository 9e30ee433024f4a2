"""What refuses each invalid resource at apply, decided per case: Istio's validation webhook with
Istio's words for the problem, or, before any webhook, the API server by the CRD's schema with its
field error (422 Invalid); a valid resource is accepted. A refused resource is not stored, and a
refusal by the other one than expected is wrong."""

from collections.abc import Sequence
from dataclasses import dataclass

from conformance.errors import ConformanceError
from conformance.names import ISTIO_VALIDATION_DENIED
from conformance.targets.field_errors import is_invalid
from conformance.waiting import Verdict

# Who decided an apply: what refused it, or that it was accepted.
WEBHOOK = "webhook"
SCHEMA = "schema"
ACCEPTED = "accepted"
OTHER = "other"  # refused, but by neither: always wrong
REFUSERS = (WEBHOOK, SCHEMA)


@dataclass(frozen=True)
class Expected:
    by: str  # WEBHOOK, SCHEMA or ACCEPTED
    words: str  # what the refusal must say ("" when accepted)

    def __str__(self) -> str:
        return ACCEPTED if self.by == ACCEPTED else f"refused by {self.by}: {self.words}"


def expectation(text: str) -> Expected:
    """A case's expectation as written: "webhook: <Istio's words>", "schema: <field error>" (e.g.
    "schema: spec.host: Required value"), or "" for a valid resource."""
    if not text:
        return Expected(ACCEPTED, "")
    by, _, words = text.partition(": ")
    if by not in REFUSERS or not words:
        raise ConformanceError(f"validation case expectation {text!r}: expected "
                               f"'{WEBHOOK}: <words>', '{SCHEMA}: <words>' or '' (accepted)")
    return Expected(by, words)


@dataclass(frozen=True)
class Attempt:
    case: str  # the manifest
    expected: str  # as expectation() reads it
    error: str | None  # what apply raised, None when it was accepted
    stored: bool  # whether the object exists afterwards


def refused_by(error: str | None) -> str:
    if error is None:
        return ACCEPTED
    if ISTIO_VALIDATION_DENIED in error:
        return WEBHOOK
    if is_invalid(error):
        return SCHEMA
    return OTHER


def _row(attempt: Attempt) -> tuple[str, str, str, bool]:
    expected = expectation(attempt.expected)
    by = refused_by(attempt.error)
    error = attempt.error or ""
    if expected.by == ACCEPTED:
        ok = by == ACCEPTED and attempt.stored
        return attempt.case, str(expected), ACCEPTED if by == ACCEPTED else f"refused by {by}: {error}", ok
    ok = by == expected.by and expected.words in error and not attempt.stored
    seen = ACCEPTED if by == ACCEPTED else f"refused by {by}: {_refusal(error, by)[:160]}"
    if attempt.stored:
        seen += " (stored)"
    return attempt.case, str(expected), seen, ok


def _refusal(error: str, by: str) -> str:
    """The refusal's own words: after the webhook's denial, or the API server's field errors."""
    if by == SCHEMA:
        return error.split(" is invalid: ", 1)[-1]
    return error.split(": ", 1)[-1]


def validation_table(attempts: Sequence[Attempt]) -> Verdict:
    rows = [_row(a) for a in attempts]
    wrong = sum(not ok for *_, ok in rows)
    lines = [f"{case}: expected {expected}; observed {seen}{'' if ok else '  WRONG'}"
             for case, expected, seen, ok in rows]
    table = "\n".join(lines)
    # Istio's validation: its CRDs' schemas, which the API server applies first, then its webhook.
    if wrong or not attempts:
        return Verdict(False, f"{wrong} of {len(attempts)} validation cases differ from Istio's validation "
                              f"(CRD schema, then webhook):\n{table}")
    return Verdict(True, f"all {len(attempts)} validation cases as Istio's validation decides "
                         f"(CRD schema, then webhook):\n{table}")
