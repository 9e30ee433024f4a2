"""Kubernetes operations every cluster target shares: SSA apply and delete, namespaces, exec,
port-forward; reading and waiting are targets/kube_client.py's, which Kube builds on.

Every API failure becomes a one-line ConformanceError with credentials scrubbed out; nothing here
logs a token.
"""

import logging
import shlex
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import portforward, stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL

from conformance.errors import ConformanceError
from conformance.names import RUN_ID_LABEL
from conformance.targets.base import Doc
from conformance.targets.kube_client import KubeClient
from conformance.targets.kube_streams import Bridge, Forward, drain, exit_code
from conformance.targets.kube_views import labels_of, one_line, qualified_name
from conformance.waiting import wait_for

log = logging.getLogger(__name__)

FIELD_MANAGER = "meshconf"
CRD_API_VERSION = "apiextensions.k8s.io/v1"
CRD_KIND = "CustomResourceDefinition"
MERGE_PATCH = "application/merge-patch+json"
# The pod template annotation `kubectl rollout restart` sets to the time of the restart.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


@dataclass(frozen=True)
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int


class Kube(KubeClient):
    """One cluster: what KubeClient reads, and the changes a run makes to it."""

    # ---- configuration -------------------------------------------------

    def apply(self, docs: Sequence[Doc], namespace: str) -> None:
        """Server-side apply each doc; CRDs first, and only once they are Established and served."""
        docs = [d for d in docs if d]  # a YAML stream may hold empty documents
        crds = [d for d in docs if _is_crd(d)]
        for doc in crds:
            self._apply_one(doc, namespace)
        if crds:
            for crd in crds:
                self.wait_condition(CRD_API_VERSION, CRD_KIND, _name(crd), None, "Established",
                                    timeout=self.timeouts.install)
            self.dynamic.resources.invalidate_cache()
            for crd in crds:
                self._wait_served(crd)
        for doc in docs:
            if not _is_crd(doc):
                self._apply_one(doc, namespace)

    def delete(self, docs: Sequence[Doc], namespace: str) -> None:
        """Delete in reverse order (dependents before what they depend on); absent is fine."""
        for doc in reversed([d for d in docs if d]):
            resource = self._find_resource(doc["apiVersion"], doc["kind"])
            if resource is None:
                continue  # the kind is gone (its CRD was removed): so is every object of it
            name = _name(doc)
            ns = _doc_namespace(doc, namespace) if resource.namespaced else None
            with self._api_call(f"delete {doc['kind']} {qualified_name(name, ns)}"):
                try:
                    self.dynamic.delete(resource, name=name, namespace=ns)
                except ApiException as exc:
                    if exc.status != 404:
                        raise

    def create_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        """Create a namespace carrying this run's label; one that exists from elsewhere is an error."""
        run_id = labels.get(RUN_ID_LABEL)
        if not run_id:
            # Without the label delete_namespace() could never remove it again.
            raise ValueError(f"namespace {name}: labels must include {RUN_ID_LABEL}")
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels)}}
        resource = self._resource("v1", "Namespace")
        with self._api_call(f"create namespace {name}"):
            try:
                self.dynamic.create(resource, body=body)
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
        existing = self._get("v1", "Namespace", name) or {}
        if labels_of(existing).get(RUN_ID_LABEL) != run_id:
            raise ConformanceError(
                f"namespace {name} already exists and was not created by run {run_id}; "
                "delete it or choose another name"
            )
        if existing.get("status", {}).get("phase") == "Terminating":
            self._wait_gone("v1", "Namespace", name, None)
            with self._api_call(f"create namespace {name}"):
                self.dynamic.create(resource, body=body)

    def delete_namespace(self, name: str, run_id: str) -> None:
        """Delete a namespace this run created (it carries our run label) and wait until it is gone."""
        existing = self._get("v1", "Namespace", name)
        if existing is None:
            return
        _require_ours(existing, run_id, "delete")
        resource = self._resource("v1", "Namespace")
        # The uid precondition: never delete a same-named namespace someone recreated meanwhile.
        options = {"preconditions": {"uid": existing.get("metadata", {}).get("uid")}}
        with self._api_call(f"delete namespace {name}"):
            try:
                self.dynamic.delete(resource, name=name, body=options)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        self._wait_gone("v1", "Namespace", name, None)

    def label_namespace(self, name: str, labels: Mapping[str, str | None], run_id: str) -> None:
        """Set (or, for None, remove) labels of a namespace this run created: a JSON merge patch,
        as `kubectl label` sends. Only for this run's namespaces, as delete_namespace."""
        _require_ours(self._get("v1", "Namespace", name) or {"metadata": {"name": name}}, run_id, "relabel")
        if RUN_ID_LABEL in labels:
            raise ConformanceError(f"refusing to change label {RUN_ID_LABEL} of namespace {name}")
        with self._api_call(f"label namespace {name}"):
            self.dynamic.patch(self._resource("v1", "Namespace"), name=name,
                               body={"metadata": {"labels": dict(labels)}}, content_type=MERGE_PATCH)

    def restart_deployments(self, namespace: str) -> list[str]:
        """Restart every Deployment of a namespace as `kubectl rollout restart` does: a new pod template
        annotation RESTARTED_AT (kubernetes/kubectl pkg/polymorphichelpers/objectrestarter.go), so the
        Deployment controller replaces the pods by its rolling update strategy. Returns their names."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
        resource = self._resource("apps/v1", "Deployment")
        names = [_name(d) for d in self._list("apps/v1", "Deployment", namespace)]
        for name in names:
            with self._api_call(f"restart deployment {qualified_name(name, namespace)}"):
                self.dynamic.patch(resource, name=name, namespace=namespace, body=patch, content_type=MERGE_PATCH)
        return names

    # ---- exec and port-forward -------------------------------------------

    def exec(self, pod: str, namespace: str, container: str, command: list[str],
             timeout: float) -> ExecResult:
        """Run command in a container; a non-zero exit is a result, a hang is NotConverged."""
        what = f"exec `{shlex.join(command)}` in {qualified_name(pod, namespace)} container {container}"
        # A dedicated client: kubernetes.stream swaps the client's call_api while it runs.
        api = self._dedicated_client()
        try:
            with self._api_call(what):
                ws = stream(
                    CoreV1Api(api).connect_get_namespaced_pod_exec, pod, namespace,
                    command=list(command), container=container,
                    stdin=False, stdout=True, stderr=True, tty=False,
                    _preload_content=False, binary=True,  # bytes: frames may split UTF-8 characters
                )
            try:
                drain(ws, time.monotonic() + timeout, f"{what}: did not finish within {timeout:g}s")
                stdout = ws.read_channel(STDOUT_CHANNEL)
                stderr = ws.read_channel(STDERR_CHANNEL)
                status = ws.read_channel(ERROR_CHANNEL)
            finally:
                ws.close()
        finally:
            api.close()
        return ExecResult(
            stdout=stdout.decode("utf-8", errors="replace"),
            stderr=stderr.decode("utf-8", errors="replace"),
            exit_code=exit_code(status, what),
        )

    @contextmanager
    def port_forward(self, pod: str, namespace: str, port: int) -> Iterator[tuple[str, int]]:
        """A local 127.0.0.1 port whose every connection reaches `port` in the pod."""
        if self._get("v1", "Pod", pod, namespace) is None:
            raise ConformanceError(f"port-forward: pod {qualified_name(pod, namespace)} does not exist")
        what = f"port-forward to {qualified_name(pod, namespace)}:{port}"

        @contextmanager
        def open_remote() -> Iterator[socket.socket]:
            api = self._dedicated_client()  # one per connection: stream swaps call_api while it runs
            try:
                with self._api_call(what):
                    forward: Forward = portforward(
                        CoreV1Api(api).connect_get_namespaced_pod_portforward,
                        pod, namespace, ports=str(port),
                    )
                try:
                    yield forward.socket(port)
                finally:
                    forward.close()
                    error = forward.error(port)
                    if error:
                        log.warning("%s: %s", what, self._scrub(one_line(error)))
            finally:
                api.close()

        bridge = Bridge(open_remote, what)
        try:
            yield bridge.address
        finally:
            bridge.close()

    # ---- helpers ----------------------------------------------------------

    def _apply_one(self, doc: Doc, namespace: str) -> None:
        resource = self._resource(doc["apiVersion"], doc["kind"])
        name = _name(doc)
        ns = _doc_namespace(doc, namespace) if resource.namespaced else None
        with self._api_call(f"apply {doc['kind']} {qualified_name(name, ns)}"):
            self.dynamic.server_side_apply(
                resource, body=dict(doc), name=name, namespace=ns,
                field_manager=FIELD_MANAGER, force_conflicts=True,
            )

    def _wait_served(self, crd: Doc) -> None:
        """Established can precede discovery by a moment; wait until every served version resolves."""
        spec = crd.get("spec", {})
        kind = spec.get("names", {}).get("kind", "")
        versions = [f"{spec.get('group')}/{v['name']}" for v in spec.get("versions", [])
                    if v.get("served", True)]

        def pending() -> str | None:
            missing = [v for v in versions if self._find_resource(v, kind) is None]
            return f"discovery does not list {kind} in {', '.join(missing)}" if missing else None

        wait_for(pending, self.timeouts.install, self.poll_interval, f"CRD {_name(crd)} served")


# ---- plain-data helpers -----------------------------------------------------


def _is_crd(doc: Doc) -> bool:
    return doc.get("kind") == CRD_KIND and str(doc.get("apiVersion", "")).startswith("apiextensions.k8s.io/")


def _require_ours(namespace: Doc, run_id: str, action: str) -> None:
    """Refuse to `action` a namespace that does not carry this run's label: meshconf changes only what
    it created."""
    name, found = _name(namespace), labels_of(namespace).get(RUN_ID_LABEL)
    if found != run_id:
        raise ConformanceError(
            f"refusing to {action} namespace {name}: it lacks label {RUN_ID_LABEL}={run_id} "
            f"(found {found or 'no run label'}); meshconf changes only what it created"
        )


def _name(doc: Doc) -> str:
    name = (doc.get("metadata") or {}).get("name")
    if not name:
        raise ConformanceError(f"a {doc.get('kind', 'document')} has no metadata.name")
    return str(name)


def _doc_namespace(doc: Doc, namespace: str) -> str:
    """A namespace written in the manifest wins (e.g. mesh-wide policy in istio-system)."""
    return str((doc.get("metadata") or {}).get("namespace") or namespace)
