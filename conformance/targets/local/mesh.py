"""The local reference mesh: a store of applied objects, running pods, and config pushes."""

import copy
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceError
from conformance.targets.local import workloads
from conformance.targets.local.credentials import KeptCredentials
from conformance.targets.local.admission.control import AdmissionControl
from conformance.targets.local.admission.review import AdmissionRefused
from conformance.targets.local.gateway_deployer import with_deployed_gateways
from conformance.targets.local.mesh_state import mesh_state, write_registry
from conformance.webhooks import CONFIGURATION_KINDS
from conformance.targets.local.model import MeshState, Pod
from conformance.targets.local.objects import (SYSTEM_NAMESPACES, Key, namespace_doc, namespace_key, namespace_of,
                                               object_key)
from conformance.targets.local.pods import (AddressPool, PodKey, RunningPod, new_running_pod, pod_document, pod_key,
                                            pod_model, pod_name, probe_readiness, waiting_for)
from conformance.targets.local.processes import Supervisor
from conformance.targets.local.telemetry.mesh_telemetry import MeshTelemetry, with_access_log
from conformance.targets.local.translator import ProxyConfig, Translation
from conformance.targets.local.restarts import changes_config, restart_abruptly
from conformance.targets.local.translator.mutants import SHARED_ACCOUNT, SHARED_IDENTITY, SWITCH_DROPS_REQUESTS
from conformance.targets.local.validate import check_document
from conformance.targets.local.xds.bootstrap import node_id
from conformance.targets.local.xds.secrets import MeshCA, sds_secrets
from conformance.targets.local.xds.server import ControlPlane
from conformance.targets.local.xds.snapshot import Snapshots
from conformance.waiting import wait_for

WorkloadKey = tuple[str, str]  # namespace, Deployment name
# How often pods' readiness is probed: the local stand-in for a kubelet's readiness probe period.
READINESS_PERIOD = 0.1
# How long a push waits for the Envoys it changed to ACK or NACK it. Envoy applies a push within
# milliseconds; the rest is room for a machine slowed by parallel runs.
ACK_TIMEOUT = 10.0
# istiod's plaintext xDS port; the mesh's control plane listens on it at the mesh's own address.
XDS_PORT = 15010
# How long stop() waits for the readiness watcher to finish its round: its probes time out
# after a second each, and teardown must not hang on one that hangs.
WATCHER_JOIN_TIMEOUT = 5.0


