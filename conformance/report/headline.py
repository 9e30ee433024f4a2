"""A feature's outcome in one line, for the terminal summary and the gate's markdown: a passed
feature's key figure (the first clause of its evidence, e.g. "80/20 v1/v2 held: 650 requests, v1 524
(80.6%), v2 126 (19.4%)"), another outcome's first line of its reason; the whole text stays in the
report."""

from conformance.report.results import Outcome

# The separators between the clauses of a test's evidence (conformance.verdicts join theirs so).
CLAUSES = ("; ", " | ")
# Longer than this, a headline is cut (with an ellipsis): it is one cell of a table.
LIMIT = 110


def key_figure(evidence: str) -> str:
    """The first clause of a passed feature's evidence."""
    first = evidence.splitlines()[0] if evidence else ""
    for separator in CLAUSES:
        first = first.split(separator)[0]
    return _cut(first)


def first_line(reason: str) -> str:
    return _cut(reason.splitlines()[0] if reason else "")


def _cut(text: str) -> str:
    text = text.strip()
    return text if len(text) <= LIMIT else text[:LIMIT - 1].rstrip() + "\u2026"


def headline(outcome: Outcome, reason: str) -> str:
    """The feature in one line: a passed one's key figure, another's first line of its reason."""
    return key_figure(reason) if outcome is Outcome.PASSED else first_line(reason)
