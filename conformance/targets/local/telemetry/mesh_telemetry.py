"""The local mesh's telemetry: each proxied pod's access log made into Istio's metrics at scrape
time, served per pod, and scraped by a real Prometheus when this machine has one, started when
first asked for (prometheus.py)."""

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from conformance.errors import ConformanceError
from conformance.names import STATS_PATH, STATUS_PORT
from conformance.targets.local.model import Pod, Service
from conformance.targets.local.pods import RunningPod
from conformance.targets.local.processes import Supervisor
from conformance.targets.local.telemetry.access_log import AccessLogTail, access_log_path
from conformance.targets.local.telemetry.labels import request_labels
from conformance.targets.local.telemetry.metrics import ProxyMetrics
from conformance.targets.local.telemetry.peers import Directory, WorkloadMetadata
from conformance.targets.local.telemetry.prometheus import LocalPrometheus, scrape_target
from conformance.targets.local.telemetry.server import MetricsServer


def with_access_log(pod: Pod, run_dir: Path) -> Pod:
    """`pod`, its proxy (if it has one) logging to its directory (envoy.EnvoyProxy.dir)."""
    if pod.proxy == "none":
        return pod
    return replace(pod, access_log=str(access_log_path(run_dir / "proxies" / f"{pod.namespace}.{pod.name}")))


class ProxyTelemetry:
    """One proxy: its access log read so far, the metrics made of it, and its Envoy."""

    def __init__(self, pod: RunningPod, mutants: frozenset[str]) -> None:
        assert pod.proxy is not None and pod.model.access_log is not None
        self.workload = WorkloadMetadata(pod.workload.name, pod.model)
        self.envoy = pod.proxy
        self.log = AccessLogTail(Path(pod.model.access_log))
        self.metrics = ProxyMetrics(mutants)

    def count_new_requests(self, directory: Directory) -> None:
        for request in self.log.read():
            self.metrics.record(request_labels(request, self.workload, directory), request.duration_ms)

    def envoy_stats(self) -> bytes:
        try:
            reply = self.envoy.admin(STATS_PATH)
        except httpx.HTTPError as exc:
            raise ConformanceError(f"{self.envoy.name}: Envoy's admin did not answer: {exc}") from None
        if reply.status_code != 200:
            raise ConformanceError(f"{self.envoy.name}: Envoy's {STATS_PATH} answered {reply.status_code}")
        return reply.content


class MeshTelemetry:
    def __init__(self, run_dir: Path, address: str, supervisor: Supervisor, mutants: frozenset[str]) -> None:
        self.mutants = mutants
        self.directory = Directory()
        self._proxies: dict[str, ProxyTelemetry] = {}  # "<namespace>/<pod>" -> its proxy
        # Orders the scrapes' reading of logs and directory with the mesh's updates.
        self._lock = threading.Lock()
        self._targets: list[dict[str, Any]] = []
        self.server = MetricsServer(address, self.scrape, self.targets)
        self.prometheus = LocalPrometheus(run_dir / "prometheus", address, self.server.targets_url, supervisor)

    def update(self, pods: Sequence[RunningPod], services: Sequence[Service]) -> None:
        """The mesh's pods and Services now: peers to name, proxies to serve and to scrape."""
        with self._lock:
            self.directory.update((WorkloadMetadata(pod.workload.name, pod.model) for pod in pods), services)
            self._proxies = {
                _key(pod): self._proxies.get(_key(pod)) or ProxyTelemetry(pod, self.mutants)
                for pod in pods
                if pod.proxy is not None and pod.model.access_log is not None
            }
            self._targets = [self._target(pod) for pod in pods if _key(pod) in self._proxies]

    def targets(self) -> list[dict[str, Any]]:
        """What Prometheus scrapes now: every pod with a proxy."""
        with self._lock:
            return list(self._targets)

    def _target(self, pod: RunningPod) -> dict[str, Any]:
        model = pod.model
        return scrape_target(self.server.address, model.namespace, model.name, model.ip, model.labels, STATUS_PORT)

    def scrape(self, pod: str) -> bytes | None:
        """The pod's Envoy stats and Istio metrics, every request it logged counted; None: no such proxy."""
        with self._lock:
            proxy = self._proxies.get(pod)
            if proxy is None:
                return None
            proxy.count_new_requests(self.directory)
        envoy = proxy.envoy_stats()
        return envoy + (b"" if envoy.endswith(b"\n") or not envoy else b"\n") + proxy.metrics.exposition()

    def prometheus_query(self, promql: str) -> list[dict[str, Any]]:
        return self.prometheus.query(promql)

    def prometheus_unavailable(self) -> str | None:
        return self.prometheus.unavailable()

    def stop(self) -> None:
        """Stop serving; Prometheus ends with the mesh's other children."""
        self.server.stop()


def _key(pod: RunningPod) -> str:
    return f"{pod.model.namespace}/{pod.model.name}"
