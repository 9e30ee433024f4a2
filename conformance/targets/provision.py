"""Bringing a cluster with Istio up and down: a kind cluster created here, or an existing context.

Each provisioner deletes only what it created, and records how long each phase took.
"""

import shlex
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml

from conformance import manifests
from conformance.errors import ConformanceError
from conformance.names import ISTIO_NAMESPACE, PROXY_CONTAINER
from conformance.settings import ISTIO_RELEASES_ENV, RunSettings
from conformance.targets import istio, kind, preflight
from conformance.targets.base import Doc
from conformance.targets.cluster import ClusterAccess
from conformance.targets.kube import REDACTED, Kube, kubeconfig_credentials, redacted_kubeconfig

NODEPORTS = "kind/ingress-nodeports.yaml"
# Pods whose proxy config the debug bundle dumps: the ones suites send traffic from.
CLIENT_APPS = ("curl", "fortio")
DEBUG_TIMEOUT = 30.0  # each istioctl call of the debug bundle
T = TypeVar("T")


class Phases:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = time.monotonic() - started


def kind_cluster(settings: RunSettings) -> kind.KindCluster:
    return kind.KindCluster(
        name=settings.cluster_name,
        kubernetes=settings.kubernetes_version,
        work_dir=settings.work_dir.resolve() / f"kind-{settings.cluster_name}",
        http_port=settings.ingress_port,
        https_port=settings.ingress_https_port,
        timeouts=settings.timeouts,
    )


def istio_install(settings: RunSettings, kubeconfig: Path, release_dir: Path | None,
                  context: str | None = None) -> istio.IstioInstall:
    return istio.IstioInstall(
        version=settings.istio_version,
        kubeconfig=kubeconfig,
        method="helm" if settings.install_method == "helm" else "istioctl",
        context=context,
        release_dir=release_dir,
        timeout=settings.timeouts.install,
    )


def wait_mesh_ready(kube: Kube, ingress_url: str, timeout: float) -> None:
    """A freshly installed Istio is ready when its rollouts are done, its validation webhook
    refuses an invalid object, and its ingress gateway answers at `ingress_url`."""
    kube.wait_rollout(ISTIO_NAMESPACE)
    invalid = manifests.load(istio.INVALID_VIRTUALSERVICE)
    istio.wait_validation_webhook(lambda: kube.apply(invalid, "default"), lambda: kube.delete(invalid, "default"),
                                  timeout)
    gateway = manifests.load(istio.READINESS_GATEWAY)
    kube.apply(gateway, ISTIO_NAMESPACE)
    try:
        istio.wait_ingress_answering(ingress_url, timeout)
    finally:
        kube.delete(gateway, ISTIO_NAMESPACE)


def check_versions(settings: RunSettings) -> str | None:
    """Refuse before anything runs: a Kubernetes with no pinned node image, or an Istio/Kubernetes
    pair outside Istio's support matrix (unless forced; then a warning)."""
    kind_cluster(settings)
    return istio.check_support(settings.istio_version, settings.kubernetes_version, settings.force)


