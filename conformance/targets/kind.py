"""kind cluster lifecycle through the kind CLI: pinned node images, port mappings, log export.

Facts used here were read in kubernetes-sigs/kind at tag v0.32.0:
- config fields: pkg/apis/config/v1alpha4/types.go (apiVersion kind.x-k8s.io/v1alpha4);
- flags: pkg/cmd/kind/create/cluster/createcluster.go (--name --config --image --retain
  --wait --kubeconfig), delete/cluster (--name --kubeconfig; idempotent "like rm -f"),
  export/logs (`kind export logs [output-dir] --name`; "unknown cluster" without nodes),
  get/clusters (one name per line on stdout);
- `kind version` prints "kind v<semver> <go version> <os>/<arch>" (pkg/cmd/kind/version).

Every command is an argv list built without side effects, so `meshconf run --plan` can
print exactly what a run would execute.
"""

import math
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conformance.errors import ConformanceError, TargetUnavailable
from conformance.settings import Timeouts
from conformance.targets import versions
from conformance.targets.preflight import GIB, Check, docker_check, inotify_checks, memory_check
from conformance.targets.tools import ToolMissing, ToolResult, run_tool
from conformance.targets.versions import Version

KIND_VERSION = "v0.32.0"
# Node images published with v0.32.0 need kind >= v0.32.0: their containerd upgrade breaks
# `kind load` from older kind, and 1.36 images use kubeadm v1beta4 (v0.32.0 release notes).
MIN_KIND_VERSION = (0, 32, 0)
KIND_INSTALL = (
    f"install kind {KIND_VERSION} or newer: https://kind.sigs.k8s.io/docs/user/quick-start/#installation "
    f"(or `go install sigs.k8s.io/kind@{KIND_VERSION}`)"
)

# Node images of kind v0.32.0, pinned by digest: a tag can be re-pushed for another kind
# release, the digest cannot (the release notes say to use the digest).
# - 1.36: the v0.32.0 default, in kind's own source at tag v0.32.0
#   (pkg/apis/config/defaults/image.go).
# - 1.33-1.36: byte-identical to kubernetes-sigs/cluster-api test/infrastructure/kind/mapper.go,
#   "Pre-built images for Kind v0.32" (commit "bump to kind v0.32.0", PR 13781), which copies
#   the v0.32.0 release notes' list.
# kind v0.33.0 (August 2026) builds 1.34-1.37 with new digests and drops 1.33; no Istio in
# SUPPORT_MATRIX supports 1.37 yet, so the table stays on v0.32.0 (newer kind runs these images).
NODE_IMAGES: dict[str, str] = {
    "1.36": "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5",
    "1.35": "kindest/node:v1.35.5@sha256:ce977ae6d65918d0b58a5f8b5e940429c2ce42fa3a5619ec2bbc60b949c0ac95",
    "1.34": "kindest/node:v1.34.8@sha256:02722c2dedddcfc00febf5d27fbeb9b7b2c14294c82109ff4a85d89ac9ba3256",
    "1.33": "kindest/node:v1.33.12@sha256:3f5c8443c620245e4d355cfe09e96a91ead32ceaa569d3f1ca9edf0cb2fe2ff4",
}

# The ingress gateway Service must be installed with these nodePorts: kind maps a host port
# to a node's containerPort, and a NodePort reaches the gateway only if the two are equal.
INGRESS_HTTP_NODEPORT = 30080
INGRESS_HTTPS_NODEPORT = 30443
# kind's default listenAddress is 0.0.0.0, which would expose the mesh to the network.
LISTEN_ADDRESS = "127.0.0.1"

# A kind node with Istio's demo profile, Bookinfo, the test clients and addons.
MIN_MEMORY = 6 * GIB


