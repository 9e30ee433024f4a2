"""Kubernetes operations every cluster target shares: SSA apply, waits, exec, port-forward.

Only the official client is used. Every API failure becomes a one-line
ConformanceError with credentials scrubbed out; nothing here logs a token.
"""

import base64
import json
import logging
import os
import re
import select
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import urllib3
import yaml
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError
from kubernetes.dynamic.resource import Resource
from kubernetes.stream import portforward, stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL

from conformance.errors import ConformanceError, NotConverged, UnsupportedResource
from conformance.names import RUN_ID_LABEL
from conformance.settings import Timeouts
from conformance.targets.base import Doc, PodView
from conformance.waiting import wait_for

log = logging.getLogger(__name__)

FIELD_MANAGER = "meshconf"
CRD_API_VERSION = "apiextensions.k8s.io/v1"
CRD_KIND = "CustomResourceDefinition"

# kubeconfig keys whose values are credentials (the last four are auth-provider config).
SECRET_KEYS = frozenset({
    "token", "client-key-data", "client-certificate-data", "password",
    "certificate-authority-data",
    "id-token", "refresh-token", "client-secret", "access-token",
})
REDACTED = "REDACTED"


@dataclass(frozen=True)
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int


class _Forward(Protocol):
    """What kubernetes.stream.portforward returns (ws_client.PortForward)."""

    def socket(self, port_number: int) -> socket.socket: ...
    def error(self, port_number: int) -> str | None: ...
    def close(self) -> None: ...


