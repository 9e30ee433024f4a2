"""The kubeconfig target's provisioning: an existing cluster, reached through a named context.

Rules (README, "On an existing cluster"): the cluster is never created or deleted;
only namespaces labelled with the run's id are; Istio is assumed installed unless
--install-mesh is given, and installing or removing a mesh on a context meshconf
did not create needs --yes. The ingress gateway is found as targets/ingress.py says.
"""

import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from conformance.errors import ConformanceError, TargetUnavailable
from conformance.names import INGRESS_GATEWAY_LABEL, ISTIO_NAMESPACE
from conformance.settings import RunSettings
from conformance.targets import gateway_api_crds, ingress, istio, istio_release, istio_support, versions
from conformance.targets.base import Doc
from conformance.targets.cluster import MESH_WIDE_FEATURE, TLS_FEATURE, ClusterAccess
from conformance.targets.kube import Kube
from conformance.targets.debug_bundle import DEBUG_TIMEOUT, Istioctl, cached_istioctl, collect_cluster_debug
from conformance.targets.gateway_api_ingress import KUBERNETES_INGRESS_FEATURE
from conformance.targets.istio_revision import REVISION_FEATURE, not_ours
from conformance.phases import Phases
from conformance.targets.provision import ensure_gateway_api, istio_install, wait_mesh_ready
from conformance.targets.telemetry import missing_addons

# An image tag is the Istio version, optionally with the image variant after a "-"
# (istio/istio manifests/charts/istio-control/istio-discovery/templates/deployment.yaml:
# <hub>/pilot:<tag>[-<variant>], variants "debug" and "distroless" per its values.yaml).
IMAGE_VARIANTS = ("debug", "distroless")
# Istio's own pre-releases, e.g. 1.30.0-rc.1 (istio/istio release tags).
PRE_RELEASES = ("alpha", "beta", "rc")
# The charts also label istiod with the chart's appVersion (zzz_profile.yaml, istio.labels).
VERSION_LABEL = "app.kubernetes.io/version"


def user_kubeconfig() -> Path:
    """The file kubectl would use; read only (Kube never writes it back)."""
    first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(first) if first else Path.home() / ".kube" / "config"


