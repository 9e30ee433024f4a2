"""Charts for reports, as PNG bytes (matplotlib, Agg, imported only when a chart is drawn)."""

from collections.abc import Sequence
from io import BytesIO
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conformance.verdicts import SplitVerdict


def split_chart(steps: Sequence[tuple[str, "SplitVerdict"]]) -> bytes:
    """Expected vs observed share per destination, grouped by step (one split, or a canary progression)."""
    # lazily: matplotlib costs ~0.3 s to import and the CLI should start fast
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not steps:
        raise ValueError("no steps to chart")
    names: list[str] = []
    for _, verdict in steps:
        names += [r.destination for r in verdict.rows if r.destination not in names]
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    group = 0.8  # width of one step's group of bars
    bar = group / (2 * len(names))
    for x, (_, verdict) in enumerate(steps):
        rows = {r.destination: r for r in verdict.rows}
        for i, name in enumerate(names):
            row = rows.get(name)
            if row is None:
                continue
            left = x - group / 2 + 2 * i * bar
            ax.bar(left + bar / 2, 100 * row.weight, bar, color=colours[name], alpha=0.35, hatch="//")
            ax.bar(left + 1.5 * bar, 100 * row.share, bar, color=colours[name])
    ax.set_xticks(range(len(steps)))
    ax.set_xticklabels([f"{label}\n{'pass' if v.ok else 'FAIL'}, n={v.n}" for label, v in steps])
    ax.set_ylabel("share of requests (%)")
    ax.set_ylim(0, 120)  # headroom for the legend
    ax.set_yticks(range(0, 101, 20))
    plan = steps[0][1].plan
    ax.set_title(
        f"traffic split: expected (hatched) vs observed; alpha {plan.alpha:.0e}, "
        f"delta {100 * plan.delta:g} points, power {plan.power:g}",
        fontsize=10,
    )
    legend = [Patch(color=colours[name], label=name) for name in names]
    legend += [Patch(facecolor="grey", alpha=0.35, hatch="//", label="expected"), Patch(color="grey", label="observed")]
    ax.legend(handles=legend, fontsize=8, loc="upper center", ncols=min(len(legend), 6), frameon=False)
    fig.tight_layout()
    buffer = BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
