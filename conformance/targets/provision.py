"""Bringing a cluster with Istio up and down: a kind cluster created here, or an existing context.

Each provisioner deletes only what it created, and records how long each phase took.
"""

import logging
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from conformance import manifests
from conformance.errors import ConformanceError
from conformance.phases import Phases
from conformance.mesh_upgrade import UPGRADE_FEATURE, UPGRADE_MANIFEST, revision_name, upgrade_from, upgrade_gap
from conformance.names import CANARY_REVISION, DEFAULT_REVISION, ISTIO_NAMESPACE, ISTIO_REV, istiod_name
from conformance.settings import GATEWAY_API_RELEASES_ENV, ISTIO_RELEASES_ENV, RunSettings
from conformance.targets import gateway_api_crds, istio, istio_release, istio_support, kind, preflight
from conformance.targets.base import Doc
from conformance.targets.cluster import ClusterAccess
from conformance.targets.ingress import GatewayBinding
from conformance.targets.debug_bundle import DEBUG_TIMEOUT, Istioctl, collect_cluster_debug, scrub_tree
from conformance.targets.istio_revision import REVISION_FEATURE, Revision, injector_configuration
from conformance.targets.kube import RESTARTED_AT, Kube

log = logging.getLogger(__name__)

NODEPORTS = "kind/ingress-nodeports.yaml"


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
                  context: str | None = None, gateway_service_type: str | None = None) -> istio.IstioInstall:
    return istio.IstioInstall(
        version=settings.istio_version,
        kubeconfig=kubeconfig,
        method="helm" if settings.install_method == "helm" else "istioctl",
        context=context,
        release_dir=release_dir,
        timeout=settings.timeouts.install,
        gateway_service_type=gateway_service_type,
    )


def kind_istio_install(settings: RunSettings, kubeconfig: Path, release_dir: Path) -> istio.IstioInstall:
    """On kind the gateway is reached through a node port (NODEPORTS pins it after the install,
    for either method): kind maps its host ports to node ports, and gives no LoadBalancer an address."""
    return istio_install(settings, kubeconfig, release_dir, gateway_service_type="NodePort")


def wait_mesh_ready(kube: Kube, ingress_url: str, timeout: float, gateway: GatewayBinding = GatewayBinding()) -> None:
    """A freshly installed Istio is ready when its rollouts are done, its validation webhook
    refuses an invalid object, and its ingress gateway (its Gateways bound as `gateway` says)
    answers at `ingress_url`; each of them within `timeout`."""
    kube.wait_rollout(ISTIO_NAMESPACE, timeout)
    invalid = manifests.load(istio.INVALID_VIRTUALSERVICE)
    istio.wait_validation_webhook(lambda: kube.apply(invalid, "default"), lambda: kube.delete(invalid, "default"),
                                  timeout)
    readiness = gateway.bind(manifests.load(istio.READINESS_GATEWAY))
    kube.apply(readiness, ISTIO_NAMESPACE)
    try:
        istio.wait_ingress_answering(ingress_url, timeout)
    finally:
        kube.delete(readiness, ISTIO_NAMESPACE)


def gateway_api_release(settings: RunSettings, istio_version: str) -> gateway_api_crds.Release | None:
    return gateway_api_crds.release_for(istio_version, settings.gateway_api_releases)


def ensure_gateway_api(kube: Kube, settings: RunSettings, istio_version: str,
                       may_install: bool) -> gateway_api_crds.Outcome:
    """The Gateway API CRDs the features need: installed if absent and allowed (on a context meshconf
    did not create, only with --yes), else those features are NOT_SUPPORTED, saying why."""
    return gateway_api_crds.ensure(kube, gateway_api_release(settings, istio_version), istio_version,
                                   settings.cache_dir, settings.timeouts.install, may_install,
                                   "pass --yes to let meshconf install and later remove")