class LocalMesh:
    def __init__(self, run_dir: Path, mutants: frozenset[str] = frozenset()) -> None:
        self.run_dir = run_dir
        self.mutants = mutants
        self.supervisor = Supervisor()
        self.addresses = AddressPool()
        try:
            # The mesh's CA, and each proxy's SDS secrets from it (node id -> name -> Secret), as
            # istio-agent holds its workload's certificate for its Envoy.
            self.ca = MeshCA()
            self.control_plane = ControlPlane(self.addresses.control_plane, XDS_PORT)
            try:
                self.admission = AdmissionControl(self.ca, self.addresses.control_plane, mutants)
            except BaseException:
                self.control_plane.stop()
                raise
        except BaseException:
            self.addresses.release()
            raise
        try:
            # Istio's metrics made from the proxies' access logs, and Prometheus if this machine has it.
            self.telemetry = MeshTelemetry(run_dir, self.addresses.control_plane, self.supervisor, mutants)
        except BaseException:
            self.admission.stop()
            self.control_plane.stop()
            self.addresses.release()
            raise
        self._snapshots = Snapshots()
        self._last_changed: list[str] = []  # node ids the last push changed
        self._secrets: dict[str, dict[str, dict[str, Any]]] = {}
        self._credentials = KeptCredentials()  # gateways' credentialName secrets, as Envoy keeps them
        self.registry = run_dir / "registry.json"
        self.objects: dict[Key, dict[str, Any]] = {}
        self.pods: dict[WorkloadKey, list[RunningPod]] = {}
        # Readiness as last published to the proxies; a pod not in it is not ready yet.
        self._ready: dict[PodKey, bool] = {}
        # Readiness is watched from a thread of its own, which never starts a process (a
        # child is tied to the thread that started it); the lock orders its pushes with the
        # caller's changes, its probes run outside it.
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        # The readiness watcher's last failed round, for wait_ready to report; None after a good one.
        self.watch_error: str | None = None
        self._watcher = threading.Thread(target=self._watch_readiness, name="meshconf-readiness", daemon=True)
        self._watcher.start()
        try:
            # Every mesh starts with Istio's webhooks, served by its own istiod.
            self.apply([*(namespace_doc(name, {}) for name in SYSTEM_NAMESPACES),
                        *self.admission.istiod_webhooks()], "")
        except BaseException:
            self.stop()
            raise

    # -- configuration -------------------------------------------------------

    def apply(self, docs: Sequence[Mapping[str, Any]], namespace: str) -> None:
        """Validate every document first, so a refused one leaves nothing half-applied.

        Some refusals only come from translating the documents together (a route the
        translator cannot build): then the previous objects are restored and pushed again,
        so a refused document never stays to break later pushes.
        """
        given = [(dict(doc), namespace_of(doc, namespace)) for doc in docs]
        new_namespaces = {d["metadata"]["name"] for d, _ in given if d.get("kind") == "Namespace"}
        with self._lock:
            webhook_docs = self._webhook_docs()
            placed = [(self._admit(doc, ns, new_namespaces, webhook_docs), ns) for doc, ns in given]
            before = dict(self.objects)
            for doc, ns in placed:
                if ns:
                    doc.setdefault("metadata", {})["namespace"] = ns
                self.objects[object_key(doc, ns)] = doc
            try:
                self._reconcile()
                self._after_config_change(docs)
            except ConformanceError as refused:
                self.objects = before
                try:
                    self._reconcile()
                except ConformanceError as restoring:
                    raise ConformanceError(
                        f"{refused}; restoring the previous configuration failed too: {restoring}") from refused
                raise

    def delete(self, docs: Sequence[Mapping[str, Any]], namespace: str) -> None:
        with self._lock:
            for doc in docs:
                ns = namespace_of(doc, namespace)
                self.objects.pop(object_key(doc, ns), None)
                if doc.get("kind") == "Namespace":
                    name = doc["metadata"]["name"]
                    for key in [k for k in self.objects if k[1] == name]:
                        del self.objects[key]
            self._reconcile()
            self._after_config_change(docs)

    def _after_config_change(self, docs: Sequence[Mapping[str, Any]]) -> None:
        # Only mutant switch-drops-requests does anything here (restarts.py).
        if SWITCH_DROPS_REQUESTS in self.mutants and changes_config(docs):
            proxies = [pod.proxy for pod in self.running() if pod.proxy is not None]
            restart_abruptly(proxies, self._last_changed, self.supervisor)

    def _admit(self, doc: Mapping[str, Any], ns: str, new_namespaces: set[str],
               webhook_docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """As the API server: the namespace exists, then admission (Istio's validator refuses
        what Istio refuses, in its words), then what the local mesh implements. Returns the
        document as admitted (a mutating webhook may have patched it)."""
        kind = doc.get("kind")
        where = f"{kind} {ns}/{doc['metadata']['name']}"
        if ns and ns not in new_namespaces and namespace_key(ns) not in self.objects:
            raise ConformanceError(f"{where}: namespace {ns!r} does not exist")
        operation = "UPDATE" if object_key(doc, ns) in self.objects else "CREATE"
        try:
            admitted = self.admission.admit_object(doc, operation, ns, self.namespace_labels(ns), webhook_docs)
        except AdmissionRefused as refused:
            raise AdmissionRefused(f"{where}: {refused}") from None
        check_document(admitted, ns)
        return admitted

    def holds(self, doc: Mapping[str, Any], namespace: str) -> bool:
        """Whether an object of doc's kind and name is applied (in `namespace`)."""
        with self._lock:
            return object_key(doc, namespace_of(doc, namespace)) in self.objects

    def webhook_configurations(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._webhook_docs())

    def dry_run_pod(self, doc: Mapping[str, Any], namespace: str) -> dict[str, Any]:
        """The Pod as admission makes it in `namespace`; nothing is created (dryRun=All)."""
        with self._lock:
            if namespace_key(namespace) not in self.objects:
                raise ConformanceError(f"Pod {namespace}/{doc['metadata']['name']}: namespace {namespace!r} does not exist")
            pod = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
            return self.admission.admit_pod(pod, namespace, self.namespace_labels(namespace), self._webhook_docs(),
                                            dry_run=True)

    @contextmanager
    def revision(self, name: str) -> Iterator[None]:
        """A second istiod, revision `name`, and its injector webhooks, for the block."""
        docs = self.admission.revision_webhooks(name)
        # Under the lock: admission reads the running istiods while it admits.
        with self._lock:
            self.admission.add_revision(name)
        try:
            self.apply(docs, "")
            yield
        finally:
            try:
                self.delete(docs, "")
            finally:
                with self._lock:
                    self.admission.remove_revision(name)

    def _webhook_docs(self) -> list[dict[str, Any]]:
        return [d for (_, kind, _, _), d in self.objects.items() if kind in CONFIGURATION_KINDS]

    def namespace_labels(self, name: str) -> dict[str, str]:
        doc = self.objects.get(namespace_key(name))
        return dict(doc.get("metadata", {}).get("labels", {})) if doc else {}

    # -- workloads -----------------------------------------------------------

    def _reconcile(self) -> None:
        """Start the pods the Deployments want and stop the others. A pod leaves its Services'
        endpoints, and every proxy has taken that, before its processes stop (as Kubernetes
        removes a terminating pod from its EndpointSlices), so no request is sent to it after."""
        # istiod's deployment controller first: the gateway objects of each Gateway API Gateway.
        self.objects = with_deployed_gateways(self.objects)
        wanted = {
            (ns, name): workloads.workload(doc, ns)
            for (_, kind, ns, name), doc in self.objects.items()
            if kind == "Deployment"
        }
        changed = [key for key in self.pods if key not in wanted or self.pods[key][0].workload != wanted[key]]
        # New pods are admitted before anything changes: a pod the API server refuses fails the
        # apply with nothing half-done.
        created = self._create_pods({key: w for key, w in wanted.items() if key not in self.pods or key in changed})
        leaving = [pod for key in changed for pod in self.pods.pop(key)]
        for pod in leaving:
            self._ready.pop(pod_key(pod), None)
        self.pods.update(created)
        new = [pod for pods in created.values() for pod in pods]
        try:
            # A new proxy's first configuration is set before its Envoy starts and asks for it.
            self.push()
        finally:
            for pod in leaving:
                pod.stop(self.supervisor)
                self._secrets.pop(node_id(pod.model), None)
                self._credentials.forget(node_id(pod.model))
            for pod in new:
                pod.start(self.supervisor, self.run_dir, self.registry)

    def _create_pods(self, wanted: Mapping[WorkloadKey, workloads.Workload]) -> dict[WorkloadKey, list[RunningPod]]:
        """Each workload's pods, admitted; if one is refused, none is kept."""
        created: dict[WorkloadKey, list[RunningPod]] = {}
        try:
            for key, workload in wanted.items():
                created[key] = self._new_pods(workload)
        except BaseException:
            for pod in (p for pods in created.values() for p in pods):
                if pod.proxy is not None:
                    self.control_plane.forget(pod.proxy.node_id)
            raise
        return created

    def _new_pods(self, workload: workloads.Workload) -> list[RunningPod]:
        # Every replica is admitted before any is built: a refusal leaves nothing registered.
        webhook_docs = self._webhook_docs()
        admitted = [self._admitted_pod(workload, pod_name(workload), webhook_docs) for _ in range(workload.replicas)]
        return [new_running_pod(with_access_log(pod_model(doc, workload, self.addresses.allocate()), self.run_dir),
                                workload, doc, self.run_dir, self.control_plane) for doc in admitted]

    def _admitted_pod(self, workload: workloads.Workload, name: str,
                      webhook_docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        try:
            return self.admission.admit_pod(pod_document(workload, name), workload.namespace,
                                            self.namespace_labels(workload.namespace), webhook_docs)
        except AdmissionRefused as refused:
            where = f"Deployment {workload.namespace}/{workload.name}: pod {name}"
            raise AdmissionRefused(f"{where}: {refused}") from None

    def running(self) -> list[RunningPod]:
        return [pod for pods in self.pods.values() for pod in pods]

    # -- config distribution ---------------------------------------------------

    def state(self) -> MeshState:
        pods = tuple(replace(p.model, ready=self._ready.get(pod_key(p), False)) for p in self.running())
        return mesh_state(self.objects, pods, self.mutants)

    def push(self) -> None:
        """Translate the mesh once, give each proxy its resources (a pod's that is not ready too),
        and wait until each connected Envoy whose resources changed has ACKed or NACKed them.

        A NACK raises ConformanceError with Envoy's reason, naming the proxy; Envoy keeps
        serving what it had before.
        """
        with self._lock:
            state = self.state()
            # Every proxy's resources first: a document the translator refuses changes nothing.
            translation = Translation(state)
            try:
                resources = {
                    pod.proxy.node_id: self._snapshots.of(self._kept(pod.proxy.node_id, translation.proxy(pod.model)),
                                                          self._secrets_of(pod.model))
                    for pod in self.running()
                    if pod.proxy is not None
                }
            except ValueError as error:
                raise ConformanceError(f"the local control plane cannot send this configuration: {error}") from error
            finally:
                self._snapshots.done()
            write_registry(self.registry, state)
            self.telemetry.update(self.running(), state.services)
            changed = self.control_plane.push(resources)
            self._last_changed = changed
            self.control_plane.wait_settled(changed, ACK_TIMEOUT, since=self.control_plane.version)

    def _kept(self, node: str, config: ProxyConfig) -> ProxyConfig:
        return replace(config, secrets=self._credentials.kept(node, config.secrets))

    def _secrets_of(self, pod: Pod) -> dict[str, dict[str, Any]]:
        node = node_id(pod)
        if node not in self._secrets:
            namespace, service_account = pod.namespace, pod.service_account
            if SHARED_IDENTITY in self.mutants:
                namespace, service_account = SHARED_ACCOUNT  # the mutant: one identity for all
            certificate = self.ca.issue(namespace, service_account)
            self._secrets[node] = sds_secrets(certificate, self.ca.root_pem)
        return self._secrets[node]

    # -- readiness and teardown ----------------------------------------------

    def sync_readiness(self) -> bool:
        """Probe pods' readiness and push when it changed, as Kubernetes updates a
        Service's endpoints when a pod's Ready condition changes. Returns whether it did.
        """
        with self._lock:
            pods = self.running()
            ready = dict(self._ready)
        # Probed outside the lock: a probe may take up to its timeout, apply() need not wait for it.
        probed = probe_readiness(pods, ready)
        with self._lock:
            if self._ready != ready:
                # Another round published meanwhile, from probes perhaps newer than these: a
                # pod it saw ready must not flap back to not ready. The next round probes again.
                return False
            current = {pod_key(pod): pod for pod in self.running()}
            # A pod stopped meanwhile is gone; one started meanwhile is probed next time.
            observed = {pod_key(pod): up for pod, up in probed if current.get(pod_key(pod)) is pod}
            if observed == self._ready:
                return False
            before, self._ready = self._ready, observed
            try:
                self.push()
            except BaseException:
                self._ready = before  # not published: the next round tries again
                raise
            return True

    def _watch_readiness(self) -> None:
        while not self._stopping.wait(READINESS_PERIOD):
            try:
                self.sync_readiness()
                self.watch_error = None
            except Exception as error:  # any: the watcher must outlive one failed round
                self.watch_error = f"{type(error).__name__}: {error}"

    def wait_ready(self, namespace: str | None, timeout: float, poll: float) -> None:
        """Wait until the namespace's pods are ready and their readiness is pushed to every proxy."""

        def pending() -> str | None:
            self.sync_readiness()
            pods = [p for p in self.running() if namespace is None or p.model.namespace == namespace]
            waiting = [p for p in pods if not self._ready.get(pod_key(p))]
            for pod in pods:
                # A dead process will not come back, nor will Envoy take a configuration it
                # refused: fail now, not at the timeout. (A ready pod's Envoy keeps serving.)
                failure = pod.failure() or (pod.refusal() if not self._ready.get(pod_key(pod)) else None)
                if failure:
                    raise ConformanceError(failure)
            if not waiting:
                return None
            watcher = f" (readiness watcher: {self.watch_error})" if self.watch_error else ""
            return f"not ready: {', '.join(waiting_for(p) for p in waiting)}{watcher}"

        wait_for(pending, timeout, poll, f"pods in {namespace or 'all namespaces'}")

    def stop(self) -> None:
        # The watcher first, outside the lock: it may be waiting for it.
        self._stopping.set()
        self._watcher.join(WATCHER_JOIN_TIMEOUT)
        with self._lock:
            self.supervisor.stop_all()
            self.pods.clear()
            try:
                self.admission.stop()
                self.telemetry.stop()
            finally:
                try:
                    self.control_plane.stop()
                finally:
                    self.addresses.release()
