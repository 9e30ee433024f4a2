"""Running pods of the local mesh: an app process, an Envoy, or both."""

import hashlib
import json
import random
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from conformance.names import PROXY_CONTAINER
from conformance.targets.base import PodView
from conformance.targets.kube_views import GENERATED_NAME_ALPHABET, pod_view
from conformance.targets.local.envoy import EnvoyProxy
from conformance.targets.local.admission.injector import PROXY_CONFIG_ENV
from conformance.targets.local.model import (ADMIN_PORT, CONTROL_PORT, DEFAULT_DISCOVERY_ADDRESS, OUTBOUND_PORT, Pod,
                                            app_port)
from conformance.targets.local.processes import Child, Supervisor
from conformance.targets.local.workloads import Workload
from conformance.targets.local.xds.server import ControlPlane
from conformance.targets.local.xds.stats_matcher import stats_inclusions

PodKey = tuple[str, str]  # namespace, pod name


def pod_name(workload: Workload) -> str:
    digest = hashlib.sha256(json.dumps([workload.image, sorted(workload.pod_labels.items())]).encode()).digest()
    template_hash = "".join(GENERATED_NAME_ALPHABET[b % len(GENERATED_NAME_ALPHABET)] for b in digest[:10])
    suffix = "".join(random.choice(GENERATED_NAME_ALPHABET) for _ in range(5))
    return f"{workload.name}-{template_hash}-{suffix}"


@dataclass
class RunningPod:
    model: Pod
    workload: Workload
    admitted: dict[str, Any]  # the Pod document as admission made it (the injector's patch applied)
    app: Child | None = None
    proxy: EnvoyProxy | None = None

    @property
    def listen_port(self) -> int | None:
        """Where the app process listens, or None for a proxy-only pod."""
        if self.workload.app.app == "gateway":
            return None
        if self.workload.app.app == "client":
            return CONTROL_PORT
        if not self.workload.ports:
            return None
        port = self.workload.ports[0]
        return app_port(port) if self.model.injected else port

    def start(self, supervisor: Supervisor, run_dir: Path, registry: Path) -> None:
        """Start the pod's processes; its proxy (from new_running_pod) reads what was pushed to it."""
        log_dir = run_dir / "pods" / f"{self.model.namespace}.{self.model.name}"
        if self.proxy is not None:
            self.proxy.start(supervisor)
        port = self.listen_port
        if port is None:
            return
        argv = [
            sys.executable, "-m", "conformance.targets.local.apps", self.workload.app.app,
            "--listen", f"{self.model.ip}:{port}",
            "--pod", self.model.name,
            "--namespace", self.model.namespace,
            "--registry", str(registry),
        ]
        if self.workload.app.version:
            argv += ["--version", self.workload.app.version]
        argv += [f"--arg={arg}" for arg in self.workload.app.args]
        if self.model.injected:
            argv += ["--proxy", f"{self.model.ip}:{OUTBOUND_PORT}"]
        self.app = supervisor.start(f"app {self.model.namespace}/{self.model.name}", argv, log_dir / "app.log")

    def stop(self, supervisor: Supervisor) -> None:
        if self.app is not None:
            supervisor.stop(self.app)
        if self.proxy is not None:
            self.proxy.stop(supervisor)

    def failure(self) -> str | None:
        """Why this pod can never become ready (a process exited), else None."""
        for what, child in (("app", self.app), ("envoy", self.proxy.child if self.proxy else None)):
            if child is not None and not child.alive():
                return (
                    f"pod {self.model.namespace}/{self.model.name}: {what} exited with code "
                    f"{child.process.returncode}: {child.log_tail(5)}"
                )
        return None

    def refusal(self) -> str | None:
        """Why this pod's Envoy refused the configuration it was given, if it did."""
        refusal = self.proxy.refusal() if self.proxy is not None else None
        return f"pod {self.model.namespace}/{self.model.name}: {refusal}" if refusal else None

    def ready(self) -> bool:
        if self.proxy is not None and not self.proxy.ready():
            return False
        port = self.listen_port
        return port is None or _listening(self.model.ip, port)

    def view(self) -> PodView:
        """The pod as the API server shows it: its containers are the admitted ones."""
        admitted = pod_view(self.admitted)
        return replace(admitted, ip=self.model.ip, ready=self.ready(), service_account=self.model.service_account)


