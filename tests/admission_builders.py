"""Helpers of the admission tests: pods, AdmissionReviews, webhook configurations, and small
webhook servers of the tests' own; their fixtures (ca, injector, istio_hooks) are in conftest.py."""

import json
import ssl
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conformance.targets.local.admission.control import POD_KIND, POD_RESOURCE
from conformance.targets.local.admission.review import admit
from conformance.webhooks import Webhook, webhooks_of
from conformance.targets.local.xds.secrets import MeshCA



def pod_doc(name: str = "httpbin-1", labels: Mapping[str, str] | None = None,
         annotations: Mapping[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels or {"app": "httpbin"})}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "httpbin", "image": "docker.io/mccutchen/go-httpbin:v2.15.0"}], **spec}}


def review_of(pod: Mapping[str, Any], namespace: str = "apps", uid: str = "0b1a-uid") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": namespace, "operation": "CREATE", "object": pod}}


def names(containers: list[dict[str, Any]] | None) -> list[str]:
    return [c["name"] for c in containers or []]


def configuration_doc(kind: str, *hooks: Mapping[str, Any], name: str = "tests") -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "webhooks": list(hooks)}


def hook_doc(name: str = "hook.tests.example.com", **fields: Any) -> dict[str, Any]:
    hook: dict[str, Any] = {
        "name": name,
        "clientConfig": {"service": {"namespace": "tests", "name": "hooks", "path": "/hook"}},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    }
    hook.update(fields)
    return hook


def one_webhook(kind: str = "MutatingWebhookConfiguration", **fields: Any) -> Webhook:
    [hook] = webhooks_of(configuration_doc(kind, hook_doc(**fields)))
    return hook


def resolving_to(address: tuple[str, int]) -> Callable[[Webhook], str]:
    """Resolves every service webhook to `address`, with the service's path."""
    def resolve(hook: Webhook) -> str:
        assert hook.service is not None
        return f"https://{address[0]}:{address[1]}{hook.service.path or ''}"
    return resolve


def admit_pod(hooks: list[Webhook], pod: Mapping[str, Any], resolve: Callable[[Webhook], str],
           namespace: str = "apps", namespace_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return admit(hooks, pod, operation="CREATE", namespace=namespace, namespace_labels=namespace_labels or {},
                 resource=POD_RESOURCE, kind=POD_KIND, resolve=resolve)


class WebhookServer:
    """A webhook server of the tests: HTTPS with a mesh-CA certificate for `dns_name`; `answer`
    maps each AdmissionReview to an HTTP status and body; `seen` keeps the reviews."""

    def __init__(self, ca: MeshCA, dns_name: str, answer: Callable[[dict[str, Any]], tuple[int, Any]],
                 scratch: Path) -> None:
        self.seen: list[dict[str, Any]] = []
        cert = ca.issue_server([dns_name])
        (scratch / "cert.pem").write_text(cert.chain_pem)
        (scratch / "key.pem").write_text(cert.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(scratch / "cert.pem", scratch / "key.pem")
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen.append(review)
                status, body = answer(review)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.address = ("127.0.0.1", self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer_of(review: Mapping[str, Any], **response: Any) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], **response}}


