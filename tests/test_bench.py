"""The benchmark scripts still run (their figures are read by people, not checked here)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench"


def test_push_bench_prints_its_table_for_a_small_mesh() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "push.py"), "--sizes", "3", "--changes", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    header, row = done.stdout.splitlines()[:2]
    assert header.split()[:3] == ["proxies", "bring-up", "s"]
    cells = row.split()
    assert cells[0] == "3" and cells[5] == "3"  # 3 proxies, each pushed on each change
    assert "0 -> 0" in row  # no inotify instance
