"""The Target protocol on a Kubernetes cluster with Istio (kind or an existing kubeconfig context).

Provisioning differs per target (a kind cluster created here, or a context that
exists); everything after it is the same Kubernetes and Istio operations.
"""

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from conformance.errors import ConformanceError, cleanup_after
from conformance.mesh_upgrade import UPGRADE_FEATURE, upgrade_gap
from conformance.names import ISTIO_NAMESPACE, PROXY_CONTAINER, RUN_ID_LABEL, SIDECAR_STATUS_ANNOTATION
from conformance.probes import curl_batch
from conformance.probes.batches import HostClient
from conformance.settings import RunSettings
from conformance.targets.base import Batch, Client, Doc, HttpsIngress, PodView, TargetFacts
from conformance.targets import make_before_break
from conformance.targets.gateway_api_ingress import KUBERNETES_INGRESS_FEATURE, ingress_gap, reach_cluster_gateway
from conformance.targets.ingress import GatewayBinding
from conformance.targets.istio import IstioInstall
from conformance.targets.istio_revision import REVISION_FEATURE, InstalledRevision, beside, installed_revision, not_ours
from conformance.targets.kube import Kube
from conformance.targets.kube_views import pod_view
from conformance.targets.telemetry import Telemetry

# The feature that applies mesh-wide policy (a PeerAuthentication in the root namespace), which
# every workload of the cluster sees while it holds.
MESH_WIDE_FEATURE = "MutualTLSStrict"
# The feature that needs the ingress gateway's HTTPS port, and why it cannot run without one.
TLS_FEATURE = "IngressTLS"
NO_HTTPS_INGRESS = ("the ingress gateway's Service has no port named https with a numbered targetPort (the test "
                    "host reaches HTTPS at its LoadBalancer address, else through a port-forward to that targetPort)")


@dataclass(frozen=True)
class ClusterAccess:
    """What provisioning hands on: how to reach the cluster and its ingress."""

    kubeconfig: Path
    context: str | None
    ingress_url: str
    kubernetes_version: str | None
    mesh_version: str
    # The ingress gateway's pod label and HTTP targetPort: Istio Gateways are bound to them on apply
    # (targets/ingress.py); by default the manifests' own.
    gateway_selector: Mapping[str, str] = field(default_factory=lambda: dict(GatewayBinding().selector))
    gateway_port: int = GatewayBinding().port
    # Features this cluster cannot run, each with why and how to change that (e.g. no Gateway API CRDs).
    unsupported: Mapping[str, str] = field(default_factory=dict)
    # The Istio installation meshconf made, which a second revision is installed like; None when the
    # mesh is not meshconf's (then REVISION_FEATURE is in `unsupported`).
    istio: IstioInstall | None = None
    # The ingress gateway's HTTPS URL (None: it has no HTTPS port the test host can reach), and the
    # namespace of its pods, where the Secrets its Gateways' credentialName names must be.
    ingress_https_url: str | None = None
    gateway_namespace: str = ISTIO_NAMESPACE
    gateway_https_port: int = GatewayBinding().https_port

    @property
    def gateway(self) -> GatewayBinding:
        return GatewayBinding(dict(self.gateway_selector), self.gateway_port, self.gateway_https_port)


class Provisioner(Protocol):
    """Brings a cluster with Istio up and down; deletes only what it created."""

    name: str

    def up(self) -> ClusterAccess: ...
    def down(self) -> None: ...
    def collect_debug(self, directory: Path, namespaces: Sequence[str] = (),
                      applied: Sequence[Doc] | None = None) -> None: ...
    def phases(self) -> Mapping[str, float]: ...


