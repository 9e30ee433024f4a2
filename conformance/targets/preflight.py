"""Checks that a machine can host a target.

Shared by the kind target's preflight and the future `meshconf doctor`: each check
returns a Check that says what it saw and, when it failed, the command that fixes it.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from conformance.errors import TargetUnavailable
from conformance.targets.tools import ToolMissing, run_tool

DOCKER_INSTALL = "install Docker Engine: https://docs.docker.com/engine/install/"

# kind's known-issues page ("Pod errors due to too many open files"): inotify limits
# are not namespaced, and a cluster with many pods (Istio + Bookinfo) exhausts
# Ubuntu's defaults of 8192 watches and 128 instances.
MIN_INOTIFY_WATCHES = 524288
MIN_INOTIFY_INSTANCES = 512

GIB = 1024**3


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was seen
    fix: str = ""  # what to run or do when not ok


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
