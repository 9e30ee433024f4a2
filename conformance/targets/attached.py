"""A cluster another process of the same run brought up: a pytest-xdist worker's view of it.

The controller provisions (and later removes) the cluster and the mesh once; each worker
connects to it with the access the controller handed over, and never creates or deletes it.
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceError
from conformance.settings import RunSettings
from conformance.targets.base import Doc
from conformance.targets.cluster import ClusterAccess
from conformance.targets.kube import Kube
from conformance.targets.debug_bundle import DEBUG_TIMEOUT, Istioctl, cached_istioctl, collect_cluster_debug


def access_to_json(access: ClusterAccess) -> dict[str, Any]:
    return {**asdict(access), "kubeconfig": str(access.kubeconfig)}


def access_from_json(values: Mapping[str, Any]) -> ClusterAccess:
    return ClusterAccess(**{**values, "kubeconfig": Path(values["kubeconfig"])})


class AttachedCluster:
    """The Provisioner of a worker: up() connects, down() disconnects, nothing is created."""

    def __init__(self, settings: RunSettings, access: ClusterAccess) -> None:
        self.name = settings.target
        self.settings = settings
        self.access = access
        self.kube: Kube | None = None

    def up(self) -> ClusterAccess:
        self.kube = Kube(self.access.kubeconfig, self.access.context, timeouts=self.settings.timeouts)
        return self.access

    def down(self) -> None:
        if self.kube is not None:
            self.kube.close()
            self.kube = None

    def collect_debug(self, directory: Path, namespaces: Sequence[str] = (),
                      applied: Sequence[Doc] | None = None) -> None:
        if self.kube is None:
            raise ConformanceError("the shared cluster is not connected")
        istioctl = Istioctl(cached_istioctl(self.settings, self.access.mesh_version), self.access.kubeconfig,
                            self.access.context, DEBUG_TIMEOUT)
        collect_cluster_debug(self.kube, directory, self.access.kubeconfig, namespaces, applied, istioctl)

    def phases(self) -> Mapping[str, float]:
        return {}