def pod_document(workload: Workload, name: str) -> dict[str, Any]:
    """The Pod a Deployment's ReplicaSet asks the API server to create."""
    spec: dict[str, Any] = {
        "serviceAccountName": workload.service_account,
        "containers": [{"name": workload.container, "image": workload.image}],
    }
    if workload.host_network:
        spec["hostNetwork"] = True
    metadata = {"name": name, "namespace": workload.namespace, "labels": dict(workload.pod_labels),
                "annotations": dict(workload.pod_annotations)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def pod_model(admitted: Mapping[str, Any], workload: Workload, ip: str) -> Pod:
    """The pod the local mesh runs for an admitted Pod: with a sidecar when the injector added
    istio-proxy, connecting where the injected ProxyConfig says (as pilot-agent reads it), keeping
    the stats its annotations ask for."""
    view = pod_view(admitted)
    injected = PROXY_CONTAINER in (*view.containers, *view.init_containers)
    return Pod(
        name=view.name,
        namespace=workload.namespace,
        labels=dict(view.labels),
        ip=ip,
        container_ports=workload.ports,
        service_account=workload.service_account,
        proxy="gateway" if workload.app.app == "gateway" else ("sidecar" if injected else "none"),
        discovery_address=_injected_proxy_config(admitted).get("discoveryAddress", DEFAULT_DISCOVERY_ADDRESS),
        stats_inclusions=stats_inclusions(view.annotations, f"pod {workload.namespace}/{view.name}"),
    )


def _injected_proxy_config(admitted: Mapping[str, Any]) -> dict[str, Any]:
    spec = admitted.get("spec") or {}
    for container in (*(spec.get("initContainers") or ()), *(spec.get("containers") or ())):
        if container.get("name") == PROXY_CONTAINER:
            env = {e.get("name"): e.get("value") for e in container.get("env") or ()}
            return dict(json.loads(env.get(PROXY_CONFIG_ENV) or "{}"))
    return {}


def new_running_pod(
    model: Pod, workload: Workload, admitted: dict[str, Any], run_dir: Path, control_plane: ControlPlane
) -> RunningPod:
    """A pod not started yet; its proxy's resources can be set before its Envoy starts."""
    proxy = EnvoyProxy(model, run_dir, control_plane) if model.proxy != "none" else None
    return RunningPod(model, workload, admitted, proxy=proxy)


def _listening(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


class AddressPool:
    """Pod addresses 127.<block>.x.y: one /16 of loopback per mesh, so parallel runs (and the
    workers of one parallel run) never collide.

    The block is claimed by binding a socket on its 127.<block>.0.1, which no pod uses, for as
    long as the mesh lives: bind() is atomic, so two meshes starting at once cannot pick the
    same block (probing for a listener could not tell them apart).
    """

    def __init__(self) -> None:
        self.block, self._claim = _claim_block()
        self._next = 2

    @property
    def control_plane(self) -> str:
        """The mesh's control plane's address: the block's claimed one, which no pod uses."""
        return f"127.{self.block}.0.1"

    def allocate(self) -> str:
        n = self._next
        self._next += 1
        return f"127.{self.block}.{n // 250}.{n % 250 + 1}"

    def release(self) -> None:
        self._claim.close()


def _claim_block() -> tuple[int, socket.socket]:
    for block in random.sample(range(2, 255), 253):
        claim = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            claim.bind((f"127.{block}.0.1", ADMIN_PORT))
        except OSError:
            claim.close()
            continue
        if not _listening(f"127.{block}.0.3", ADMIN_PORT):  # a mesh that predates claiming
            return block, claim
        claim.close()
    raise RuntimeError("no free 127.x/16 block for the local mesh")


def waiting_for(pod: RunningPod) -> str:
    """A pod not ready, and what its proxy holds of what was pushed to it."""
    if pod.proxy is None:
        return pod.model.name
    status = pod.proxy.sync_status()
    behind = [f"{kind} {state}" for kind, state in status.items() if state != "SYNCED"]
    return f"{pod.model.name} (xDS: {', '.join(behind)})" if behind else pod.model.name


def pod_key(pod: RunningPod) -> PodKey:
    return (pod.model.namespace, pod.model.name)


def probe_readiness(pods: Sequence[RunningPod], ready: Mapping[PodKey, bool]) -> list[tuple[RunningPod, bool]]:
    """Each pod's readiness now. A pod once ready stays so while its processes live: only the
    others are probed, which keeps the watch cheap."""
    return [(pod, pod.failure() is None if ready.get(pod_key(pod)) else pod.ready()) for pod in pods]
