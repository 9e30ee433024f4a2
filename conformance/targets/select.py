"""Choosing a target: `auto` picks kubeconfig, kind or local, and says why."""

import shutil
import subprocess
from dataclasses import replace

from conformance.errors import ConformanceError, TargetUnavailable
from conformance.settings import TARGETS, RunSettings
from conformance.targets.base import Target


def docker_usable() -> tuple[bool, str]:
    if shutil.which("docker") is None:
        return False, "no docker command on PATH"
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"docker info failed: {exc}"
    if done.returncode != 0:
        return False, "no Docker engine answers (docker info failed)"
    return True, f"Docker engine {done.stdout.strip()}"


def resolve(settings: RunSettings) -> RunSettings:
    """Fill in target and target_reason; `auto` becomes a concrete target."""
    if settings.target not in TARGETS:
        raise ConformanceError(f"unknown target {settings.target!r}; choose one of: {', '.join(TARGETS)}")
    if settings.target != "auto":
        return replace(settings, target_reason=f"--target {settings.target}")
    if settings.context:
        return replace(settings, target="kubeconfig", target_reason=f"a context was named ({settings.context})")
    docker, why = docker_usable()
    if docker and shutil.which("kind"):
        return replace(settings, target="kind", target_reason=f"{why} and kind are usable")
    missing = why if not docker else "no kind command on PATH"
    return replace(settings, target="local", target_reason=f"{missing}: no cluster can be created here")


def make(settings: RunSettings) -> Target:
    if settings.target == "local":
        from conformance.targets.local.target import LocalTarget

        return LocalTarget(settings)
    if settings.target in ("kind", "kubeconfig"):
        raise TargetUnavailable(
            f"the {settings.target} target is not built yet in this version of meshconf; "
            "use --target local (the local reference mesh)"
        )
    raise ConformanceError(f"unknown target {settings.target!r}; choose one of: {', '.join(TARGETS[1:])}")
