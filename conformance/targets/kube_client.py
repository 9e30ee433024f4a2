"""A Kubernetes API client for one cluster: connecting, reading, waiting and observing.

Only the official client is used. Every API failure becomes a one-line ConformanceError with
credentials scrubbed out; nothing here logs a token. Writing (apply, delete, namespaces) and
exec/port-forward are targets/kube.py's Kube, built on this.
"""

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError
from kubernetes.dynamic.resource import Resource

from conformance.errors import ConformanceError, UnsupportedResource
from conformance.settings import Timeouts
from conformance.targets.base import PodView
from conformance.targets.kube_credentials import REDACTED, kubeconfig_credentials
from conformance.targets.kube_views import (
    event_line,
    event_time,
    one_line,
    pod_view,
    qualified_name,
    rollout_gap,
    webhook_summary,
)
from conformance.waiting import wait_for
from conformance.webhooks import API_VERSION as ADMISSION_API_VERSION, CONFIGURATION_KINDS


class KubeClient:
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
            raise ConformanceError(self._scrub(f"cannot load kubeconfig {path}: {one_line(str(exc))}")) from None
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

    # ---- reading and waiting ----------------------------------------------

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

    def wait_rollout(self, namespace: str, timeout: float | None = None) -> None:
        """Every Deployment in the namespace has all replicas updated and available (within
        `timeout`, by default the rollout budget)."""

        def pending() -> str | None:
            waiting = [rollout_gap(d) for d in self._list("apps/v1", "Deployment", namespace)]
            waiting = [w for w in waiting if w]
            return f"deployments not ready: {'; '.join(waiting)}" if waiting else None

        wait_for(pending, self.timeouts.rollout if timeout is None else timeout, self.poll_interval,
                 f"rollout in namespace {namespace}")

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
        where = qualified_name(name, namespace)

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
        return [pod_view(p) for p in self._list("v1", "Pod", namespace)]

    def ready_pods(self, namespace: str, labels: Mapping[str, str]) -> list[PodView]:
        """The namespace's ready pods that carry every one of `labels`."""
        return [p for p in self.pods(namespace)
                if p.ready and all(p.labels.get(k) == v for k, v in labels.items())]

    def webhooks(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """{"mutating"|"validating": {configuration name: [webhook summary]}}.

        Keyed by kind first: a Mutating and a Validating configuration may share a name.
        """
        summary: dict[str, dict[str, list[dict[str, Any]]]] = {key: {} for key in CONFIGURATION_KINDS.values()}
        for cfg in self.webhook_configurations():
            summary[CONFIGURATION_KINDS[cfg["kind"]]][cfg["metadata"]["name"]] = [
                webhook_summary(w) for w in cfg.get("webhooks") or []]
        return summary

    def webhook_configurations(self) -> list[dict[str, Any]]:
        """Every Mutating- and ValidatingWebhookConfiguration as stored, each with its apiVersion and
        kind: the items of a built-in kind's list carry neither (the API server leaves them out)."""
        return [{"apiVersion": ADMISSION_API_VERSION, "kind": kind, **item}
                for kind in CONFIGURATION_KINDS
                for item in self._list(ADMISSION_API_VERSION, kind, None)]

    def dry_run_create(self, doc: Mapping[str, Any], namespace: str) -> dict[str, Any]:
        """The object as the API server would create it (namespaced in `namespace` unless the doc
        names one): a server-side dry run, so admission webhooks are called and nothing is stored."""
        resource = self._resource(doc["apiVersion"], doc["kind"])
        meta = doc.get("metadata") or {}
        ns = str(meta.get("namespace") or namespace) if resource.namespaced else None
        name = meta.get("name") or f"{meta.get('generateName', '')}<generated>"
        with self._api_call(f"dry-run create {doc['kind']} {qualified_name(name, ns)}"):
            return _json(self.dynamic.create(resource, body=dict(doc), namespace=ns, dry_run="All", serialize=False))

    def events(self, namespace: str) -> list[str]:
        """The namespace's events, oldest first, one line each."""
        events = self._list("v1", "Event", namespace)
        events.sort(key=event_time)
        return [event_line(e) for e in events]

    def logs(self, pod: str, namespace: str, container: str | None = None, tail: int = 500) -> str:
        core = CoreV1Api(self.api)
        with self._api_call(f"read logs of {qualified_name(pod, namespace)}"):
            # Raw bytes: the deserializer would parse JSON-looking logs and choke on invalid UTF-8.
            raw = core.read_namespaced_pod_log(
                pod, namespace, container=container, tail_lines=tail, _preload_content=False
            )
            return raw.data.decode("utf-8", errors="replace")

    # ---- helpers ----------------------------------------------------------

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
        with self._api_call(f"read {kind} {qualified_name(name, ns)}"):
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
        where = qualified_name(name, namespace)

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
            raise ConformanceError(self._scrub(one_line(text))) from None
        except urllib3.exceptions.HTTPError as exc:
            text = f"{action}: cannot reach the API server at {self._configuration.host}: {exc}"
            raise ConformanceError(self._scrub(one_line(text))) from None

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


# ---- plain-data helpers -----------------------------------------------------


def _json(response: Any) -> dict[str, Any]:
    # Raw JSON rather than ResourceInstance: plain dicts, and no wrapping cost on long lists.
    return dict(json.loads(response.data))


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
