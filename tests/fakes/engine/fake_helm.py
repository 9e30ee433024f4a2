"""The fake `helm`: releases in the shared state, and the gateway chart's Service in the fake API.

What it models of Helm 3 (helm/helm v3.21.4) and of Istio's gateway chart (istio/istio 1.28.0):
- `upgrade --install` on a release that does not exist installs it (cmd/helm/upgrade.go), saying
  so on stdout; without --install it fails with "has no deployed releases".
- Objects are created with POST and fieldManager "helm" (pkg/kube/client.go, cmd/helm/helm.go),
  labelled and annotated as the release's (pkg/action/validate.go setMetadataVisitor); an object
  of that name not annotated for the release stops the install (existingResourceConflict).
- --wait polls until the release's objects are ready, for --timeout (default 5m0s); a Service
  is ready with a cluster IP and, when of type LoadBalancer, an ingress address or an external
  IP (pkg/kube/ready.go serviceReady). On timeout the release is failed and helm prints
  "Error: context deadline exceeded" (pkg/kube/wait.go; an install's error is not wrapped by
  `upgrade --install`, an upgrade's is, with "UPGRADE FAILED").
- The gateway chart renders one Service named after the release, of `service.type`
  (default LoadBalancer; "None": no Service) with ports status-port 15021, http2 80 and https
  443 (manifests/charts/gateway/values.yaml, templates/service.yaml, templates/_helpers.tpl).
  The chart's Deployment and other objects are not modelled: they need a controller to be ready.
- `uninstall` deletes what the release created; an unknown release is "release: not found"
  (pkg/action/uninstall.go).
"""

import re
import time
from pathlib import Path
from typing import Any

from .calls import Handler, Spec, State, ToolAnswer
from .commands import Parsed
from .kubeclient import Api, Unreachable, server_of

MANAGER = "helm"
DEFAULT_TIMEOUT = 300.0
# Helm polls every 2s (pkg/kube/wait.go); the fake polls faster so tests stay quick.
POLL_INTERVAL = 0.05
GATEWAY_PORTS = [
    {"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
    {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 80},
    {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443},
]
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def upgrade(call: Parsed, state: State, spec: Spec) -> ToolAnswer:
    release, chart = call.args
    namespace = call.value("namespace") or "default"
    api, problem = _cluster(call)
    if api is None:
        return problem
    releases: dict[str, Any] = state.setdefault("helm_releases", {})
    key = f"{namespace}/{release}"
    installing = key not in releases
    if installing and not call.has("install"):
        return ToolAnswer(1, stderr=f'Error: UPGRADE FAILED: "{release}" has no deployed releases\n')
    out = f'Release "{release}" does not exist. Installing it now.\n' if installing else ""
    failed = "" if installing else "UPGRADE FAILED: "
    if installing and call.has("create-namespace"):
        _ensure_namespace(api, namespace)
    objects = render(chart, release, namespace, _values(call.flags.get("set", [])))
    conflict = _apply(api, objects, release, namespace, installing)
    if conflict:
        return ToolAnswer(1, out, f"Error: {failed}{conflict}\n")
    revision = 1 if installing else int(releases[key]["revision"]) + 1
    releases[key] = {"chart": chart, "revision": revision, "status": "pending-install",
                     "objects": [_service_path(o) for o in objects]}
    if call.has("wait") and not _wait_ready(api, objects, _seconds(call.value("timeout"))):
        releases[key]["status"] = "failed"
        return ToolAnswer(1, out, f"Error: {failed}context deadline exceeded\n")
    releases[key]["status"] = "deployed"
    return ToolAnswer(stdout=out + f"NAME: {release}\nNAMESPACE: {namespace}\nSTATUS: deployed\n"
                             f"REVISION: {revision}\nTEST SUITE: None\n")


def uninstall(call: Parsed, state: State, spec: Spec) -> ToolAnswer:
    namespace = call.value("namespace") or "default"
    api, problem = _cluster(call)
    if api is None:
        return problem
    releases: dict[str, Any] = state.setdefault("helm_releases", {})
    out = ""
    for release in call.args:
        record = releases.pop(f"{namespace}/{release}", None)
        if record is None:
            if call.has("ignore-not-found"):
                continue
            return ToolAnswer(1, out, f"Error: uninstall: Release not loaded: {release}: release: not found\n")
        for path in record["objects"]:
            api.delete(path)
        out += f'release "{release}" uninstalled\n'
    return ToolAnswer(stdout=out)


HANDLERS: dict[str, Handler] = {"upgrade": upgrade, "uninstall": uninstall}


# -- the cluster ----------------------------------------------------------------------------


def _cluster(call: Parsed) -> tuple[Api | None, ToolAnswer]:
    kubeconfig = call.value("kubeconfig")
    if not kubeconfig:  # the real helm would use $KUBECONFIG or ~/.kube/config: a fake never does
        return None, ToolAnswer(1, stderr="fake helm: refusing to run without --kubeconfig\n")
    path = Path(kubeconfig)
    if not path.is_file():
        return None, ToolAnswer(1, stderr=f"Error: Kubernetes cluster unreachable: stat {path}: "
                                          "no such file or directory\n")
    api = Api(server_of(path), MANAGER)
    try:
        api.reachable()
    except Unreachable as exc:
        return None, ToolAnswer(1, stderr=f"Error: Kubernetes cluster unreachable: {exc}\n")
    return api, ToolAnswer()


def _ensure_namespace(api: Api, namespace: str) -> None:
    if api.get(f"/api/v1/namespaces/{namespace}") is None:
        api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})


