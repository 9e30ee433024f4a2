"""Wall time of each phase of `meshconf run --target local`, from a fresh temporary directory.

Usage: python bench/local_run.py [--runs N] [--workers N] [-- extra meshconf run arguments]
Prints one row per run: mesh up, Bookinfo ready, tests, teardown, and the whole command.
With --workers N, each run is made twice, serial and with N pytest-xdist workers, and the
rows give both wall times side by side.
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


def print_rows(rows: list[dict[str, float]]) -> None:
    columns = list(rows[0])
    print("run  " + "".join(f"{c:>16}" for c in columns))
    for i, row in enumerate(rows, 1):
        print(f"{i:<5}" + "".join(f"{row[c]:>15.2f}s" for c in columns))
    print("max  " + "".join(f"{max(r[c] for r in rows):>15.2f}s" for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="also run with N xdist workers, side by side")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    if not args.workers:
        print_rows([one_run(args.extra) for _ in range(args.runs)])
        return
    rows = []
    for _ in range(args.runs):
        serial = one_run(args.extra)["whole command"]
        parallel = one_run([*args.extra, "-n", str(args.workers)])["whole command"]
        rows.append({"serial": serial, f"{args.workers} workers": parallel, "saved": serial - parallel})
    print_rows(rows)


if __name__ == "__main__":
    main()