class ExistingClusterProvisioner:
    name = "kubeconfig"

    def __init__(self, settings: RunSettings, kubeconfig: Path | None = None) -> None:
        if not settings.context:
            raise ConformanceError("the kubeconfig target needs --context NAME (the context to test)")
        self.settings = settings
        self.kubeconfig = kubeconfig or user_kubeconfig()
        self.kube: Kube | None = None
        self.installed: istio.IstioInstall | None = None
        self.addons: list[Doc] = []  # the telemetry addons we applied with the mesh we installed
        self.mesh_version = settings.istio_version  # replaced by the detected one in up()
        self.gateway: ingress.IngressGateway | None = None
        self.gateway_api = gateway_api_crds.Outcome()  # the Gateway API CRDs we installed, or why none
        self._stack = ExitStack()
        self._phases = Phases()

    def up(self) -> ClusterAccess:
        s = self.settings
        self.kube = Kube(self.kubeconfig, s.context, timeouts=s.timeouts)
        kubernetes = self.kube.server_version()
        if s.install_mesh:
            self._install(kubernetes)
            version = s.istio_version
        else:
            version = self._installed_version()
        self.mesh_version = version
        self.gateway = self._find_gateway()
        ingress_url, https_url = self._ingress_urls(self.gateway)
        binding = self.gateway.binding  # what every Gateway applied from now on is bound to
        if self.installed is not None:
            # A mesh we installed is waited for like on kind; an assumed one is used as it is.
            with self._phases("mesh ready"):
                wait_mesh_ready(self._kube, ingress_url, s.timeouts.mesh_ready, binding)
        self.gateway_api = ensure_gateway_api(self._kube, s, version, may_install=s.yes)
        return ClusterAccess(self.kubeconfig, s.context, ingress_url, kubernetes.lstrip("v"), version,
                             gateway_selector=dict(binding.selector), gateway_port=binding.port,
                             unsupported={**self.gateway_api.unsupported, **self._revision_unsupported(),
                                          **self._mesh_wide_unsupported(),
                                          **self._shared_objects_unsupported(self.gateway.namespace),
                                          **missing_addons(self._kube)},
                             istio=self.installed,
                             # None without an https port: then IngressTLS is NOT_SUPPORTED (cluster.py).
                             ingress_https_url=https_url, gateway_namespace=self.gateway.namespace,
                             gateway_https_port=binding.https_port)

    def _revision_unsupported(self) -> dict[str, str]:
        """A second revision goes only beside a mesh meshconf installed (consent given with --yes)."""
        if self.installed is not None:
            return {}
        return {REVISION_FEATURE: not_ours(self.settings.context)}

    def _mesh_wide_unsupported(self) -> dict[str, str]:
        """A mesh-wide PeerAuthentication changes every workload's policy for a moment: only with --yes."""
        if self.settings.yes:
            return {}
        return {MESH_WIDE_FEATURE: (
            f"it applies a mesh-wide PeerAuthentication (STRICT, in {ISTIO_NAMESPACE}) for a few seconds, which "
            f"every workload of context {self.settings.context!r} would see; pass --yes to allow it")}

    def _shared_objects_unsupported(self, gateway_namespace: str) -> dict[str, str]:
        """Features that create objects outside the run's namespaces, which the run's namespace
        cleanup would not reach and other users of the context would see: only with --yes."""
        if self.settings.yes:
            return {}
        context = self.settings.context
        return {
            TLS_FEATURE: (
                f"it creates a Secret (a test certificate and its private key) in the ingress gateway's namespace "
                f"{gateway_namespace} and adds an HTTPS server to the shared ingress gateway of context {context!r}; "
                "pass --yes to allow it"),
            KUBERNETES_INGRESS_FEATURE: (
                f"it creates the cluster-scoped IngressClass istio when context {context!r} has none, and an Ingress "
                "that the shared ingress gateway serves; pass --yes to allow it"),
        }

    def _install(self, kubernetes: str) -> None:
        s = self.settings
        require_consent(s, f"install Istio {s.istio_version}")
        if self._kube.get("apps/v1", "Deployment", "istiod", ISTIO_NAMESPACE) is not None:
            # Installing over it, then uninstalling at the end, would remove a mesh we did not install.
            raise ConformanceError(
                f"Istio is already installed on context {s.context!r} (Deployment istiod in {ISTIO_NAMESPACE}); "
                "drop --install-mesh to test it as it is"
            )
        istio_support.check_support(s.istio_version, kubernetes, s.force)
        with self._phases("mesh up"):
            release = istio_release.fetch_release(s.istio_version, s.cache_dir, base_url=s.istio_releases,
                                                  timeout=s.timeouts.install)
            install = istio_install(s, self.kubeconfig, release, context=s.context)
            self.installed = install  # set first: a failed install is still uninstalled at down()
            install.install()
            self.addons = istio.addons(release)
            self._kube.apply(self.addons, ISTIO_NAMESPACE)
            # Helm installs the gateway without waiting for it (IstioInstall.helm_argvs): its pods,
            # which a port-forward to the gateway needs, are waited for here with the rest.
            self._kube.wait_rollout(ISTIO_NAMESPACE, s.timeouts.mesh_ready)

    def _installed_version(self) -> str:
        istiod = self._kube.get("apps/v1", "Deployment", "istiod", ISTIO_NAMESPACE)
        if istiod is None:
            raise TargetUnavailable(
                f"no Istio on context {self.settings.context!r} (no Deployment istiod in {ISTIO_NAMESPACE}); "
                "install it, or pass --install-mesh --yes to let meshconf install it"
            )
        return istiod_version(istiod)

    def _find_gateway(self) -> ingress.IngressGateway:
        """The gateway named by --ingress-namespace/--ingress-selector, else the known one found;
        with a mesh we installed, ours unless named otherwise."""
        s = self.settings
        if self.installed is not None:
            return ingress.find(self._kube, s.ingress_namespace or ISTIO_NAMESPACE,
                                s.ingress_selector or "=".join(INGRESS_GATEWAY_LABEL))
        return ingress.find(self._kube, s.ingress_namespace, s.ingress_selector)

    def _ingress_urls(self, gateway: ingress.IngressGateway) -> tuple[str, str | None]:
        """The gateway's HTTP and HTTPS URLs (HTTPS None without an https port): its LoadBalancer
        address on the http2 and https ports, else port-forwards to those ports' targetPorts on one
        ready gateway pod, held for the whole run."""
        if gateway.url is not None:
            return gateway.url, gateway.https_url
        pod = self._ready_gateway_pod(gateway)
        http_url = self._forwarded_url("http", pod, gateway.namespace, gateway.target_port)
        if gateway.https_target_port is None:
            return http_url, None
        # The pods' https targetPort is where the bound Gateways' HTTPS servers listen (ingress.py):
        # a client connects to the forward and sends the test host as SNI and Host.
        return http_url, self._forwarded_url("https", pod, gateway.namespace, gateway.https_target_port)

    def _ready_gateway_pod(self, gateway: ingress.IngressGateway) -> str:
        pods = self._kube.ready_pods(gateway.namespace, gateway.selector)
        if not pods:
            raise TargetUnavailable(
                f"no ready ingress gateway pod ({', '.join(f'{k}={v}' for k, v in gateway.selector.items())}) "
                f"in {gateway.namespace} on {self.settings.context!r}"
            )
        return pods[0].name

    def _forwarded_url(self, scheme: str, pod: str, namespace: str, pod_port: int) -> str:
        """A port-forward to the pod's port, closed at down()."""
        host, port = self._stack.enter_context(self._kube.port_forward(pod, namespace, pod_port))
        return f"{scheme}://{host}:{port}"

    @property
    def _kube(self) -> Kube:
        if self.kube is None:
            raise ConformanceError("the cluster is not connected")
        return self.kube

    def down(self) -> None:
        with self._phases("teardown"):
            self._stack.close()
            if self.kube is not None and not self.settings.keep:
                gateway_api_crds.remove(self.kube, self.gateway_api)
            if self.installed is not None and not self.settings.keep:
                if self.addons and self.kube is not None:
                    self.kube.delete(self.addons, ISTIO_NAMESPACE)  # istioctl/helm uninstall leaves them
                self.installed.uninstall()
                self.installed = None
            if self.kube is not None:
                self.kube.close()
                self.kube = None

    def collect_debug(self, directory: Path, namespaces: Sequence[str] = (),
                      applied: Sequence[Doc] | None = None) -> None:
        istioctl = Istioctl(self._istioctl(), self.kubeconfig, self.settings.context, DEBUG_TIMEOUT)
        collect_cluster_debug(self.kube, directory, self.kubeconfig, namespaces, applied, istioctl)

    def _istioctl(self) -> str:
        """The istioctl of the mesh under test: ours if we installed it, else a cached release of
        its version, else the one on PATH."""
        if self.installed is not None:
            return self.installed.istioctl
        return cached_istioctl(self.settings, self.mesh_version)

    def phases(self) -> Mapping[str, float]:
        return dict(self._phases.seconds)