class ExecClient:
    """A client pod; one send() is ONE exec of a shell loop of curls, never one exec per request."""

    def __init__(self, kube: Kube, pod: PodView, container: str, request_timeout: float) -> None:
        self.kube, self.pod, self.container = kube, pod, container
        self.name = pod.labels.get("app", pod.name)
        self.namespace = pod.namespace
        self._timeout = request_timeout

    def send(self, url: str, count: int = 1, concurrency: int = 1, headers: Mapping[str, str] | None = None,
             method: str = "GET", body: str | None = None) -> Batch:
        argv = curl_batch.command(url, count, concurrency, headers, method, body, self._timeout)
        waves = -(-count // max(1, concurrency))
        result = self.kube.exec(self.pod.name, self.namespace, self.container, argv,
                                timeout=self._timeout * waves + 30)
        replies = curl_batch.parse(result.stdout)
        if result.exit_code != 0 or len(replies) != count:
            raise ConformanceError(
                f"batch in {self.namespace}/{self.pod.name} ended with exit {result.exit_code} and "
                f"{len(replies)} of {count} replies: {result.stderr.strip()[-300:]}"
            )
        return Batch(url=url, client=f"{self.namespace}/{self.pod.name}", replies=tuple(replies),
                     request_headers=dict(headers or {}))


class ClusterTarget:
    def __init__(self, settings: RunSettings, provisioner: Provisioner,
                 kube_factory: Any = Kube) -> None:
        self.name = provisioner.name
        self.settings = settings
        self.timeouts = settings.timeouts
        self.provisioner = provisioner
        self._kube_factory = kube_factory
        self.access: ClusterAccess | None = None
        self._kube: Kube | None = None
        # What this run created and applied: the debug bundle describes exactly that.
        self._namespaces: list[str] = []
        self._applied: list[Doc] = []
        self._deployed = False  # whether a wait_ready() has run: the first pulls onto fresh nodes

    # -- lifecycle -------------------------------------------------------------

    def up(self) -> None:
        try:
            self.access = self.provisioner.up()
            self._kube = self._kube_factory(self.access.kubeconfig, self.access.context, timeouts=self.timeouts)
        except Exception as exc:
            bundle = self._bring_up_bundle()
            self.down()  # a half-provisioned cluster is removed (when this run created it)
            raise ConformanceError(f"{exc}; debug bundle: {bundle}") from exc
        except BaseException:
            self.down()
            raise

    def _bring_up_bundle(self) -> Path:
        """Evidence of a failed bring-up, kept on disk before the cluster goes away."""
        directory = self.settings.debug_dir / f"bring-up-{self.settings.run_id}"
        try:
            self.provisioner.collect_debug(directory)
        except Exception as exc:  # the bundle must never hide the failure it documents
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "collect.error").write_text(f"{exc}\n")
        return directory

    def down(self) -> None:
        if self._kube is not None:
            self._kube.close()
            self._kube = None
        self.provisioner.down()

    def facts(self) -> TargetFacts:
        access = self._access
        gateway = access.gateway
        return TargetFacts(
            target=self.name,
            mode=f"Kubernetes cluster ({self.name}) with Istio"
                 + ("" if gateway.is_the_manifests else f"; {gateway.describe()}"),
            mesh="istio",
            mesh_version=access.mesh_version,
            envoy_version="istio-proxy",
            kubernetes_version=access.kubernetes_version,
            context=access.context,
        )

    def phases(self) -> Mapping[str, float]:
        return self.provisioner.phases()

    @property
    def _access(self) -> ClusterAccess:
        if self.access is None:
            raise ConformanceError(f"the {self.name} target is not up")
        return self.access

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            raise ConformanceError(f"the {self.name} target is not up")
        return self._kube

    # -- configuration -----------------------------------------------------------

    def apply(self, docs: Sequence[Doc], namespace: str) -> None:
        docs = self._access.gateway.bind(docs)
        self._applied.extend(docs)
        # Make-before-break: DestinationRules, and their subsets in the proxies, before the routes.
        first, routes = make_before_break.apply_phases(docs)
        self.kube.apply(first, namespace)
        if routes:
            self._wait_subsets(first, namespace, present=True)
            self.kube.apply(routes, namespace)

    def delete(self, docs: Sequence[Doc], namespace: str) -> None:
        # The reverse: routes out of the proxies before the subsets they name.
        routes, rest = make_before_break.delete_phases(docs)
        if routes:
            try:
                self.kube.delete(routes, namespace)
                self._wait_subsets(rest, namespace, present=False)
            except BaseException as failure:
                # The subsets go anyway: left behind they would reach the session namespace's later tests.
                cleanup_after(failure, f"delete the rest in {namespace}", lambda: self.kube.delete(rest, namespace))
                raise
        self.kube.delete(rest, namespace)

    def _wait_subsets(self, docs: Sequence[Doc], namespace: str, present: bool) -> None:
        """Until every ready sidecar of `namespace` has the subsets' clusters (present), or no route
        naming them (not present); Istio's documentation says "wait a few seconds", this waits for it."""
        markers = make_before_break.subset_clusters(docs, namespace)
        path = make_before_break.CLUSTERS_PATH if present else make_before_break.ROUTES_PATH
        # What a sidecar that left during the wait reads as: nothing left to wait for in it.
        settled = "\n".join(markers) if present else ""

        def read(pod: str) -> str:
            try:
                return self._pilot_agent(pod, namespace, path)
            except ConformanceError:
                if pod in self._sidecars(namespace):
                    raise
                return settled  # gone or no longer ready (a rollout, a pod terminating): takes no traffic

        make_before_break.wait_for_proxies(
            read, lambda: self._sidecars(namespace), path, markers, present,
            self.timeouts.consistency, self.timeouts.poll,
            f"DestinationRule subsets {'in' if present else 'out of'} the routes of the sidecars in {namespace}")

    def _sidecars(self, namespace: str) -> list[str]:
        """The ready pods of `namespace` with an istio-proxy: a container, or an init container when
        Istio injects native sidecars (restartPolicy Always; the default from Istio 1.27 on Kubernetes
        1.33+, istio/istio pkg/kube/inject/inject.go)."""
        pods = self.kube.pods(namespace)
        proxied = [p for p in pods if PROXY_CONTAINER in (*p.containers, *p.init_containers)]
        injected = [p.name for p in pods if SIDECAR_STATUS_ANNOTATION in p.annotations]
        if injected and not proxied:
            # A wait over no sidecar would pass at once: better to say the sidecars cannot be found.
            raise ConformanceError(
                f"pods {', '.join(injected)} in {namespace} are injected ({SIDECAR_STATUS_ANNOTATION}) but none has "
                f"a container or init container {PROXY_CONTAINER}: cannot wait for their sidecars")
        return [p.name for p in proxied if p.ready]

    def exists(self, doc: Doc, namespace: str) -> bool:
        return self.stored(doc, namespace) is not None

    def stored(self, doc: Doc, namespace: str) -> dict[str, Any] | None:
        """The object of doc's kind and name as the API server holds it (in `namespace`), or None."""
        meta = doc["metadata"]
        return self.kube.get(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace") or namespace)

    # -- admission ---------------------------------------------------------------------

    def webhook_configurations(self) -> list[dict[str, Any]]:
        return self.kube.webhook_configurations()

    def admitted_pod(self, doc: Doc, namespace: str) -> PodView:
        if doc.get("kind") != "Pod" or doc.get("apiVersion") != "v1":
            raise ConformanceError(f"admitted_pod takes a v1 Pod, not {doc.get('apiVersion')} {doc.get('kind')}")
        return pod_view(self.kube.dry_run_create(doc, namespace))

    def revision(self, name: str, version: str | None = None) -> AbstractContextManager[InstalledRevision]:
        mesh, reason = self._access.istio, self.unsupported_reason(REVISION_FEATURE)
        if mesh is None or reason is not None:
            raise ConformanceError(f"cannot install Istio revision {name}: {reason}")
        s = self.settings
        return installed_revision(self.kube, beside(mesh, name, version, s.cache_dir, s.istio_releases), self.timeouts)

    def relabel_namespace(self, name: str, labels: Mapping[str, str | None]) -> None:
        self.kube.label_namespace(name, labels, self.settings.run_id)

    def restart_workloads(self, namespace: str) -> list[str]:
        restarted = self.kube.restart_deployments(namespace)
        self.kube.wait_rollout(namespace, self.timeouts.rollout)
        return restarted

    @contextmanager
    def namespace(self, name: str, labels: Mapping[str, str]) -> Iterator[str]:
        # Every namespace a run creates carries its run id: only those are ever deleted.
        self.kube.create_namespace(name, {**labels, RUN_ID_LABEL: self.settings.run_id})
        self._namespaces.append(name)
        try:
            yield name
        finally:
            self.kube.delete_namespace(name, self.settings.run_id)
            self._namespaces.remove(name)

    def wait_ready(self, namespace: str, first_pull: bool = False) -> None:
        budget = self.timeouts.rollout if self._deployed and not first_pull else self.timeouts.first_deploy
        self._deployed = True
        self.kube.wait_rollout(namespace, budget)

    # -- observation -------------------------------------------------------------

    def pods(self, namespace: str) -> list[PodView]:
        return self.kube.pods(namespace)

    def _pod(self, name: str, namespace: str) -> PodView:
        pods = self.kube.pods(namespace)
        for match in (lambda p: p.name == name, lambda p: p.labels.get("app") == name):
            found = [p for p in pods if match(p) and p.ready]
            if found:
                return found[0]
        raise ConformanceError(f"no ready pod {name!r} in namespace {namespace!r}")

    def _pilot_agent(self, pod: str, namespace: str, path: str) -> str:
        view = self._pod(pod, namespace)
        result = self.kube.exec(view.name, namespace, PROXY_CONTAINER,
                                ["pilot-agent", "request", "GET", path], timeout=self.timeouts.request)
        if result.exit_code != 0:
            raise ConformanceError(f"pilot-agent request GET {path} in {namespace}/{view.name}: {result.stderr[-300:]}")
        return result.stdout

    def proxy_stats(self, pod: str, namespace: str) -> str:
        return self._pilot_agent(pod, namespace, "stats")

    def proxy_config(self, pod: str, namespace: str) -> dict[str, Any]:
        return json.loads(self._pilot_agent(pod, namespace, "config_dump"))

    # Telemetry addons (Istio's samples/addons), through a port-forward. A cluster without them
    # does not support the features that read them (telemetry.missing_addons).

    def prometheus_unavailable(self) -> str | None:
        return None

    def prometheus_query(self, promql: str) -> list[dict[str, Any]]:
        return Telemetry(self.kube, self.timeouts.request).prometheus_query(promql)

    def kiali_graph(self, namespace: str, duration: int) -> dict[str, Any]:
        return Telemetry(self.kube, self.timeouts.request).kiali_graph(namespace, duration)

    def logs(self, pod: str, namespace: str) -> str:
        view = self._pod(pod, namespace)
        return "\n".join(f"--- {c} ---\n{self.kube.logs(view.name, namespace, c)}"
                         for c in (*view.containers, *view.init_containers))

    def collect_debug(self, directory: Path) -> None:
        self.provisioner.collect_debug(directory, list(self._namespaces), list(self._applied))

    # -- traffic -------------------------------------------------------------------

    def client(self, name: str, namespace: str) -> Client:
        pod = self._pod(name, namespace)
        container = next((c for c in pod.containers if c != PROXY_CONTAINER), pod.containers[0])
        return ExecClient(self.kube, pod, container, self.timeouts.request)

    def outside_client(self) -> Client:
        return HostClient(self.timeouts.request)

    def ingress_url(self) -> str:
        return self._access.ingress_url

    def https_ingress(self) -> HttpsIngress:
        access = self._access
        if access.ingress_https_url is None:
            raise ConformanceError(NO_HTTPS_INGRESS)
        return HttpsIngress(access.ingress_https_url, access.gateway_namespace)

    def gateway_api_url(self, gateway: str, namespace: str, port: int) -> AbstractContextManager[str]:
        return reach_cluster_gateway(self.kube, gateway, namespace, port, self.timeouts)

    def supports(self, feature: str) -> bool:
        # Istio implements every feature in the catalogue; the cluster may lack what one needs.
        return self.unsupported_reason(feature) is None

    def unsupported_reason(self, feature: str) -> str | None:
        access = self._access
        if feature in (REVISION_FEATURE, UPGRADE_FEATURE) and access.istio is None:  # nothing to install a revision with
            return access.unsupported.get(REVISION_FEATURE, not_ours(access.context))
        if feature == UPGRADE_FEATURE:
            s = self.settings
            reason = upgrade_gap(s.upgrade_from, access.mesh_version, access.kubernetes_version, s.force)
            if reason:
                return reason
        if feature == MESH_WIDE_FEATURE and self.settings.worker:
            # Workers share the cluster: a mesh-wide policy would reach the others' namespaces.
            return (f"it applies a mesh-wide PeerAuthentication, which the other workers' tests would see; "
                    f"run it without -n (this is worker {self.settings.worker})")
        if feature == TLS_FEATURE and access.ingress_https_url is None:
            return NO_HTTPS_INGRESS
        if feature == KUBERNETES_INGRESS_FEATURE:
            reason = ingress_gap(access.gateway.selector)
            if reason:
                return reason
        return access.unsupported.get(feature)
