"""`meshconf report`: a run's Allure results as HTML, by Allure 3 through npx, when Node is here.

A run never needs this: it writes results; this renders them. Allure 3 is the npm package
`allure`, pinned: its CLI and config are what this module writes for (the flags of `generate` and
the config fields of 3.18.0: allure-framework/allure3 packages/cli/src/commands/generate.ts,
packages/core/src/config.ts validateConfig, which refuses a field it does not know), and the same
results render the same way on every machine. npx runs it without installing anything globally;
`--yes` answers npx's question before it downloads a package, which CI cannot.
"""

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from conformance.errors import ConformanceError
from conformance.report.allure_results import CONFIG_FILE, allure3_config

ALLURE_VERSION = "3.18.0"
ALLURE_PACKAGE = f"allure@{ALLURE_VERSION}"
ALLURE_DIR = "allure"  # RESULTS/allure, as `meshconf run` writes it
DEFAULT_OUTPUT = "allure-report"
# Allure 3 keeps a report's history in one JSON-lines file, one line per run, which it reads for
# trends and appends the new run to (historyPath; allurereport.org/docs/how-it-works-history-files).
HISTORY_FILE = "history.jsonl"


def command(config: Path, output: Path, allure_dir: Path) -> list[str]:
    return ["npx", "--yes", ALLURE_PACKAGE, "generate", "--config", str(config), "--output", str(output),
            str(allure_dir)]


def report(results: Path, history: Path | None = None, output: Path | None = None) -> int:
    """Render RESULTS/allure into OUTPUT (default RESULTS/allure-report); 0 also without Node."""
    allure_dir = results / ALLURE_DIR
    if not any(allure_dir.glob("*-result.json")):
        raise ConformanceError(f"no Allure results in {allure_dir}: `meshconf run --results {results}` writes them")
    output = output if output is not None else results / DEFAULT_OUTPUT
    history_file = None
    if history is not None:
        history.mkdir(parents=True, exist_ok=True)
        history_file = (history / HISTORY_FILE).resolve()
    # Beside the results, not in them: this one names the history file of this rendering.
    config = results / CONFIG_FILE
    config.write_text(json.dumps(allure3_config(history_file), indent=2) + "\n")
    argv = command(config, output, allure_dir)
    if shutil.which("npx") is None:
        print("meshconf: no npx on PATH (Node.js is not installed); where Node.js is, this renders the "
              "report with Allure 3:", file=sys.stderr)
        print(shlex.join(argv))
        return 0
    print(f"meshconf: {shlex.join(argv)}", file=sys.stderr)
    done = subprocess.run(argv, check=False)
    if done.returncode != 0:
        print(f"meshconf: Allure 3 failed (exit {done.returncode}); nothing was rendered", file=sys.stderr)
        return 1
    print(f"meshconf: wrote the Allure report {output / 'index.html'}"
          + (f", history {history_file}" if history_file else ""), file=sys.stderr)
    return 0
