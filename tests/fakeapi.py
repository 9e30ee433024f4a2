"""A fake Kubernetes API server for contract tests (shared by test_kube and test_kind_up).

It answers discovery, keeps applied/created objects by URL path, lets a test script the
answers for one path, and records every request it saw. Tests ask for the `api` fixture by
name (tests/conftest.py loads this module with pytest_plugins).

A kubeconfig pointing at it needs only `server: api.url` (no credentials are checked).
"""

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

CORE_V1 = [
    {"name": "namespaces", "kind": "Namespace", "namespaced": False},
    {"name": "pods", "kind": "Pod", "namespaced": True},
    {"name": "pods/log", "kind": "Pod", "namespaced": True},
    {"name": "events", "kind": "Event", "namespaced": True},
    {"name": "services", "kind": "Service", "namespaced": True},
    {"name": "configmaps", "kind": "ConfigMap", "namespaced": True},
    {"name": "serviceaccounts", "kind": "ServiceAccount", "namespaced": True},
]
GROUPS: dict[str, list[dict[str, Any]]] = {
    "apps/v1": [{"name": "deployments", "kind": "Deployment", "namespaced": True}],
    "apiextensions.k8s.io/v1": [
        {"name": "customresourcedefinitions", "kind": "CustomResourceDefinition", "namespaced": False},
    ],
    "admissionregistration.k8s.io/v1": [
        {"name": "mutatingwebhookconfigurations", "kind": "MutatingWebhookConfiguration", "namespaced": False},
        {"name": "validatingwebhookconfigurations", "kind": "ValidatingWebhookConfiguration",
         "namespaced": False},
    ],
    # What Istio's samples/addons (prometheus.yaml, kiali.yaml) hold besides core kinds.
    "rbac.authorization.k8s.io/v1": [
        {"name": "clusterroles", "kind": "ClusterRole", "namespaced": False},
        {"name": "clusterrolebindings", "kind": "ClusterRoleBinding", "namespaced": False},
        {"name": "roles", "kind": "Role", "namespaced": True},
        {"name": "rolebindings", "kind": "RoleBinding", "namespaced": True},
    ],
}
ISTIO = {"networking.istio.io/v1": [
    {"name": "virtualservices", "kind": "VirtualService", "namespaced": True},
    {"name": "destinationrules", "kind": "DestinationRule", "namespaced": True},
    {"name": "gateways", "kind": "Gateway", "namespaced": True},
]}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: Any


Answer = tuple[int, Any]


class FakeApi:
    """State and scripts behind the HTTP handler; tests read .requests afterwards."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.groups = dict(GROUPS)
        self.objects: dict[str, dict[str, Any]] = {}
        self.scripts: dict[tuple[str, str], list[Answer | Callable[[], Answer]]] = {}
        self.after_apply: dict[str, Callable[[], None]] = {}
        # Act as the Deployment controller: an applied Deployment is stored fully rolled out.
        self.deployments_roll_out = False
        self.lock = threading.Lock()
        self.port = 0  # set by the `api` fixture
        self.url = ""

    def script(self, method: str, path: str, *replies: Answer | Callable[[], Answer]) -> None:
        """Answer method+path with these replies in turn; the last one repeats."""
        self.scripts[(method, path)] = list(replies)

    def seen(self, method: str, path: str) -> list[int]:
        return [i for i, r in enumerate(self.requests) if r.method == method and r.path == path]

    def answer(self, method: str, path: str, body: Any) -> Answer:
        with self.lock:
            scripted = self.scripts.get((method, path))
            if scripted:
                reply = scripted.pop(0) if len(scripted) > 1 else scripted[0]
                return reply() if callable(reply) else reply
            if method == "GET":
                return self._get(path)
            if method == "PATCH":
                stored = {**body, "metadata": {**body.get("metadata", {}), "uid": f"uid-{len(self.objects)}"}}
                if self.deployments_roll_out and "/deployments/" in path:
                    stored["status"] = _rolled_out(stored)
                self.objects[path] = stored
                hook = self.after_apply.get(path)
                if hook:
                    hook()
                return 200, stored
            if method == "POST":
                name_path = f"{path}/{body['metadata']['name']}"
                if name_path in self.objects:
                    return 409, status(409, "AlreadyExists", "already exists")
                self.objects[name_path] = body
                return 201, body
            if method == "DELETE":
                if self.objects.pop(path, None) is None:
                    return 404, status(404, "NotFound", f"{path} not found")
                return 200, status(200, "Success", "deleted")
        return 405, status(405, "MethodNotAllowed", method)

    def _get(self, path: str) -> Answer:
        if path in ("/version", "/version/"):  # the client asks with a trailing slash
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.1"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/api/v1":
            return 200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": CORE_V1}
        if path == "/apis":
            return 200, {"kind": "APIGroupList", "groups": [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                 "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
                for gv in self.groups
            ]}
        if path.startswith("/apis/") and path.count("/") == 3:
            gv = path.removeprefix("/apis/")
            if gv in self.groups:
                return 200, {"kind": "APIResourceList", "groupVersion": gv, "resources": self.groups[gv]}
        if path in self.objects:
            return 200, self.objects[path]
        if path.endswith("s") and not path.endswith("/namespaces"):  # a collection: list its members
            items = [o for p, o in self.objects.items() if p.rsplit("/", 1)[0] == path]
            return 200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}
        return 404, status(404, "NotFound", f"{path} not found")


def _rolled_out(deployment: dict[str, Any]) -> dict[str, Any]:
    want = (deployment.get("spec") or {}).get("replicas", 1)
    return {"observedGeneration": (deployment.get("metadata") or {}).get("generation", 1),
            "replicas": want, "updatedReplicas": want, "readyReplicas": want, "availableReplicas": want}


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure" if code >= 300 else "Success",
            "reason": reason, "message": message, "code": code}


def items(*objs: dict[str, Any]) -> Answer:
    return 200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": list(objs)}


def make_handler(fake: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            fake.requests.append(Seen(self.command, url.path, parse_qs(url.query),
                                      {k.lower(): v for k, v in self.headers.items()}, body))
            code, payload = fake.answer(self.command, url.path, body)
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(code)
            kind = "text/plain" if isinstance(payload, str) else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_POST = do_DELETE = do_PUT = _handle

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    fake.port = server.server_address[1]
    fake.url = f"http://127.0.0.1:{fake.port}"
    yield fake
    server.shutdown()
    server.server_close()
