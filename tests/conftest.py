"""Shared helpers for the harness's own tests."""

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["pytester"]


def meshconf(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "conformance.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def mesh_processes(marker: str) -> list[str]:
    """Live Envoy or app processes whose command line contains marker (e.g. a run directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # the process ended while we looked
            continue
        if state == "Z" or marker not in args:
            continue
        if "envoy" in args or "conformance.targets.local.apps" in args:
            found.append(f"{proc.name} {args}")
    return found
