"""A real Prometheus scraping the local mesh, as Istio's Prometheus addon scrapes a cluster.

Istio's addon (istio/istio 1.28.0 samples/addons/prometheus.yaml) scrapes every annotated pod's
:15020/stats/prometheus in job `kubernetes-pods`, keeping the metrics' own labels
(honor_labels) and adding the pod's labels, `namespace` and `pod`. Here the targets are the
mesh's pods with a proxy, each a target on the mesh's metrics server whose `pod` query parameter
names it; Prometheus asks that server for them every second (HTTP service discovery), as its
Kubernetes discovery follows a cluster's pods. Prometheus listens on the mesh's
own address, stores in the run directory, and is a child of the mesh's Supervisor, so it ends
with the mesh. It scrapes every second (the addon: every 15 s), so that
a count is in Prometheus a second or two after Envoy flushed its access log.
"""

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from conformance.errors import ConformanceError
from conformance.targets.local.processes import Child, Supervisor
from conformance.names import STATS_PATH
from conformance.waiting import wait_for

BINARY = "prometheus"
INSTALL = ("apt-get install prometheus  (Debian/Ubuntu; elsewhere put the `prometheus` binary of a release "
           "from https://prometheus.io/download/ or your distribution's package on PATH)")
# Not the addon's 9090: the Debian package's own service listens there, on every address.
PORT = 19090
JOB = "kubernetes-pods"
SCRAPE_INTERVAL = "1s"
READY_TIMEOUT = 30.0
QUERY_TIMEOUT = 10.0


def missing_reason() -> str | None:
    """Why the local mesh can start no Prometheus, with the fix; None when it can."""
    if shutil.which(BINARY) is None:
        return f"no `{BINARY}` binary on PATH: install it with {INSTALL}"
    return None


def scrape_config(targets_url: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                   "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [{
            "job_name": JOB,
            "honor_labels": True,
            "metrics_path": STATS_PATH,
            "http_sd_configs": [{"url": targets_url, "refresh_interval": SCRAPE_INTERVAL}],
        }],
    }


def scrape_target(metrics_address: str, namespace: str, name: str, ip: str,
                  labels: Mapping[str, str], port: int) -> dict[str, Any]:
    """A pod's target group, labelled as the addon's relabelling labels a pod's series: its
    labels (as Prometheus names them), `namespace`, `pod`, and its own address as `instance`."""
    pod_labels = {re.sub(r"[^a-zA-Z0-9_]", "_", key): value for key, value in labels.items()}
    return {
        "targets": [metrics_address],
        "labels": {**pod_labels, "namespace": namespace, "pod": name, "instance": f"{ip}:{port}",
                   "__param_pod": f"{namespace}/{name}"},
    }


class LocalPrometheus:
    """Prometheus for one mesh; `unavailable` says why there is none."""

    def __init__(self, directory: Path, address: str, targets_url: str, supervisor: Supervisor) -> None:
        self.directory = directory
        self.url = f"http://{address}:{PORT}"
        self.child: Child | None = None
        self.unavailable = missing_reason()
        if self.unavailable is None:
            self.unavailable = self._start(address, targets_url, supervisor)

    def _start(self, address: str, targets_url: str, supervisor: Supervisor) -> str | None:
        """Start Prometheus and wait until it is ready; why it did not start, or None."""
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(targets_url), sort_keys=False))
        self.child = supervisor.start("prometheus", [
            str(shutil.which(BINARY)),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address={address}:{PORT}",
            "--log.level=warn",
        ], self.directory / "prometheus.log")
        try:
            wait_for(self._not_ready, READY_TIMEOUT, 0.05, f"Prometheus at {self.url}")
        except ConformanceError as exc:
            supervisor.stop(self.child)
            return f"Prometheus did not start: {exc}"
        return None

    def _not_ready(self) -> str | None:
        assert self.child is not None
        if not self.child.alive():
            raise ConformanceError(f"exited with code {self.child.process.returncode}: {self.child.log_tail(5)}")
        try:
            ready = httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if ready else "not ready"

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query (/api/v1/query): the result's series, each with `metric` and `value`
        (the contract of conformance/targets/telemetry.py Telemetry.prometheus_query)."""
        if self.unavailable is not None:
            raise ConformanceError(f"the local mesh has no Prometheus: {self.unavailable}")
        try:
            reply = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=QUERY_TIMEOUT)
        except httpx.HTTPError as exc:
            raise ConformanceError(f"prometheus did not answer /api/v1/query: {type(exc).__name__}: {exc}") from None
        try:
            body = reply.json()
        except ValueError:
            raise ConformanceError(f"prometheus answered /api/v1/query with {reply.status_code} and no JSON: "
                                   f"{reply.text[:300]}") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body if not isinstance(body, dict) else f"{body.get('errorType', '?')}: {body.get('error', body)}"
            raise ConformanceError(f"Prometheus refused the query {promql!r}: {detail}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result
