"""The gate's comparison written out: markdown for a pull-request comment or $GITHUB_STEP_SUMMARY,
text for a terminal. Both say the same: the verdict and the rules that fired, what changed about
where the runs ran, then one row per feature (changes first) with its headline and debug bundles."""

from typing import Any

from conformance.report.gate_compare import Change, Comparison, FeatureRow, Side

FEATURE_COLUMNS = ("change", "profile", "feature", "level", "before", "now", "headline")
ABSENT = "\u2014"  # a feature one report did not run, a fact it does not have (no Kubernetes locally)


def verdict(comparison: Comparison) -> str:
    fired = comparison.rules_fired()
    if fired:
        return f"FAIL (exit 1): {'; '.join(fired)}"
    return "PASS (exit 0): no regression, no failed core feature"


def describe(side: Side) -> str:
    return f"{side.path} (run {side.run_id or ABSENT}, {side.date})"


def value(fact: Any) -> str:
    return ABSENT if fact is None or fact == "" else str(fact)


def outcome(text: str | None) -> str:
    return text or ABSENT


def detail_lines(row: FeatureRow) -> list[str]:
    """The headline, then each debug bundle: where a failure's evidence was kept."""
    return [row.headline, *(f"debug bundle: {bundle}" for bundle in row.bundles)]


# ---------------------------------------------------------------------------------------------
# markdown (GitHub-flavoured)


def markdown(comparison: Comparison) -> str:
    lines = [f"### meshconf gate: {'FAIL' if comparison.exit_code else 'PASS'}", "",
             f"**{md(verdict(comparison))}**", "",
             f"{md(comparison.counts())}; baseline {md_side(comparison.baseline)}, now {md_side(comparison.new)}", ""]
    if comparison.facts:
        lines += ["| changed | baseline | now |", "|---|---|---|"]
        lines += [f"| {md(label)} | {md(value(old))} | {md(value(new))} |" for label, old, new in comparison.facts]
        lines.append("")
    if comparison.same_facts:
        same = ", ".join(f"{label} {value(fact)}" for label, fact in comparison.same_facts)
        lines += [f"Unchanged: {md(same)}", ""]
    lines += ["| " + " | ".join(FEATURE_COLUMNS) + " |", "|" + "---|" * len(FEATURE_COLUMNS)]
    lines += [markdown_row(row) for row in comparison.rows]
    return "\n".join(lines) + "\n"


def markdown_row(row: FeatureRow) -> str:
    change = f"**{row.change}**" if row.change is Change.REGRESSION else str(row.change)
    now = f"**{outcome(row.now)}**" if row.failed_core or row.change is Change.REGRESSION else outcome(row.now)
    lines = [md(row.headline)] if row.headline else []
    detail = "<br>".join([*lines, *(f"debug bundle: `{code(bundle)}`" for bundle in row.bundles)])
    cells = [change, md(row.profile), md(row.name), md(row.level), outcome(row.before), now, detail]
    return "| " + " | ".join(cells) + " |"


def md_side(side: Side) -> str:
    return f"`{code(str(side.path))}` (run {md(side.run_id or ABSENT)}, {md(side.date)})"


def md(text: str) -> str:
    """Text in a table cell: a pipe would end the cell, a tag or emphasis would change it."""
    text = " ".join(text.split())
    for plain, escaped in (("\\", "\\\\"), ("|", "\\|"), ("*", "\\*"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(plain, escaped)
    return text


def code(text: str) -> str:
    """A code span in a table cell: only a pipe needs escaping there (GFM)."""
    return text.replace("|", "\\|").replace("`", "'")


# ---------------------------------------------------------------------------------------------
# text (a terminal or a CI log): one line per feature, its headline and bundles indented below,
# so that nothing is folded into a narrow column at any width


def text(comparison: Comparison) -> str:
    lines = [f"meshconf gate: {verdict(comparison)}", comparison.counts(),
             f"baseline: {describe(comparison.baseline)}", f"now:      {describe(comparison.new)}"]
    lines += [f"changed: {label}: {value(old)} -> {value(new)}" for label, old, new in comparison.facts]
    if comparison.same_facts:
        lines.append("unchanged: " + ", ".join(f"{label} {value(fact)}" for label, fact in comparison.same_facts))
    lines.append("")
    columns = [[str(r.change), r.profile, r.name, r.level] for r in comparison.rows]
    widths = [max((len(cells[i]) for cells in columns), default=0) for i in range(4)]
    indent = " " * (widths[0] + 2)
    for row, cells in zip(comparison.rows, columns):
        head = "  ".join(cell.ljust(width) for cell, width in zip(cells, widths))
        lines.append(f"{head}  {outcome(row.before)} -> {outcome(row.now)}")
        lines += [f"{indent}{line}" for line in detail_lines(row) if line]
    return "\n".join(lines) + "\n"