def check_versions(settings: RunSettings, kubernetes: str | None = None) -> str | None:
    """Refuse a Kubernetes with no pinned node image, or an Istio/Kubernetes pair outside Istio's
    support matrix (unless forced; then a warning). The Kubernetes checked is `kubernetes`, the API
    server's of a reused cluster, else the requested one; with --reuse, where the cluster may already
    run another, nothing is said of the pair until that is known (kubernetes=None: None)."""
    kind_cluster(settings)
    if kubernetes is None and settings.reuse:
        return None
    return istio_support.check_support(settings.istio_version, kubernetes or settings.kubernetes_version,
                                       settings.force)


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
        self.gateway_api = gateway_api_crds.Outcome()  # the Gateway API CRDs this run installed
        self._phases = Phases()

    def up(self) -> ClusterAccess:
        s = self.settings
        self.warning = None
        self._warn(check_versions(s))
        preflight.require(kind.preflight(timeouts=s.timeouts))
        # Decided before the download: a name clash, a busy port or the Kubernetes a reused cluster
        # runs fails in seconds, not after it.
        create = self.cluster.claim(reuse=s.reuse)
        if not create:
            with self._phases("cluster up"):
                # Our private kubeconfig may be missing or stale (a new API server port).
                self.cluster.export_kubeconfig()
            self.kube = Kube(self.cluster.kubeconfig, None, timeouts=s.timeouts)
            self._warn(check_versions(s, self.kube.server_version()))
        elif s.reuse:  # nothing to reuse: the cluster made runs the Kubernetes asked for
            self._warn(check_versions(s, s.kubernetes_version))
        with self._phases("istio release"):
            release = istio_release.fetch_release(s.istio_version, s.cache_dir, base_url=s.istio_releases,
                                                  timeout=s.timeouts.install)
        if create:
            with self._phases("cluster up"):
                self.cluster.create_new()
                self.created = True
            self.kube = Kube(self.cluster.kubeconfig, None, timeouts=s.timeouts)
        with self._phases("gateway api"):
            # meshconf owns a kind cluster: the CRDs go in before istiod starts watching for them.
            self.gateway_api = ensure_gateway_api(self._kube, s, s.istio_version, may_install=True)
        ingress_url = f"http://{kind.LISTEN_ADDRESS}:{self.cluster.http_port}"
        install = kind_istio_install(s, self.cluster.kubeconfig, release)
        self.istioctl = install.istioctl
        with self._phases("mesh up"):
            install.install()
            self._kube.apply(manifests.load(NODEPORTS), ISTIO_NAMESPACE)
            self._kube.apply(istio.addons(release), ISTIO_NAMESPACE)
            wait_mesh_ready(self._kube, ingress_url, s.timeouts.mesh_ready)
        return ClusterAccess(
            kubeconfig=self.cluster.kubeconfig,
            context=None,
            ingress_url=ingress_url,
            # What the API server runs: with --reuse the cluster may be older than the image table says.
            kubernetes_version=self._kube.server_version().lstrip("v"),
            mesh_version=s.istio_version,
            unsupported=self.gateway_api.unsupported,
            istio=install,  # meshconf's own mesh: a second revision may go beside it
            # kind maps the gateway's https nodePort (manifests/kind/ingress-nodeports.yaml) to this port.
            ingress_https_url=f"https://{kind.LISTEN_ADDRESS}:{self.cluster.https_port}",
        )

    def _warn(self, warning: str | None) -> None:
        """A forced mismatch: kept for the caller, and logged (a reused cluster's is known only here)."""
        if warning:
            self.warning = warning
            log.warning("%s", warning)

    @property
    def _kube(self) -> Kube:
        if self.kube is None:
            raise ConformanceError("the kind cluster is not up")
        return self.kube

    def down(self) -> None:
        with self._phases("teardown"):
            if self.kube is not None:
                if not self.created and not self.settings.keep:
                    # A reused cluster stays: what this run added to it goes (a deleted one takes it along).
                    gateway_api_crds.remove(self.kube, self.gateway_api)
                self.gateway_api = gateway_api_crds.Outcome()
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
        install = kind_istio_install(s, self.cluster.kubeconfig, s.cache_dir / f"istio-{s.istio_version}")
        return [
            f"# kind {kind.KIND_VERSION}, Kubernetes {s.kubernetes_version} ({self.cluster.image})",
            f"# kind config ({self.cluster.config_path}):",
            *("    " + line for line in yaml.safe_dump(self.cluster.config(), sort_keys=False).splitlines()),
            (f"# Istio {s.istio_version} from {istio_release.release_url(s.istio_version, s.istio_releases)} "
             f"(SHA-256 checked; releases base {s.istio_releases}, set ${ISTIO_RELEASES_ENV} for a mirror), "
             f"cached in {s.cache_dir}"),
            "# commands:",
            *(shlex.join(argv) for argv in (self.cluster.get_clusters_argv(), self.cluster.create_argv())),
            *([f"# --reuse: if cluster {self.cluster.name} exists, instead of creating it: "
               + shlex.join(self.cluster.export_kubeconfig_argv())] if s.reuse else []),
            self._gateway_api_plan(),
            *install.plan(),
            f"# server-side apply (field manager meshconf): {NODEPORTS}, samples/addons/prometheus.yaml "
            "(scrape interval 5s), samples/addons/kiali.yaml",
            f"# readiness: rollouts in {ISTIO_NAMESPACE}; the validation webhook refuses "
            f"{istio.INVALID_VIRTUALSERVICE}; with {istio.READINESS_GATEWAY} applied, the ingress gateway answers "
            f"http://{kind.LISTEN_ADDRESS}:{self.cluster.http_port} (host {istio.READINESS_HOST}) with its 404",
            *self._revision_plan(install),
            *self._upgrade_plan(install),
            "# teardown: " + (shlex.join(self.cluster.delete_argv()) if not s.keep else "none (--keep)"),
        ]

    def _revision_plan(self, install: istio.IstioInstall) -> list[str]:
        """The commands of the revision RevisionInjection's test installs, and what it waits for."""
        name = CANARY_REVISION
        return [
            f"# {REVISION_FEATURE}: a second control plane, revision {name}, istiod only, installed for "
            f"the test and removed after it (ready: Deployment {istiod_name(name)} rolled out, "
            f"MutatingWebhookConfiguration {injector_configuration(name)} patched with istiod's CA):",
            *Revision(install, name).plan(),
        ]

    def _upgrade_plan(self, install: istio.IstioInstall) -> list[str]:
        """MeshUpgrade's steps: the old Istio's revision installed, the namespace moved, its workloads
        restarted, the old revision removed; all but the install under load."""
        s = self.settings
        reason = upgrade_gap(s.upgrade_from, s.istio_version, s.kubernetes_version, s.force)
        if reason:
            return [f"# {UPGRADE_FEATURE}: NOT_SUPPORTED: {reason}"]
        old = upgrade_from(s.upgrade_from, s.istio_version)
        name = revision_name(old)
        release = s.cache_dir / f"istio-{old}" if install.method == "istioctl" else None
        revision = Revision(install, name, old, release)
        source = (f"istioctl from {istio_release.release_url(old, s.istio_releases)}, cached in {release}"
                  if release else f"chart istiod {old} from {istio.HELM_REPO}")
        return [
            f"# {UPGRADE_FEATURE}: Istio {old} ({source}) installed as revision {name} beside the mesh "
            f"(Istio {s.istio_version}), istiod only (ready as {REVISION_FEATURE}'s):",
            *(shlex.join(argv) for argv in revision.install_argvs()),
            f"# then {UPGRADE_MANIFEST} in a new namespace labelled {ISTIO_REV}={name}; under continuous load from the "
            f"Bookinfo client: label the namespace {ISTIO_REV}={DEFAULT_REVISION}, restart its Deployments "
            f"(pod template annotation {RESTARTED_AT}), wait until every pod is on revision {DEFAULT_REVISION}, then:",
            *(shlex.join(argv) for argv in revision.uninstall_argvs()),
        ]

    def _gateway_api_plan(self) -> str:
        s = self.settings
        release = gateway_api_release(s, s.istio_version)
        features = ", ".join(gateway_api_crds.FEATURES)
        if release is None:
            return (f"# Gateway API: no release known for Istio {s.istio_version}; without its CRDs on the "
                    f"cluster, {features} {'is' if len(gateway_api_crds.FEATURES) == 1 else 'are'} NOT_SUPPORTED")
        kept = "" if s.keep else "; a reused cluster loses them again at teardown"
        return (f"# if the cluster lacks CRD {gateway_api_crds.HTTPROUTE_CRD}: server-side apply "
                f"{release.describe()}, those of its objects the cluster lacks, cached in {s.cache_dir} "
                f"(set ${GATEWAY_API_RELEASES_ENV} for a mirror){kept}")


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

