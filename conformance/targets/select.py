"""Choosing a target: `auto` picks kubeconfig, kind or local, and says why."""

import shutil
from dataclasses import replace

from conformance.errors import ConformanceError
from conformance.settings import TARGETS, RunSettings
from conformance.targets.base import Target
from conformance.targets.preflight import docker_check


def resolve(settings: RunSettings) -> RunSettings:
    """Fill in target and target_reason; `auto` becomes a concrete target."""
    if settings.target not in TARGETS:
        raise ConformanceError(f"unknown target {settings.target!r}; choose one of: {', '.join(TARGETS)}")
    if settings.target != "auto":
        return replace(settings, target_reason=f"--target {settings.target}")
    if settings.context:
        return replace(settings, target="kubeconfig", target_reason=f"a context was named ({settings.context})")
    docker = docker_check()
    if docker.ok and shutil.which("kind"):
        return replace(settings, target="kind", target_reason=f"{docker.detail} and kind are usable")
    missing = docker.detail if not docker.ok else "no kind command on PATH"
    return replace(settings, target="local", target_reason=f"{missing}: no cluster can be created here")


def make(settings: RunSettings) -> Target:
    if settings.target == "local":
        from conformance.targets.local.target import LocalTarget

        return LocalTarget(settings)
    if settings.target == "kind":
        from conformance.targets.cluster import ClusterTarget
        from conformance.targets.provision import KindProvisioner

        return ClusterTarget(settings, KindProvisioner(settings))
    if settings.target == "kubeconfig":
        from conformance.targets.cluster import ClusterTarget
        from conformance.targets.existing import ExistingClusterProvisioner

        return ClusterTarget(settings, ExistingClusterProvisioner(settings))
    raise ConformanceError(f"unknown target {settings.target!r}; choose one of: {', '.join(TARGETS[1:])}")
