"""Running CLI tools (kind, istioctl, helm, docker, kubectl): timeout, Ctrl-C kills the process group."""

import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from conformance.errors import TargetUnavailable


class ToolMissing(TargetUnavailable):
    """A CLI tool cannot be run; `what` says so without the install hint (a Check's fix has it)."""

    def __init__(self, what: str, install_hint: str) -> None:
        super().__init__(f"{what}: {install_hint}")
        self.what = what


@dataclass(frozen=True)
class ToolResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def tail(self, lines: int = 5) -> str:
        """The last lines of stderr (else stdout) on one line: enough to say why it failed."""
        text = self.stderr.strip() or self.stdout.strip()
        kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(kept) or "no output"

    def outcome(self) -> str:
        if self.timed_out:
            return "timed out"
        return f"exit {self.returncode}"


def run_tool(argv: Sequence[str], timeout: float, install_hint: str) -> ToolResult:
    """Run one CLI call with its output captured; a missing tool is a TargetUnavailable.

    The child gets its own process group so that a timeout also stops what it started
    (kind runs docker, docker runs plugins); an unbounded call could hang a run forever.
    """
    tool = argv[0]
    try:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, encoding="utf-8", errors="replace",  # kind prints emoji
            start_new_session=True,
        )
    except FileNotFoundError:
        where = "" if os.sep in tool else " (not on PATH)"
        raise ToolMissing(f"{tool} is not installed{where}", install_hint) from None
    except PermissionError:
        raise ToolMissing(f"{tool} is not executable", install_hint) from None
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        stdout, stderr = process.communicate()
        stderr += f"\n{tool} timed out after {timeout:g}s and was stopped"
        return ToolResult(tuple(argv), process.returncode, stdout, stderr, timed_out=True)
    except BaseException:  # Ctrl-C: a tool in its own session must not outlive us
        _kill_group(process)
        raise
    return ToolResult(tuple(argv), process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group we created with start_new_session
    except ProcessLookupError:
        pass