@dataclass
class KindCluster:
    name: str
    kubernetes: str  # a minor version, a key of NODE_IMAGES
    work_dir: Path  # private to this run: config, kubeconfig, kind-logs
    http_port: int = 8080  # host port on 127.0.0.1 for the gateway's HTTP nodePort
    https_port: int = 8443
    nodes: int = 1  # one control-plane node, plus nodes-1 workers
    timeouts: Timeouts = field(default_factory=Timeouts)
    # Node logs exported by a create that failed (its nodes are gone by then), for the debug bundle.
    failed_create_logs: Path | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.kubernetes not in NODE_IMAGES:
            raise ConformanceError(
                f"no kind {KIND_VERSION} node image for Kubernetes {self.kubernetes}; "
                f"choose one of: {', '.join(sorted(NODE_IMAGES))}"
            )
        if self.nodes < 1:
            raise ConformanceError(f"a kind cluster needs at least 1 node, not {self.nodes}")
        if self.http_port == self.https_port:
            raise ConformanceError(f"HTTP and HTTPS host ports must differ (both {self.http_port})")

    @property
    def image(self) -> str:
        return NODE_IMAGES[self.kubernetes]

    @property
    def kubeconfig(self) -> Path:
        """kind writes here, never to ~/.kube/config or $KUBECONFIG: the user's file is not ours."""
        return self.work_dir / "kubeconfig"

    @property
    def config_path(self) -> Path:
        return self.work_dir / "kind-config.yaml"

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "kind-logs"

    # -- configuration ---------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        control_plane = {
            "role": "control-plane",
            "image": self.image,
            # Only on one node: a host port can be bound once, and kube-proxy serves a
            # nodePort on every node, wherever the gateway pod runs.
            "extraPortMappings": [
                _port_mapping(INGRESS_HTTP_NODEPORT, self.http_port),
                _port_mapping(INGRESS_HTTPS_NODEPORT, self.https_port),
            ],
        }
        workers = [{"role": "worker", "image": self.image} for _ in range(self.nodes - 1)]
        return {
            "kind": "Cluster",
            "apiVersion": "kind.x-k8s.io/v1alpha4",
            "name": self.name,
            "nodes": [control_plane, *workers],
        }

    def write_config(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return self.config_path

    # -- commands (pure: nothing runs) -----------------------------------------------

    def create_argv(self) -> list[str]:
        return [
            "kind", "create", "cluster",
            "--name", self.name,
            "--config", str(self.config_path),
            "--image", self.image,
            "--kubeconfig", str(self.kubeconfig),
            "--wait", _go_duration(self.timeouts.install),
            # Keep failed nodes so their logs can be exported; we delete them ourselves.
            "--retain",
        ]

    def delete_argv(self) -> list[str]:
        # Without --kubeconfig kind would edit $KUBECONFIG or ~/.kube/config.
        return ["kind", "delete", "cluster", "--name", self.name, "--kubeconfig", str(self.kubeconfig)]

    def export_logs_argv(self, directory: Path) -> list[str]:
        return ["kind", "export", "logs", str(directory), "--name", self.name]

    def get_clusters_argv(self) -> list[str]:
        return ["kind", "get", "clusters"]

    def export_kubeconfig_argv(self) -> list[str]:
        # kind v0.32.0 pkg/cmd/kind/export/kubeconfig: --name, --kubeconfig (default $KUBECONFIG or ~/.kube/config).
        return ["kind", "export", "kubeconfig", "--name", self.name, "--kubeconfig", str(self.kubeconfig)]

    # -- lifecycle -------------------------------------------------------------------

    def exists(self) -> bool:
        # Checked here because `kind delete cluster` succeeds for a name that does not exist.
        result = self._kind(self.get_clusters_argv(), self.timeouts.request)
        if not result.ok:
            raise TargetUnavailable(
                f"`kind get clusters` failed ({result.outcome()}): {result.tail()}; "
                "check that `docker info` works"
            )
        return self.name in result.stdout.split()

    def create(self, reuse: bool) -> bool:
        """Create the cluster, or reuse an existing one when asked; returns whether we created it."""
        if not self.claim(reuse):
            return False
        self.create_new()
        return True

    def claim(self, reuse: bool) -> bool:
        """Whether this run must create the cluster, decided before anything is downloaded or made.

        An existing cluster is used only with --reuse; a new one needs its host ports free,
        or docker fails late, with the node half started.
        """
        if self.exists():
            if reuse:
                return False
            raise ConformanceError(
                f"a kind cluster named {self.name!r} already exists and was not created by this run; "
                f"pass --reuse to run on it, or delete it with `kind delete cluster --name {self.name}`"
            )
        for port, flag in ((self.http_port, "--ingress-port"), (self.https_port, "--ingress-https-port")):
            busy = port_in_use(LISTEN_ADDRESS, port)
            if busy:
                raise TargetUnavailable(
                    f"host port {LISTEN_ADDRESS}:{port}, which the kind config maps to the ingress gateway, "
                    f"is in use ({busy}); free it or choose another with {flag} N"
                )
        return True

    def create_new(self) -> None:
        """`kind create cluster`; a failed create is diagnosed (logs) and removed."""
        self.write_config()
        result = self._kind(self.create_argv(), self._create_timeout())
        if result.ok:
            return
        aftermath = self._discard_failed_create()
        raise TargetUnavailable(
            f"kind could not create cluster {self.name!r} ({result.outcome()}): {result.tail()}; {aftermath}"
        )

    def delete(self) -> None:
        """Delete the cluster; harmless when it is already gone. Call it only for a cluster we created."""
        result = self._kind(self.delete_argv(), self.timeouts.rollout)
        if not result.ok:
            raise ConformanceError(
                f"could not delete kind cluster {self.name!r} ({result.outcome()}): {result.tail()}; "
                f"delete it by hand: {' '.join(self.delete_argv())}"
            )

    def release(self, created: bool, keep: bool = False) -> bool:
        """End of a run: delete the cluster only if this run created it and --keep was not given."""
        if not created or keep:
            return False
        self.delete()
        return True

    def export_kubeconfig(self) -> Path:
        """Write a reused cluster's kubeconfig to our private file (create() writes it for a new one)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        result = self._kind(self.export_kubeconfig_argv(), self.timeouts.request)
        if not result.ok:
            raise ConformanceError(
                f"could not export the kubeconfig of kind cluster {self.name!r} ({result.outcome()}): {result.tail()}"
            )
        return self.kubeconfig

    def export_logs(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        result = self._kind(self.export_logs_argv(directory), self.timeouts.rollout)
        if not result.ok:
            raise ConformanceError(
                f"could not export logs of kind cluster {self.name!r} ({result.outcome()}): {result.tail()}"
            )
        return directory

    def _discard_failed_create(self) -> str:
        """Keep the evidence, then remove the half-created nodes; say what happened."""
        notes = []
        try:
            self.failed_create_logs = self.export_logs(self.logs_dir)
            notes.append(f"node logs in {self.failed_create_logs}")
        except ConformanceError as exc:
            notes.append(f"no node logs ({exc})")
        try:
            self.delete()
            notes.append("the half-created cluster was deleted")
        except ConformanceError as exc:
            notes.append(str(exc))
        return "; ".join(notes)

    def _create_timeout(self) -> float:
        # --wait only bounds the wait for the control plane; pulling the node image and
        # booting come before it, so the whole call gets twice the install timeout.
        return 2 * self.timeouts.install

    def _kind(self, argv: list[str], timeout: float) -> ToolResult:
        return run_tool(argv, timeout, KIND_INSTALL)


def _port_mapping(node_port: int, host_port: int) -> dict[str, Any]:
    return {
        "containerPort": node_port,
        "hostPort": host_port,
        "listenAddress": LISTEN_ADDRESS,
        "protocol": "TCP",
    }


def port_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be bound, or None when it is free (SO_REUSEADDR: TIME_WAIT is not use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _go_duration(seconds: float) -> str:
    """kind's --wait takes a Go duration: 300 -> "5m", 90 -> "90s"."""
    whole = math.ceil(seconds)
    return f"{whole // 60}m" if whole % 60 == 0 else f"{whole}s"


# -- preflight -------------------------------------------------------------------------

def parse_kind_version(text: str) -> Version | None:
    """Read `kind version` output, e.g. "kind v0.32.0 go1.24.2 linux/amd64"."""
    return versions.find(text)


def kind_check(timeout: float = 10.0) -> Check:
    name = "kind"
    try:
        result = run_tool(["kind", "version"], timeout, KIND_INSTALL)
    except ToolMissing as exc:
        return Check(name, False, exc.what, KIND_INSTALL)
    version = parse_kind_version(result.stdout) if result.ok else None
    if version is None:
        return Check(name, False, f"`kind version` gave no version ({result.outcome()}): {result.tail(2)}",
                     KIND_INSTALL)
    minimum = "v" + ".".join(map(str, MIN_KIND_VERSION))
    if not version.at_least(MIN_KIND_VERSION):
        detail = f"kind {version} is older than {minimum}, which the pinned node images need"
        return Check(name, False, detail, KIND_INSTALL)
    return Check(name, True, f"kind {version} (>= {minimum})")


def preflight(proc: Path = Path("/proc"), timeouts: Timeouts | None = None) -> list[Check]:
    """Everything a kind run needs from this machine, each with its fix."""
    quick = (timeouts or Timeouts()).request
    return [
        docker_check(quick),
        kind_check(quick),
        *inotify_checks(proc),
        memory_check(MIN_MEMORY, "a kind cluster with Istio and Bookinfo", proc),
    ]
