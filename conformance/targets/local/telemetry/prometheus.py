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

It starts when the mesh is first asked for it, not with the mesh: a run without MESH-TELEMETRY
has no process scraping every pod every second. Its first scrapes still count every request
logged before, since each scrape counts a proxy's whole access log.
"""

import re
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from conformance.errors import ConformanceError
from conformance.targets.local.processes import Child, Supervisor
from conformance.names import STATS_PATH
from conformance.targets.tools import ToolMissing, run_tool
from conformance.waiting import wait_for

BINARY = "prometheus"
INSTALL = ("apt-get install prometheus  (Debian/Ubuntu; elsewhere put the `prometheus` binary of a release "
           "from https://prometheus.io/download/ or your distribution's package on PATH)")
# http_sd_configs, which the scrape configuration uses, came in Prometheus 2.28.0 (its CHANGELOG).
OLDEST = (2, 28)
# Not the addon's 9090: the Debian package's own service listens there, on every address.
PORT = 19090
JOB = "kubernetes-pods"
SCRAPE_INTERVAL = "1s"
READY_TIMEOUT = 30.0
QUERY_TIMEOUT = 10.0
VERSION_TIMEOUT = 10.0


def missing_reason() -> str | None:
    """Why the local mesh can start no Prometheus at all (no binary), with the fix; None when it can try."""
    if shutil.which(BINARY) is None:
        return f"no `{BINARY}` binary on PATH: install it with {INSTALL}"
    return None


def release(version_output: str) -> tuple[str, tuple[int, int]] | None:
    """The version `prometheus --version` prints ("prometheus, version 2.42.0+ds (branch: ...)"),
    and its major and minor; None when it prints none."""
    found = re.search(r"version ((\d+)\.(\d+)\S*)", version_output)
    return (found[1], (int(found[2]), int(found[3]))) if found else None


def too_old(version: tuple[int, int]) -> bool:
    return version < OLDEST


def oldest() -> str:
    return ".".join(map(str, OLDEST))


def version_problem(binary: str, timeout: float = VERSION_TIMEOUT) -> str | None:
    """Why `binary` cannot be the mesh's Prometheus, judged by its --version; None when it can."""
    try:
        result = run_tool([binary, "--version"], timeout, INSTALL)
    except (ToolMissing, OSError) as exc:
        return f"{binary} does not run ({exc})"
    found = release(result.stdout + result.stderr)
    if not result.ok or found is None:
        return f"`{binary} --version` gave no version ({result.outcome()}): {result.tail(2)}"
    if too_old(found[1]):
        return (f"Prometheus {found[0]} at {binary} is older than {oldest()}, which the scrape "
                f"configuration's http_sd_configs needs; install a newer one: {INSTALL}")
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
    """Prometheus for one mesh, started on first use. Absent binary: unavailable() says how to
    install it (the features that need it are skipped). A binary that cannot start (too old, port
    taken, bad data directory): every query raises why, so those features fail, saying so.

    It is started from the thread that first asks, as the mesh's pods are from the thread that
    applies them: a child is tied to the thread that started it (processes.py)."""

    def __init__(self, directory: Path, address: str, targets_url: str, supervisor: Supervisor) -> None:
        self.directory = directory
        self.address = address
        self.targets_url = targets_url
        self.supervisor = supervisor
        self.url = f"http://{address}:{PORT}"
        self.child: Child | None = None
        self._absent = missing_reason()
        self._tried = False
        self._failure: str | None = None  # why it did not start, once tried
        self._lock = threading.Lock()

    def unavailable(self) -> str | None:
        """Why this machine has no Prometheus, with the install command; None when it has one,
        which is then started (or has failed to: query() says why)."""
        if self._absent is not None:
            return self._absent
        self._ensure_started()
        return None

    def _ensure_started(self) -> str | None:
        """Start Prometheus once; why it did not start, or None."""
        with self._lock:
            if not self._tried:
                # An interrupt in _start leaves nothing running and this unset: the next call tries again.
                self._failure = self._start()
                self._tried = True
            return self._failure

    def _start(self) -> str | None:
        """Start Prometheus and wait until it is ready; why it did not start, or None."""
        binary = str(shutil.which(BINARY))
        problem = version_problem(binary)
        if problem is not None:
            return problem
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self.targets_url), sort_keys=False))
        # The Supervisor owns the child from here: the mesh's teardown stops it whatever happens below.
        self.child = self.supervisor.start("prometheus", [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address={self.address}:{PORT}",
            "--log.level=warn",
        ], self.directory / "prometheus.log")
        try:
            wait_for(self._not_ready, READY_TIMEOUT, 0.05, f"Prometheus at {self.url}")
        except ConformanceError as exc:
            self.supervisor.stop(self.child)
            return f"Prometheus did not start: {exc}"
        except BaseException:  # an interrupt: stop it now rather than at the mesh's teardown
            self.supervisor.stop(self.child)
            raise
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
        if self._absent is not None:
            raise ConformanceError(f"the local mesh has no Prometheus: {self._absent}")
        failure = self._ensure_started()
        if failure is not None:
            raise ConformanceError(f"the local mesh's Prometheus cannot run: {failure}")
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
