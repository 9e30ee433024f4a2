"""Checks that a machine can host a target, and running the CLI tools they need.

Shared by the kind target's preflight and the future `meshconf doctor`: each check
returns a Check that says what it saw and, when it failed, the command that fixes it.
"""

import os
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from conformance.errors import TargetUnavailable

DOCKER_INSTALL = "install Docker Engine: https://docs.docker.com/engine/install/"

# kind's known-issues page ("Pod errors due to too many open files"): inotify limits
# are not namespaced, and a cluster with many pods (Istio + Bookinfo) exhausts
# Ubuntu's defaults of 8192 watches and 128 instances.
MIN_INOTIFY_WATCHES = 524288
MIN_INOTIFY_INSTANCES = 512

GIB = 1024**3


class ToolMissing(TargetUnavailable):
    """A CLI tool cannot be run; `what` says so without the install hint (a Check's fix has it)."""

    def __init__(self, what: str, install_hint: str) -> None:
        super().__init__(f"{what}: {install_hint}")
        self.what = what


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was seen
    fix: str = ""  # what to run or do when not ok


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


def docker_check(timeout: float = 10.0) -> Check:
    """Is a Docker engine answering? (`docker info` talks to the daemon, `docker version` may not.)"""
    name = "docker"
    try:
        result = run_tool(["docker", "info", "--format", "{{.ServerVersion}}"], timeout, DOCKER_INSTALL)
    except ToolMissing as exc:
        return Check(name, False, exc.what, DOCKER_INSTALL)
    if not result.ok:
        return Check(
            name, False, f"no Docker engine answers `docker info` ({result.outcome()}): {result.tail(2)}",
            "start the Docker engine (e.g. `sudo systemctl start docker`) and make sure your user "
            "may use it (`docker info` must succeed without sudo)",
        )
    return Check(name, True, f"Docker engine {result.stdout.strip()}")


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def inotify_checks(proc: Path = Path("/proc"), min_watches: int = MIN_INOTIFY_WATCHES,
                   min_instances: int = MIN_INOTIFY_INSTANCES) -> list[Check]:
    limits = (("max_user_watches", min_watches), ("max_user_instances", min_instances))
    return [_sysctl_check(proc / "sys/fs/inotify" / key, f"fs.inotify.{key}", minimum)
            for key, minimum in limits]


def _sysctl_check(path: Path, key: str, minimum: int) -> Check:
    value = read_int(path)
    if value is None:
        # Not Linux (Docker Desktop runs its own VM with its own limits): nothing to read here.
        return Check(key, True, f"not checked: {path} is not readable on this host")
    if value < minimum:
        return Check(
            key, False, f"{key} is {value}, kind needs at least {minimum} for a cluster of this size",
            f"sudo sysctl {key}={minimum}  (persist it: echo '{key} = {minimum}' | "
            "sudo tee -a /etc/sysctl.d/99-kind.conf)",
        )
    return Check(key, True, f"{key} is {value} (>= {minimum})")


def meminfo(proc: Path = Path("/proc")) -> dict[str, int]:
    """/proc/meminfo as bytes per field (the file says kB and means KiB)."""
    fields: dict[str, int] = {}
    for line in (proc / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return fields


def memory_check(min_bytes: int, why: str, proc: Path = Path("/proc")) -> Check:
    name = "memory"
    try:
        available = meminfo(proc).get("MemAvailable")
    except OSError:
        available = None
    if available is None:
        return Check(name, True, f"not checked: no MemAvailable in {proc / 'meminfo'} on this host")
    have, need = available / GIB, min_bytes / GIB
    if available < min_bytes:
        return Check(
            name, False, f"{have:.1f} GiB available, {why} needs about {need:.0f} GiB",
            f"free at least {need - have:.1f} GiB (close other containers or apps), or use a bigger machine",
        )
    return Check(name, True, f"{have:.1f} GiB available (>= {need:.0f} GiB)")


def require(checks: Iterable[Check]) -> None:
    """Raise one actionable error naming every failed check, or return."""
    failed = [c for c in checks if not c.ok]
    if failed:
        raise TargetUnavailable("; ".join(f"{c.name}: {c.detail} (fix: {c.fix})" for c in failed))
