"""The local reference mesh: a store of applied objects, running pods, and config pushes."""

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceError
from conformance.targets.local import injection, workloads
from conformance.targets.local.model import MeshState, Pod, Service
from conformance.targets.local.pods import AddressPool, RunningPod, pod_name
from conformance.targets.local.processes import Supervisor
from conformance.targets.local.validate import check_document
from conformance.targets.local.translator import rds_file_name, translate
from conformance.waiting import wait_for

Key = tuple[str, str, str]  # kind, namespace, name


def _key(doc: Mapping[str, Any], namespace: str) -> Key:
    return (doc["kind"], namespace, doc["metadata"]["name"])


def _namespace_of(doc: Mapping[str, Any], default: str) -> str:
    if doc.get("kind") == "Namespace":
        return ""
    return doc.get("metadata", {}).get("namespace") or default


class LocalMesh:
    def __init__(self, run_dir: Path, mutants: frozenset[str] = frozenset()) -> None:
        self.run_dir = run_dir
        self.mutants = mutants
        self.supervisor = Supervisor()
        self.addresses = AddressPool()
        self.registry = run_dir / "registry.json"
        self.objects: dict[Key, dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], list[RunningPod]] = {}  # (namespace, deployment) -> pods
        self.generation = 0

    # -- configuration -------------------------------------------------------

    def apply(self, docs: Sequence[Mapping[str, Any]], namespace: str) -> None:
        """Validate every document first, so a refused one leaves nothing half-applied."""
        placed = [(dict(doc), _namespace_of(doc, namespace)) for doc in docs]
        new_namespaces = {d["metadata"]["name"] for d, _ in placed if d.get("kind") == "Namespace"}
        for doc, ns in placed:
            self._check(doc, ns, new_namespaces)
        for doc, ns in placed:
            if ns:
                doc.setdefault("metadata", {})["namespace"] = ns
            self.objects[_key(doc, ns)] = doc
        self._reconcile()

    def delete(self, docs: Sequence[Mapping[str, Any]], namespace: str) -> None:
        for doc in docs:
            ns = _namespace_of(doc, namespace)
            self.objects.pop(_key(doc, ns), None)
            if doc.get("kind") == "Namespace":
                name = doc["metadata"]["name"]
                for key in [k for k in self.objects if k[1] == name]:
                    del self.objects[key]
        self._reconcile()

    def _check(self, doc: Mapping[str, Any], ns: str, new_namespaces: set[str]) -> None:
        kind = doc.get("kind")
        if ns and ns not in new_namespaces and ("Namespace", "", ns) not in self.objects:
            raise ConformanceError(f"{kind} {ns}/{doc['metadata']['name']}: namespace {ns!r} does not exist")
        check_document(doc, ns)

    def namespace_labels(self, name: str) -> dict[str, str]:
        doc = self.objects.get(("Namespace", "", name))
        return dict(doc.get("metadata", {}).get("labels", {})) if doc else {}

    # -- workloads -----------------------------------------------------------

    def _reconcile(self) -> None:
        wanted = {
            (ns, name): workloads.workload(doc, ns)
            for (kind, ns, name), doc in self.objects.items()
            if kind == "Deployment"
        }
        for key in list(self.pods):
            current = self.pods[key]
            if key not in wanted or current[0].workload != wanted[key]:
                for pod in current:
                    pod.stop(self.supervisor)
                del self.pods[key]
        started = [self._start_pods(w) for key, w in wanted.items() if key not in self.pods]
        for pods in started:
            self.pods[(pods[0].model.namespace, pods[0].workload.name)] = pods
        self.push()

    def _start_pods(self, workload: workloads.Workload) -> list[RunningPod]:
        decision = injection.decide(self.namespace_labels(workload.namespace), workload.pod_labels)
        proxy = "gateway" if workload.app.app == "gateway" else ("sidecar" if decision.inject else "none")
        pods = []
        for _ in range(workload.replicas):
            model = Pod(
                name=pod_name(workload),
                namespace=workload.namespace,
                labels=dict(workload.pod_labels),
                ip=self.addresses.allocate(),
                container_ports=workload.ports,
                service_account=workload.service_account,
                proxy=proxy,
            )
            pods.append(RunningPod(model, workload, decision))
        return pods

    def running(self) -> list[RunningPod]:
        return [pod for pods in self.pods.values() for pod in pods]

    # -- config distribution ---------------------------------------------------

    def state(self) -> MeshState:
        def docs(kind: str) -> tuple[dict[str, Any], ...]:
            return tuple(d for (k, _, _), d in self.objects.items() if k == kind)

        services: list[Service] = [
            workloads.service(d, ns) for (k, ns, _), d in self.objects.items() if k == "Service"
        ]
        return MeshState(
            services=tuple(services),
            pods=tuple(p.model for p in self.running()),
            virtual_services=docs("VirtualService"),
            destination_rules=docs("DestinationRule"),
            gateways=docs("Gateway"),
            mutants=self.mutants,
            http_routes=docs("HTTPRoute"),
        )

    def push(self) -> None:
        """Recompute every proxy's config and the registry; start pods not yet started."""
        self.generation += 1
        state = self.state()
        self._write_registry(state)
        for pod in self.running():
            if pod.app is None and pod.proxy is None:
                pod.start(self.supervisor, self.run_dir, self.registry)
            if pod.proxy is None:
                continue
            config = translate(pod.model, state, str(pod.proxy.config_dir))
            routes = {rds_file_name(name): (name, route) for name, route in config.routes.items()}
            pod.proxy.push(self.generation, config.listeners, config.clusters, routes)

    def _write_registry(self, state: MeshState) -> None:
        entries = {
            f"{svc.fqdn}:{port.port}": [
                f"{pod.ip}:{port.target_port}" for pod in state.pods if svc.selects(pod)
            ]
            for svc in state.services
            for port in svc.ports
        }
        self.registry.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.registry.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        os.replace(tmp, self.registry)

    # -- readiness and teardown ----------------------------------------------

    def wait_ready(self, namespace: str | None, timeout: float, poll: float) -> None:
        def pending() -> str | None:
            pods = [p for p in self.running() if namespace is None or p.model.namespace == namespace]
            for pod in pods:
                failure = pod.failure()
                if failure:  # a dead process will not come back: fail now, not at the timeout
                    raise ConformanceError(failure)
            waiting = [p.model.name for p in pods if not p.ready()]
            return f"not ready: {', '.join(waiting)}" if waiting else None

        wait_for(pending, timeout, poll, f"pods in {namespace or 'all namespaces'}")

    def stop(self) -> None:
        self.supervisor.stop_all()
        self.pods.clear()
        self.addresses.release()
