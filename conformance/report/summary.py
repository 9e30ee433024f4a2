"""The terminal summary: one line per feature, where the run went, and the ways in side by side."""

from io import StringIO
from typing import Any

from rich.console import Console
from rich.table import Table

from conformance.probes.latency import WAY_COLUMNS
from conformance.report.headline import headline
from conformance.report.results import MeasuredWay, Outcome, ResultBook

_STYLE = {Outcome.PASSED: "green", Outcome.FAILED: "bold red", Outcome.SKIPPED: "yellow",
          Outcome.NOT_SUPPORTED: "cyan"}


def render(book: ResultBook, width: int = 110) -> str:
    table = Table(title="meshconf conformance", title_justify="left")
    for column in ("profile", "feature", "level", "outcome", "detail"):
        table.add_column(column, overflow="fold")
    for f in book.selected:
        outcome, reason = book.feature_outcome(f)
        # One line each here (a failure's debug bundles below it); the report keeps the whole text.
        detail = "\n".join([headline(outcome, reason), *(f"debug: {d}" for d in book.debug_bundles(f))])
        table.add_row(f.profile, f.name, f.level.value, f"[{_STYLE[outcome]}]{outcome.value}[/]", detail)
    out = StringIO()
    console = Console(file=out, width=width, force_terminal=False, color_system=None)
    if book.facts:
        console.print(f"target: {book.facts.target} ({book.target_reason}); {book.facts.mode}")
    console.print(table)
    ways = book.measured_ways()
    if ways:
        console.print(comparison_table(ways))
    return out.getvalue()


def comparison_table(ways: list[MeasuredWay]) -> Table:
    table = Table(title="ways in: the same page through each", title_justify="left")
    for column in ("feature", "outcome", *WAY_COLUMNS):
        table.add_column(column)
    for feature, outcome, way in ways:
        table.add_row(feature.name, f"[{_STYLE[outcome]}]{outcome.value}[/]", *way.cells())
    return table


def print_summary(book: ResultBook, terminalreporter: Any) -> None:
    terminalreporter.write_line("")
    for line in render(book).splitlines():
        terminalreporter.write_line(line)
