"""The debug bundle of a cluster: what a failed test or bring-up leaves for a person to read.

The kubeconfig redacted, webhooks, and per namespace the pods, events and logs, plus istioctl's
view of the proxies; every file scrubbed of the kubeconfig's credentials.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml

from conformance.errors import ConformanceError
from conformance.names import ISTIO_NAMESPACE, PROXY_CONTAINER
from conformance.settings import RunSettings
from conformance.targets import istio
from conformance.targets.base import Doc
from conformance.targets.kube import Kube
from conformance.targets.kube_credentials import REDACTED, kubeconfig_credentials, redacted_kubeconfig

# Pods whose proxy config the debug bundle dumps: the ones suites send traffic from.
CLIENT_APPS = ("curl", "fortio")
DEBUG_TIMEOUT = 30.0  # each istioctl call of the debug bundle
# Where a v1 Secret holds its values (kubernetes/kubernetes pkg/apis/core/types.go, Secret).
SECRET_VALUE_FIELDS = ("data", "stringData")
T = TypeVar("T")


def cached_istioctl(settings: RunSettings, version: str) -> str:
    """The istioctl of a release meshconf has downloaded for this version, else the one on PATH."""
    cached = settings.cache_dir / f"istio-{version}" / "bin" / "istioctl"
    return str(cached) if cached.is_file() else "istioctl"


@dataclass(frozen=True)
class Istioctl:
    """The istioctl the debug bundle runs, and the cluster it points it at."""

    path: str | None  # None: no istioctl was available (e.g. the release download failed)
    kubeconfig: Path
    context: str | None
    timeout: float


def collect_cluster_debug(kube: Kube | None, directory: Path, kubeconfig: Path,
                          namespaces: Sequence[str] = (), applied: Sequence[Doc] | None = None,
                          istioctl: Istioctl | None = None) -> None:
    """A debug bundle: the kubeconfig redacted, webhooks, and for istio-system plus `namespaces`
    (those the run created) the pods as YAML (managedFields dropped), events and every
    container's logs (istio-proxy included); the applied manifests when given (Secrets' values
    redacted); with `istioctl`, `proxy-status` and the proxy config of each client pod in `namespaces`.

    No credential of the kubeconfig may reach the bundle: every file's text passes through a
    scrubber of its secret values (and what they base64-decode to). A part that cannot be read
    leaves `<file>.error` with the reason, and collection goes on.
    """
    bundle = _Bundle(directory, kubeconfig)
    bundle.write("kubeconfig.redacted.yaml", lambda: redacted_kubeconfig(kubeconfig))
    if applied is not None:
        bundle.write("applied.yaml", lambda: yaml.safe_dump_all([redacted(d) for d in applied if d], sort_keys=False))
    if kube is None:
        return
    bundle.write("webhooks.yaml", lambda: yaml.safe_dump(kube.webhooks(), sort_keys=False))
    clients: list[tuple[str, str]] = []
    for namespace in dict.fromkeys((ISTIO_NAMESPACE, *namespaces)):
        where = f"namespaces/{namespace}"
        bundle.write(f"{where}/events.txt", partial(_events_text, kube, namespace))
        pods = bundle.read(f"{where}/pods.yaml", partial(kube.list_objects, "v1", "Pod", namespace)) or []
        bundle.write(f"{where}/pods.yaml", partial(_pods_yaml, pods))
        for pod in pods:
            meta = pod.get("metadata") or {}
            name, app = str(meta.get("name", "")), (meta.get("labels") or {}).get("app")
            spec = pod.get("spec") or {}
            # Init containers too: a native istio-proxy sidecar is one of them.
            containers = [c["name"] for c in (*(spec.get("initContainers") or []), *(spec.get("containers") or []))]
            for container in containers:
                bundle.write(f"{where}/logs/{name}/{container}.log", partial(kube.logs, name, namespace, container))
            if namespace != ISTIO_NAMESPACE and PROXY_CONTAINER in containers and app in CLIENT_APPS:
                clients.append((name, namespace))
    if istioctl is not None:
        _istioctl_debug(bundle, istioctl, clients)


def _istioctl_debug(bundle: "_Bundle", istioctl: Istioctl, clients: Sequence[tuple[str, str]]) -> None:
    if istioctl.path is None:
        bundle.write("istioctl.error", lambda: "no istioctl: the Istio release was not downloaded\n")
        return
    commands = istio.debug_commands(istioctl.path, istioctl.kubeconfig, istioctl.context, clients)
    for name, argv in commands.items():
        bundle.write(name, partial(istio.output_of, argv, istioctl.timeout))


def _events_text(kube: Kube, namespace: str) -> str:
    return "".join(f"{line}\n" for line in kube.events(namespace))


def _pods_yaml(pods: Sequence[Mapping[str, Any]]) -> str:
    """`kubectl get pods -o yaml` without the managedFields noise."""
    return yaml.safe_dump_all([_without_managed_fields(p) for p in pods], sort_keys=False)


def scrub_tree(root: Path, kubeconfig: Path) -> None:
    """Scrub the kubeconfig's credentials from every text file under `root` (tool output we
    did not write ourselves, such as `kind export logs`)."""
    secrets = _secrets(kubeconfig)
    for path in (p for p in root.rglob("*") if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary: nothing a credential could be read from as text
        scrubbed = _scrub(text, secrets)
        if scrubbed != text:
            path.write_text(scrubbed, encoding="utf-8")


def _secrets(kubeconfig: Path) -> list[str]:
    # Longest first: a secret that contains another is replaced whole.
    return sorted(kubeconfig_credentials(kubeconfig), key=len, reverse=True)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


class _Bundle:
    """Writes bundle files with the kubeconfig's credentials scrubbed; a failed part becomes a .error file."""

    def __init__(self, directory: Path, kubeconfig: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.secrets = _secrets(kubeconfig)

    def read(self, name: str, fetch: Callable[[], T]) -> T | None:
        try:
            return fetch()
        except ConformanceError as exc:
            self._put(f"{name}.error", f"{exc}\n")
            return None

    def write(self, name: str, render: Callable[[], str]) -> None:
        text = self.read(name, render)
        if text is not None:
            self._put(name, text)

    def _put(self, name: str, text: str) -> None:
        text = _scrub(text, self.secrets)
        path = self.directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def redacted(doc: Doc) -> dict[str, Any]:
    """`doc` with a Secret's values replaced, its keys kept: the bundle says which keys were
    applied, never a private key (IngressTLS applies one)."""
    if doc.get("kind") != "Secret" or doc.get("apiVersion") != "v1":
        return dict(doc)
    return {**doc, **{field: {key: REDACTED for key in doc[field] or {}}
                      for field in SECRET_VALUE_FIELDS if field in doc}}


def _without_managed_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}