def istiod_version(deployment: Mapping[str, Any]) -> str:
    """The Istio version of an istiod Deployment: its image's tag without the variant, else (an
    image pinned by digest alone) the chart's version label, else "unknown"."""
    image = str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]  # a registry's ":port" is before the last "/"
    version = _tag_version(name.partition(":")[2])
    if version:
        return version
    labels = (deployment.get("metadata") or {}).get("labels") or {}
    return str(labels.get(VERSION_LABEL) or "unknown")


def _tag_version(tag: str) -> str | None:
    """'1.28.1' of the tag '1.28.1-distroless', '1.30.0-rc.1' of '1.30.0-rc.1-debug'; None for a tag
    that is no Istio release (latest, a build's hash)."""
    for variant in IMAGE_VARIANTS:
        tag = tag.removesuffix(f"-{variant}")
    parsed = versions.parse(tag)
    if parsed is None or parsed.patch is None or parsed.build or not _istio_pre_release(parsed.pre_release):
        return None
    return str(parsed).removeprefix("v")


def _istio_pre_release(pre_release: str) -> bool:
    """'' (a release) or Istio's <alpha|beta|rc>.<n>."""
    stage, _, number = pre_release.partition(".")
    return not pre_release or (stage in PRE_RELEASES and number.isdigit())


def require_consent(settings: RunSettings, action: str) -> None:
    """Installing or removing a mesh on a context meshconf did not create needs --yes."""
    if not settings.yes:
        raise ConformanceError(
            f"refusing to {action} on context {settings.context!r}, which meshconf did not create; "
            "pass --yes to allow it"
        )


def preflight(settings: RunSettings, kubeconfig: Path | None = None) -> None:
    """Before anything starts: the context exists, and consent was given where it is needed."""
    path = kubeconfig or user_kubeconfig()
    if not path.is_file():
        raise TargetUnavailable(f"kubeconfig {path} does not exist (set KUBECONFIG or create it)")
    contexts = [c.get("name") for c in (yaml.safe_load(path.read_text()) or {}).get("contexts") or []]
    if settings.context not in contexts:
        raise TargetUnavailable(f"context {settings.context!r} is not in {path} (contexts: {', '.join(contexts) or 'none'})")
    if settings.install_mesh:
        require_consent(settings, f"install Istio {settings.istio_version}")