class Kube:
    """One cluster, reached through one kubeconfig file (never the user's default one)."""

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str],
        context: str | None = None,
        *,
        timeouts: Timeouts | None = None,
        poll_interval: float = 1.0,  # API objects change in seconds; faster only loads the API server
    ) -> None:
        path = Path(kubeconfig)
        if not path.is_file():
            raise ConformanceError(f"kubeconfig {path} does not exist")
        self.kubeconfig = path
        self.context = context
        self.timeouts = timeouts or Timeouts()
        self.poll_interval = poll_interval
        self._file_secrets = kubeconfig_credentials(path)
        try:
            # persist_config=False: a refreshed token must never be written back to the file.
            self.api: ApiClient = kube_config.new_client_from_config(
                config_file=str(path), context=context, persist_config=False
            )
        except Exception as exc:  # ConfigException and friends; their text may quote the file
            raise ConformanceError(self._scrub(f"cannot load kubeconfig {path}: {_one_line(str(exc))}")) from None
        self._configuration: Configuration = self.api.configuration
        # A private discovery cache: the client's default is one file per host in /tmp,
        # shared by every process and by every kind cluster that reuses 127.0.0.1:<port>.
        self._cache_dir = tempfile.TemporaryDirectory(prefix="meshconf-discovery-")
        self._dynamic: DynamicClient | None = None

    def close(self) -> None:
        self.api.close()
        self._cache_dir.cleanup()

    @property
    def dynamic(self) -> DynamicClient:
        """Created on first use: building it already reads /version and /apis."""
        if self._dynamic is None:
            with self._api_call("discover the API server's resources"):
                self._dynamic = DynamicClient(
                    self.api, cache_file=os.path.join(self._cache_dir.name, "discovery.json")
                )
        return self._dynamic

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
            with self._api_call(f"delete {doc['kind']} {_where(name, ns)}"):
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
        if _labels(existing).get(RUN_ID_LABEL) != run_id:
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
        found = _labels(existing).get(RUN_ID_LABEL)
        if found != run_id:
            raise ConformanceError(
                f"refusing to delete namespace {name}: it lacks label {RUN_ID_LABEL}={run_id} "
                f"(found {found or 'no run label'}); meshconf deletes only what it created"
            )
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

    # ---- waiting --------------------------------------------------------

    def server_version(self) -> str:
        """The API server's Kubernetes version, e.g. "v1.34.8"."""
        # Discovery read /version already; its raw form needs none of VersionInfo's fields.
        return str(self.dynamic.version["kubernetes"]["gitVersion"])

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """One object as plain data, or None when it does not exist."""
        return self._get(api_version, kind, name, namespace)

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every object of a kind (in a namespace, for a namespaced kind) as plain data."""
        return self._list(api_version, kind, namespace)

    def wait_rollout(self, namespace: str) -> None:
        """Every Deployment in the namespace has all replicas updated and available."""

        def pending() -> str | None:
            waiting = [_rollout_gap(d) for d in self._list("apps/v1", "Deployment", namespace)]
            waiting = [w for w in waiting if w]
            return f"deployments not ready: {'; '.join(waiting)}" if waiting else None

        wait_for(pending, self.timeouts.rollout, self.poll_interval, f"rollout in namespace {namespace}")

    def wait_condition(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        condition: str,
        status: str = "True",
        timeout: float | None = None,
    ) -> None:
        """Wait until status.conditions[type=condition].status == status."""
        where = _where(name, namespace)

        def pending() -> str | None:
            obj = self._get(api_version, kind, name, namespace)
            if obj is None:
                return f"{kind} {where} does not exist"
            for cond in obj.get("status", {}).get("conditions") or []:
                if cond.get("type") == condition:
                    if cond.get("status") == status:
                        return None
                    return (f"{condition} is {cond.get('status')}"
                            f" ({cond.get('reason') or 'no reason'}: {cond.get('message') or ''})")
            return f"{kind} {where} has no {condition} condition yet"

        wait_for(pending, self.timeouts.rollout if timeout is None else timeout,
                 self.poll_interval, f"{kind} {where} {condition}={status}")

    # ---- observation ----------------------------------------------------

    def pods(self, namespace: str) -> list[PodView]:
        return [_pod_view(p) for p in self._list("v1", "Pod", namespace)]

    def ready_pods(self, namespace: str, labels: Mapping[str, str]) -> list[PodView]:
        """The namespace's ready pods that carry every one of `labels`."""
        return [p for p in self.pods(namespace)
                if p.ready and all(p.labels.get(k) == v for k, v in labels.items())]

    def webhooks(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """{"mutating"|"validating": {configuration name: [webhook summary]}}.

        Keyed by kind first: a Mutating and a Validating configuration may share a name.
        """
        summary: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for key, kind in (("mutating", "MutatingWebhookConfiguration"),
                          ("validating", "ValidatingWebhookConfiguration")):
            summary[key] = {
                cfg["metadata"]["name"]: [_webhook_summary(w) for w in cfg.get("webhooks") or []]
                for cfg in self._list("admissionregistration.k8s.io/v1", kind, None)
            }
        return summary

    def events(self, namespace: str) -> list[str]:
        """The namespace's events, oldest first, one line each."""
        events = self._list("v1", "Event", namespace)
        events.sort(key=_event_time)
        return [_event_line(e) for e in events]

    def logs(self, pod: str, namespace: str, container: str | None = None, tail: int = 500) -> str:
        core = CoreV1Api(self.api)
        with self._api_call(f"read logs of {_where(pod, namespace)}"):
            # Raw bytes: the deserializer would parse JSON-looking logs and choke on invalid UTF-8.
            raw = core.read_namespaced_pod_log(
                pod, namespace, container=container, tail_lines=tail, _preload_content=False
            )
            return raw.data.decode("utf-8", errors="replace")

    # ---- exec and port-forward -------------------------------------------

    def exec(self, pod: str, namespace: str, container: str, command: list[str],
             timeout: float) -> ExecResult:
        """Run command in a container; a non-zero exit is a result, a hang is NotConverged."""
        what = f"exec `{shlex.join(command)}` in {_where(pod, namespace)} container {container}"
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
                _drain(ws, time.monotonic() + timeout, f"{what}: did not finish within {timeout:g}s")
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
            exit_code=_exit_code(status, what),
        )

    @contextmanager
    def port_forward(self, pod: str, namespace: str, port: int) -> Iterator[tuple[str, int]]:
        """A local 127.0.0.1 port whose every connection reaches `port` in the pod."""
        if self._get("v1", "Pod", pod, namespace) is None:
            raise ConformanceError(f"port-forward: pod {_where(pod, namespace)} does not exist")
        what = f"port-forward to {_where(pod, namespace)}:{port}"

        @contextmanager
        def open_remote() -> Iterator[socket.socket]:
            api = self._dedicated_client()  # one per connection: stream swaps call_api while it runs
            try:
                with self._api_call(what):
                    forward: _Forward = portforward(
                        CoreV1Api(api).connect_get_namespaced_pod_portforward,
                        pod, namespace, ports=str(port),
                    )
                try:
                    yield forward.socket(port)
                finally:
                    forward.close()
                    error = forward.error(port)
                    if error:
                        log.warning("%s: %s", what, self._scrub(_one_line(error)))
            finally:
                api.close()

        bridge = _Bridge(open_remote, what)
        try:
            yield bridge.address
        finally:
            bridge.close()

    # ---- helpers ----------------------------------------------------------

    def _apply_one(self, doc: Doc, namespace: str) -> None:
        resource = self._resource(doc["apiVersion"], doc["kind"])
        name = _name(doc)
        ns = _doc_namespace(doc, namespace) if resource.namespaced else None
        with self._api_call(f"apply {doc['kind']} {_where(name, ns)}"):
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

    def _find_resource(self, api_version: str, kind: str) -> Resource | None:
        with self._api_call(f"look up {api_version} {kind}"):
            try:
                # LazyDiscoverer re-reads discovery once on a miss before giving up.
                return self.dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                return None
            except ResourceNotUniqueError:
                raise ConformanceError(f"{api_version} {kind} is ambiguous in discovery") from None

    def _resource(self, api_version: str, kind: str) -> Resource:
        resource = self._find_resource(api_version, kind)
        if resource is None:
            raise UnsupportedResource(
                f"the API server does not serve kind {kind} in apiVersion {api_version} "
                "(is its CRD installed?)"
            )
        return resource

    def _get(self, api_version: str, kind: str, name: str,
             namespace: str | None = None) -> dict[str, Any] | None:
        """The object as plain data, or None when it does not exist."""
        resource = self._resource(api_version, kind)
        ns = namespace if resource.namespaced else None
        with self._api_call(f"read {kind} {_where(name, ns)}"):
            try:
                return _json(self.dynamic.get(resource, name=name, namespace=ns, serialize=False))
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def _list(self, api_version: str, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        resource = self._resource(api_version, kind)
        ns = namespace if resource.namespaced else None
        with self._api_call(f"list {kind} in {ns or 'the cluster'}"):
            return list(_json(self.dynamic.get(resource, namespace=ns, serialize=False)).get("items") or [])

    def _wait_gone(self, api_version: str, kind: str, name: str, namespace: str | None) -> None:
        where = _where(name, namespace)

        def pending() -> str | None:
            obj = self._get(api_version, kind, name, namespace)
            if obj is None:
                return None
            return f"{kind} {where} still exists (phase {obj.get('status', {}).get('phase', '?')})"

        wait_for(pending, self.timeouts.rollout, self.poll_interval, f"{kind} {where} deleted")

    def _dedicated_client(self) -> ApiClient:
        return ApiClient(configuration=self._configuration)

    @contextmanager
    def _api_call(self, action: str) -> Iterator[None]:
        """Turn client and transport errors into one scrubbed line."""
        try:
            yield
        except ApiException as exc:
            detail = f"HTTP {exc.status} {exc.reason or ''}".strip()
            message = _status_message(exc.body)
            if exc.status == 0:  # the websocket layer puts its whole error in reason
                detail = "connection failed"
                message = str(exc.reason or "")[:300]  # a failed handshake dumps the whole response
            text = f"{action}: {detail}" + (f": {message}" if message else "")
            # from None: the original's text includes response headers and bodies.
            raise ConformanceError(self._scrub(_one_line(text))) from None
        except urllib3.exceptions.HTTPError as exc:
            text = f"{action}: cannot reach the API server at {self._configuration.host}: {exc}"
            raise ConformanceError(self._scrub(_one_line(text))) from None

    def _scrub(self, text: str) -> str:
        secrets = set(self._file_secrets)
        configuration = getattr(self, "_configuration", None)
        if configuration is not None:
            for value in (configuration.api_key or {}).values():
                secrets.add(str(value).removeprefix("Bearer ").strip())
            if configuration.password:
                secrets.add(configuration.password)
        for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text


# ---- credentials ------------------------------------------------------------


def redacted_kubeconfig(path: str | os.PathLike[str]) -> str:
    """The kubeconfig as YAML with every credential value replaced by REDACTED (for debug bundles)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConformanceError(f"cannot read kubeconfig {path}: {type(exc).__name__}") from None
    return yaml.safe_dump(_redact(data), sort_keys=False)


def _redact(node: Any) -> Any:
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            if key in SECRET_KEYS and value is not None:
                out[key] = REDACTED
            elif key == "env" and isinstance(value, list):  # exec plugin env often holds keys
                out[key] = [{**e, "value": REDACTED} if isinstance(e, dict) and "value" in e else e
                            for e in value]
            else:
                out[key] = _redact(value)
        return out
    if isinstance(node, list):
        return [_redact(v) for v in node]
    return node


def kubeconfig_credentials(kubeconfig: Path) -> set[str]:
    """Every credential string in the kubeconfig, what it base64-decodes to (key and certificate
    data hold base64 PEM), and the Basic auth header value of a username and password."""
    try:
        data = yaml.safe_load(Path(kubeconfig).read_text())
    except (OSError, yaml.YAMLError):
        return set()
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in SECRET_KEYS and isinstance(value, str):
                    found.add(value)
                    found.update(_decoded(value))
                else:
                    walk(value)
            if isinstance(node.get("username"), str) and isinstance(node.get("password"), str):
                found.add(base64.b64encode(f"{node['username']}:{node['password']}".encode()).decode())
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    return {s for s in found if len(s) >= 4}


def _decoded(value: str) -> set[str]:
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return set()
    # Also each line: a PEM body may be quoted line by line (a log, a YAML block).
    return {text, text.strip(), *(line.strip() for line in text.splitlines())}


# ---- plain-data helpers -----------------------------------------------------


def _is_crd(doc: Doc) -> bool:
    return doc.get("kind") == CRD_KIND and str(doc.get("apiVersion", "")).startswith("apiextensions.k8s.io/")


def _name(doc: Doc) -> str:
    name = (doc.get("metadata") or {}).get("name")
    if not name:
        raise ConformanceError(f"a {doc.get('kind', 'document')} has no metadata.name")
    return str(name)


def _doc_namespace(doc: Doc, namespace: str) -> str:
    """A namespace written in the manifest wins (e.g. mesh-wide policy in istio-system)."""
    return str((doc.get("metadata") or {}).get("namespace") or namespace)


def _where(name: str, namespace: str | None) -> str:
    return f"{namespace}/{name}" if namespace else name


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _json(response: Any) -> dict[str, Any]:
    # Raw JSON rather than ResourceInstance: plain dicts, and no wrapping cost on long lists.
    return dict(json.loads(response.data))


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _status_message(body: Any) -> str:
    """The message of a Kubernetes Status body, else a short excerpt of whatever came back."""
    if not body:
        return ""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return text[:300]


def _rollout_gap(deployment: Mapping[str, Any]) -> str | None:
    """What keeps a Deployment from being rolled out, or None (kubectl rollout status's rules)."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    want = spec.get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    available = status.get("availableReplicas") or 0
    total = status.get("replicas") or 0
    if (status.get("observedGeneration") or 0) < (meta.get("generation") or 0):
        return f"{meta.get('name')} (spec change not yet observed)"
    if updated == want and available == want and total == want:
        return None
    return f"{meta.get('name')} ({updated} updated, {available} available, {total} total of {want})"


def _pod_view(pod: Mapping[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    return PodView(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        containers=tuple(c["name"] for c in spec.get("containers") or []),
        # Native sidecars (restartPolicy: Always) live here too, as Kubernetes puts them.
        init_containers=tuple(c["name"] for c in spec.get("initContainers") or []),
        ip=status.get("podIP") or "",
        ready=ready,
        service_account=spec.get("serviceAccountName") or "default",
    )


def _webhook_summary(webhook: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": webhook.get("name"),
        "failurePolicy": webhook.get("failurePolicy"),
        "namespaceSelector": webhook.get("namespaceSelector") or {},
        "objectSelector": webhook.get("objectSelector") or {},
        "rules": webhook.get("rules") or [],
    }


def _event_time(event: Mapping[str, Any]) -> str:
    # RFC 3339 UTC timestamps sort correctly as strings.
    return str(event.get("lastTimestamp") or event.get("eventTime")
               or (event.get("metadata") or {}).get("creationTimestamp") or "")


def _event_line(event: Mapping[str, Any]) -> str:
    obj = event.get("involvedObject") or {}
    count = event.get("count") or 1
    line = (f"{_event_time(event)} {event.get('type', '')} {event.get('reason', '')} "
            f"{str(obj.get('kind', '')).lower()}/{obj.get('name', '')}: {_one_line(event.get('message') or '')}")
    return line + (f" (x{count})" if count > 1 else "")


# ---- exec -------------------------------------------------------------------


def _drain(ws: Any, deadline: float, timeout_message: str) -> None:
    """Buffer the exec's output until the server closes the stream, or give up at deadline."""
    while ws.is_open():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NotConverged(timeout_message)
        ws.update(timeout=remaining)


def _exit_code(status: bytes | str, what: str) -> int:
    """The exit code from the error channel's Status (v4/v5 channel protocols)."""
    text = status.decode("utf-8", errors="replace") if isinstance(status, bytes) else status
    if not text.strip():
        raise ConformanceError(f"{what}: the stream closed without an exit status")
    try:
        data = json.loads(text)
    except ValueError:
        raise ConformanceError(f"{what}: unreadable exit status {_one_line(text)[:200]}") from None
    if data.get("status") == "Success":
        return 0
    for cause in (data.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", "1"))
    # Not an exit code: the command could not run at all (no such container, binary, ...).
    raise ConformanceError(f"{what}: {_one_line(str(data.get('message') or text))}")


# ---- port-forward bridge ------------------------------------------------------


class _Bridge:
    """A local listening socket; each accepted connection gets its own forward, in its own thread."""

    def __init__(self, open_remote: Callable[[], AbstractContextManager[socket.socket]], what: str) -> None:
        self._open_remote = open_remote  # opens one forward, yields its pod-side socket
        self._what = what
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        # A timeout lets the accept loop notice close(): closing a socket does not wake accept().
        self._listener.settimeout(0.1)
        self.address: tuple[str, int] = ("127.0.0.1", self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, name=f"meshconf {what}", daemon=True)
        self._accepter.start()

    def close(self) -> None:
        self._closing.set()
        self._accepter.join(timeout=5)
        self._listener.close()
        for thread in list(self._threads):
            thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setblocking(True)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                      name=f"meshconf {self._what} connection")
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with self._open_remote() as remote:
                _pump(conn, remote, self._closing)
        except Exception as exc:  # one connection failing must not end the others
            log.warning("%s: %s", self._what, _one_line(str(exc)))
        finally:
            conn.close()


def _pump(local: socket.socket, remote: socket.socket, closing: threading.Event) -> None:
    """Copy bytes both ways until either side closes or the bridge shuts down."""
    while not closing.is_set():
        readable, _, _ = select.select([local, remote], [], [], 0.1)
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            (remote if sock is local else local).sendall(data)