class KindProvisioner:
    """A kind cluster made for this run (or reused with --reuse), with Istio installed on it."""

    name = "kind"

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.cluster = kind_cluster(settings)
        self.created = False
        self.kube: Kube | None = None
        self.warning: str | None = None
        self.istioctl: str | None = None  # the release's, once downloaded
        self._phases = Phases()

    def up(self) -> ClusterAccess:
        s = self.settings
        self.warning = check_versions(s)
        preflight.require(kind.preflight(timeouts=s.timeouts))
        # Decided before the download: a name clash or a busy port fails in a second, not after it.
        create = self.cluster.claim(reuse=s.reuse)
        with self._phases("istio release"):
            release = istio.fetch_release(s.istio_version, s.cache_dir, base_url=s.istio_releases,
                                          timeout=s.timeouts.install)
        with self._phases("cluster up"):
            if create:
                self.cluster.create_new()
                self.created = True
            else:
                # A reused cluster: our private kubeconfig may be missing or stale (new API server port).
                self.cluster.export_kubeconfig()
        self.kube = Kube(self.cluster.kubeconfig, None, timeouts=s.timeouts)
        ingress_url = f"http://{kind.LISTEN_ADDRESS}:{self.cluster.http_port}"
        install = istio_install(s, self.cluster.kubeconfig, release)
        self.istioctl = install.istioctl
        with self._phases("mesh up"):
            install.install()
            self.kube.apply(manifests.load(NODEPORTS), ISTIO_NAMESPACE)
            self.kube.apply(istio.addons(release), ISTIO_NAMESPACE)
            wait_mesh_ready(self.kube, ingress_url, s.timeouts.install)
        return ClusterAccess(
            kubeconfig=self.cluster.kubeconfig,
            context=None,
            ingress_url=ingress_url,
            kubernetes_version=self.cluster.image.split(":")[1].split("@")[0],
            mesh_version=s.istio_version,
        )

    @property
    def _kube(self) -> Kube:
        if self.kube is None:
            raise ConformanceError("the kind cluster is not up")
        return self.kube

    def down(self) -> None:
        with self._phases("teardown"):
            if self.kube is not None:
                self.kube.close()
                self.kube = None
            # Deleting the cluster removes Istio with it; a reused cluster keeps both.
            self.cluster.release(self.created, keep=self.settings.keep)
            self.created = False

    # `meshconf up` leaves the cluster running; `meshconf down` deletes it only if up made it.
    @property
    def _marker(self) -> Path:
        return self.cluster.work_dir / "created-by-meshconf-up"

    def mark_created(self) -> None:
        if self.created:
            self._marker.write_text(self.cluster.name)
        if self.kube is not None:
            self.kube.close()
            self.kube = None

    def down_from_up(self) -> None:
        if not self._marker.is_file():
            raise ConformanceError(
                f"no kind cluster {self.cluster.name!r} created by `meshconf up` here ({self._marker} is missing); "
                f"meshconf deletes only clusters it created: use `kind delete cluster --name {self.cluster.name}`"
            )
        self.cluster.delete()
        self._marker.unlink()

    def collect_debug(self, directory: Path, namespaces: Sequence[str] = (),
                      applied: Sequence[Doc] | None = None) -> None:
        istioctl = Istioctl(self.istioctl, self.cluster.kubeconfig, None, DEBUG_TIMEOUT)
        collect_cluster_debug(self.kube, directory, self.cluster.kubeconfig, namespaces, applied, istioctl)
        logs = directory / "kind-logs"
        try:
            if self.cluster.failed_create_logs is not None:  # no nodes left to export from
                shutil.copytree(self.cluster.failed_create_logs, logs, dirs_exist_ok=True)
            else:
                self.cluster.export_logs(logs)
        except (ConformanceError, OSError) as exc:
            (directory / "kind-logs.error").write_text(f"{exc}\n")
        scrub_tree(logs, self.cluster.kubeconfig)

    def phases(self) -> Mapping[str, float]:
        return dict(self._phases.seconds)

    def plan(self) -> list[str]:
        """What a run would do, for `meshconf run --plan`: nothing runs."""
        s = self.settings
        install = istio_install(s, self.cluster.kubeconfig, s.cache_dir / f"istio-{s.istio_version}")
        return [
            f"# kind {kind.KIND_VERSION}, Kubernetes {s.kubernetes_version} ({self.cluster.image})",
            f"# kind config ({self.cluster.config_path}):",
            *("    " + line for line in yaml.safe_dump(self.cluster.config(), sort_keys=False).splitlines()),
            (f"# Istio {s.istio_version} from {istio.release_url(s.istio_version, s.istio_releases)} "
             f"(SHA-256 checked; releases base {s.istio_releases}, set ${ISTIO_RELEASES_ENV} for a mirror), "
             f"cached in {s.cache_dir}"),
            "# commands:",
            *(shlex.join(argv) for argv in (self.cluster.get_clusters_argv(), self.cluster.create_argv())),
            *([f"# --reuse: if cluster {self.cluster.name} exists, instead of creating it: "
               + shlex.join(self.cluster.export_kubeconfig_argv())] if s.reuse else []),
            *install.plan(),
            f"# server-side apply (field manager meshconf): {NODEPORTS}, samples/addons/prometheus.yaml "
            "(scrape interval 5s), samples/addons/kiali.yaml",
            f"# readiness: rollouts in {ISTIO_NAMESPACE}; the validation webhook refuses "
            f"{istio.INVALID_VIRTUALSERVICE}; with {istio.READINESS_GATEWAY} applied, the ingress gateway answers "
            f"http://{kind.LISTEN_ADDRESS}:{self.cluster.http_port} (host {istio.READINESS_HOST}) with its 404",
            "# teardown: " + (shlex.join(self.cluster.delete_argv()) if not s.keep else "none (--keep)"),
        ]


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
    container's logs (istio-proxy included); the applied manifests when given; with
    `istioctl`, `proxy-status` and the proxy config of each client pod in `namespaces`.

    No credential of the kubeconfig may reach the bundle: every file's text passes through a
    scrubber of its secret values (and what they base64-decode to). A part that cannot be read
    leaves `<file>.error` with the reason, and collection goes on.
    """
    bundle = _Bundle(directory, kubeconfig)
    bundle.write("kubeconfig.redacted.yaml", lambda: redacted_kubeconfig(kubeconfig))
    if applied is not None:
        bundle.write("applied.yaml", lambda: yaml.safe_dump_all([dict(d) for d in applied if d], sort_keys=False))
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


def _without_managed_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


# Manifests that are no suite's: provisioning's own (printed with its commands) and the local mesh's.
NOT_SUITES = ("istio/readiness/", "kind/", "local/")


def manifests_to_apply() -> list[tuple[str, list[str]]]:
    """Every manifest file a suite may apply, with the objects in it, for `--plan`."""
    listing: list[tuple[str, list[str]]] = []
    for path in manifests.all_files():
        name = path.relative_to(manifests.manifests_dir()).as_posix()
        if name.startswith(NOT_SUITES):
            continue
        docs: list[Any] = manifests.load_file(path)
        listing.append((name, [f"{d['kind']}/{d['metadata']['name']}" for d in docs]))
    return listing

