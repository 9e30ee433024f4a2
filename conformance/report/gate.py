"""`meshconf gate --baseline OLD.yaml [NEW.yaml] [--format text|markdown]`: two conformance reports,
each checked against its apiVersion's schema, compared feature by feature (gate_compare), written
for a terminal or a pull request (gate_render).

Exit 0 when the new report may ship, 1 on a regression or a failed core feature (the output says
which rule fired), 2 on bad input: a missing file, bad YAML, a report the schema refuses.
"""

import sys
from pathlib import Path

from conformance.report import gate_render, report_schema
from conformance.report.gate_compare import compare

FORMATS = ("text", "markdown")
# Where `meshconf run` writes its report by default (--results results).
DEFAULT_REPORT = Path("results") / "report.yaml"


def gate(baseline: Path, new: Path, fmt: str = "text") -> int:
    """Load both (a ConformanceError, exit 2, for bad input), compare, print; the exit code."""
    comparison = compare(report_schema.load(baseline), report_schema.load(new), baseline, new)
    written = gate_render.markdown(comparison) if fmt == "markdown" else gate_render.text(comparison)
    sys.stdout.write(written)
    return comparison.exit_code