def _apply(api: Api, objects: list[dict[str, Any]], release: str, namespace: str, installing: bool) -> str:
    """Create (install) or patch (upgrade) each object; the error text, or "" when all went in."""
    for obj in objects:
        path = _service_path(obj)
        existing = api.get(path)
        if existing is not None and installing:
            owner = (existing.get("metadata", {}).get("annotations") or {}).get("meta.helm.sh/release-name")
            if owner != release:
                return (f"rendered manifests contain a resource that already exists. Unable to continue with "
                        f'install: {obj["kind"]} "{obj["metadata"]["name"]}" in namespace "{namespace}" exists '
                        f"and cannot be imported into the current release: invalid ownership metadata")
        if existing is None:
            code, body = api.create(path.rsplit("/", 1)[0], obj)
        else:
            code, body = api.merge_patch(path, obj)
        if code >= 300:
            return str((body or {}).get("message", body)) if isinstance(body, dict) else str(body)
    return ""


def _wait_ready(api: Api, objects: list[dict[str, Any]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if all(_ready(api.get(_service_path(o))) for o in objects):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))


def _ready(obj: dict[str, Any] | None) -> bool:
    if obj is None:
        return False
    spec = obj.get("spec") or {}
    if obj.get("kind") != "Service" or spec.get("type") == "ExternalName":
        return True
    if not spec.get("clusterIP"):
        return False
    if spec.get("type") == "LoadBalancer":
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        return bool(spec.get("externalIPs")) or bool(ingress)
    return True


# -- the charts -------------------------------------------------------------------------------


def render(chart: str, release: str, namespace: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """What the fake knows of a chart's objects: the gateway chart's Service, nothing else."""
    if chart != "gateway":
        return []
    service = values.get("service") or {}
    kind = str(service.get("type", "LoadBalancer"))
    if kind == "None":
        return []
    name = str(values.get("name") or release)
    selector = {"app": name, "istio": name.removeprefix("istio-")}
    return [{
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {"app.kubernetes.io/name": name, **selector, "app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace},
        },
        "spec": {"type": kind, "ports": [dict(p) for p in GATEWAY_PORTS], "selector": selector},
    }]


def _values(sets: list[str]) -> dict[str, Any]:
    """--set a.b=c,d=e, as nested values (strings only: the fake reads no typed value)."""
    values: dict[str, Any] = {}
    for item in sets:
        for pair in re.split(r"(?<!\\),", item):
            key, _, value = pair.partition("=")
            node = values
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return values


def _service_path(obj: dict[str, Any]) -> str:
    """Where a rendered object lives: the charts the fake renders hold only Services."""
    meta = obj["metadata"]
    return f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}"


def _seconds(duration: str | None) -> float:
    """A Go duration ("240s", "5m", "1m30s") in seconds."""
    if not duration:
        return DEFAULT_TIMEOUT
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(duration))
