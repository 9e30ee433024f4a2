"""Wall time of each phase of `meshconf run --target local`, from a fresh temporary directory.

Usage: python bench/local_run.py [--runs N] [-- extra meshconf run arguments]
Prints one row per run: mesh up, Bookinfo ready, tests, teardown, and the whole command.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


PHASES = ("mesh up", "bookinfo ready", "tests", "teardown")


def one_run(extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="meshconf-bench-") as tmp:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "conformance.cli", "run", "--target", "local", *extra],
            cwd=tmp, capture_output=True, text=True,
        )
        wall = time.monotonic() - started
        if done.returncode != 0:
            sys.exit(f"meshconf run failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        report = yaml.safe_load((Path(tmp) / "results" / "report.yaml").read_text())
    timings = report["timings"]
    return {phase: timings[phase] for phase in PHASES} | {"whole command": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    rows = [one_run(args.extra) for _ in range(args.runs)]
    columns = list(rows[0])
    print("run  " + "".join(f"{c:>16}" for c in columns))
    for i, row in enumerate(rows, 1):
        print(f"{i:<5}" + "".join(f"{row[c]:>15.2f}s" for c in columns))
    print("max  " + "".join(f"{max(r[c] for r in rows):>15.2f}s" for c in columns))


if __name__ == "__main__":
    main()
