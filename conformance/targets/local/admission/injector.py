"""Istio's sidecar injector as the webhook server istiod runs: POST /inject over HTTPS,
AdmissionReview v1 in and out (istio/istio pkg/kube/inject/webhook.go serveInject, inject).

The API server calls it only for pods the webhooks' selectors chose; istiod then decides from the
pod itself (istio/istio pkg/kube/inject/inject.go injectRequired, which
conformance.targets.local.injection mirrors) and answers with a JSONPatch from the pod as sent to
the pod as injected, as istiod's createPatch diffs the two (webhook.go createPatch).

The injected pod keeps to what the local mesh reads: container names and order, the
`sidecar.istio.io/status` annotation and the `security.istio.io/tlsMode` label. Containers carry
a name, Istio's proxy image and its arguments; no volumes, resources or security contexts.
"""

import base64
import copy
import json
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch

from conformance.names import (DEFAULT_REVISION, INJECT, ISTIO_NAMESPACE, ISTIO_REV, PROMETHEUS_PATH,
                               PROMETHEUS_PORT, PROMETHEUS_SCRAPE, PROXY_CONTAINER, SIDECAR_STATUS_ANNOTATION,
                               STATS_PATH, STATUS_PORT, TLS_MODE_ISTIO, TLS_MODE_LABEL, discovery_address, istiod_name)
from conformance.settings import DEFAULT_ISTIO_VERSION
from conformance.targets.local.admission.review import JSON_PATCH, answer, received_request
from conformance.targets.local.injection import istiod_refuses
from conformance.targets.local.translator.mutants import INJECT_OPTED_OUT, NO_INJECTION
from conformance.targets.local.model import CLUSTER_DOMAIN
from conformance.targets.local.xds.secrets import MeshCA

INJECT_PATH = "/inject"
# The environment variable through which the injector hands pilot-agent its ProxyConfig, with
# the mesh's defaults left out (istio/istio pkg/kube/inject/template.go, injection-template.yaml).
PROXY_CONFIG_ENV = "PROXY_CONFIG"


def webhook_dns_name(revision: str) -> str:
    """The name the webhook's Service (clientConfig.service istiod[-rev]/istio-system) gives its
    certificate; istiod's DNS certificate holds it (istio/istio pilot/pkg/bootstrap/server.go dnsNames)."""
    return f"{istiod_name(revision)}.{ISTIO_NAMESPACE}.svc"
# istio/istio pkg/kube/inject/inject.go InitContainerName (ProxyContainerName is PROXY_CONTAINER).
INIT_CONTAINER = "istio-init"
# Overrides the injector's native-sidecar setting per pod (inject.go: "true" or "false").
NATIVE_SIDECAR_ANNOTATION = "sidecar.istio.io/nativeSidecar"
# Istio's default hub and the proxy image (values global.hub, global.proxy.image).
PROXY_IMAGE = f"docker.io/istio/proxyv2:{DEFAULT_ISTIO_VERSION}"

# As the injection template's, trimmed of logging flags (pkg/kube/inject/testdata/inject/
# hello.yaml.injected).
_INIT_ARGS = ("istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
              "-x", "", "-b", "*", "-d", "15090,15021,15020")
_PROXY_ARGS = ("proxy", "sidecar", "--domain", f"$(POD_NAMESPACE).svc.{CLUSTER_DOMAIN}")


def injected(pod: Mapping[str, Any], *, revision: str = DEFAULT_REVISION, native_sidecars: bool = False,
             image: str = PROXY_IMAGE) -> dict[str, Any]:
    """The pod with Istio's sidecar, in Istio's container order (istio/istio
    pkg/kube/inject/webhook.go reorderPod): classic, the app's init containers then istio-init,
    and istio-proxy after the app's containers; native, istio-init then istio-proxy (restartPolicy
    Always) before the app's init containers."""
    out = copy.deepcopy(dict(pod))
    metadata = out.setdefault("metadata", {})
    spec = out.setdefault("spec", {})
    native = _native(metadata.get("annotations") or {}, native_sidecars)
    init = {"name": INIT_CONTAINER, "image": image, "args": list(_INIT_ARGS)}
    proxy: dict[str, Any] = {"name": PROXY_CONTAINER, "image": image, "args": list(_PROXY_ARGS),
                             "env": [{"name": PROXY_CONFIG_ENV, "value": _proxy_config(revision)}]}
    app_init = list(spec.get("initContainers") or [])
    if native:
        proxy["restartPolicy"] = "Always"
        spec["initContainers"] = [init, proxy, *app_init]
    else:
        spec["initContainers"] = [*app_init, init]
        spec["containers"] = [*(spec.get("containers") or []), proxy]
    status = {
        "initContainers": [INIT_CONTAINER, PROXY_CONTAINER] if native else [INIT_CONTAINER],
        "containers": None if native else [PROXY_CONTAINER],
        "volumes": [],
        "imagePullSecrets": None,
        "revision": revision,
    }
    # Go's json.Marshal: no spaces.
    annotations = metadata.setdefault("annotations", {})
    annotations[SIDECAR_STATUS_ANNOTATION] = json.dumps(status, separators=(",", ":"))
    annotations[ISTIO_REV] = revision
    _merge_metrics(annotations)
    # The template keeps a tlsMode the pod already has.
    metadata.setdefault("labels", {}).setdefault(TLS_MODE_LABEL, TLS_MODE_ISTIO)
    return out


def _merge_metrics(annotations: dict[str, str]) -> None:
    """Istio's metrics merging (pkg/kube/inject/webhook.go applyPrometheusMerge, on by default):
    Prometheus is pointed at the agent's port, which serves the proxy's and the app's metrics
    together, unless the pod opts out of scraping. (Istio also hands the app's own scrape settings
    to the agent; the local apps export none.)"""
    if annotations.get(PROMETHEUS_SCRAPE) == "false":
        return
    annotations.update({PROMETHEUS_PORT: str(STATUS_PORT), PROMETHEUS_PATH: STATS_PATH,
                        PROMETHEUS_SCRAPE: "true"})


def _proxy_config(revision: str) -> str:
    """ProxyConfig as JSON, the mesh's defaults left out: the default revision's discovery address
    is the default one (template.go), any other revision's istiod is named."""
    differs = {} if revision == DEFAULT_REVISION else {"discoveryAddress": discovery_address(revision)}
    return json.dumps(differs)


def _native(annotations: Mapping[str, str], default: bool) -> bool:
    """The pod's annotation, when "true" or "false", wins over the injector's setting (inject.go)."""
    value = annotations.get(NATIVE_SIDECAR_ANNOTATION)
    if value == "true":
        return True
    if value == "false":
        return False
    return default


def review_response(review: Mapping[str, Any], *, revision: str = DEFAULT_REVISION, native_sidecars: bool = False,
                    image: str = PROXY_IMAGE, mutants: frozenset[str] = frozenset()) -> dict[str, Any]:
    """istiod's answer to an AdmissionReview: allowed, with a JSONPatch when it injects."""
    request = received_request(review)
    pod = request["object"]
    metadata = pod.get("metadata") or {}
    # A pod from a controller has no namespace yet: istiod takes the request's (webhook.go inject).
    namespace = metadata.get("namespace") or request.get("namespace") or ""
    if not _injects(pod, namespace, mutants):
        return answer(request, True)
    patch = jsonpatch.make_patch(dict(pod), injected(pod, revision=revision, native_sidecars=native_sidecars,
                                                     image=image))
    return answer(request, True, patchType=JSON_PATCH,
                  patch=base64.b64encode(json.dumps(patch.patch).encode()).decode())


def _injects(pod: Mapping[str, Any], namespace: str, mutants: frozenset[str]) -> bool:
    if NO_INJECTION in mutants:
        return False
    metadata = pod.get("metadata") or {}
    labels, annotations = dict(metadata.get("labels") or {}), dict(metadata.get("annotations") or {})
    if INJECT_OPTED_OUT in mutants:
        labels.pop(INJECT, None)
        annotations.pop(INJECT, None)
    return istiod_refuses(namespace, labels, annotations, bool((pod.get("spec") or {}).get("hostNetwork"))) is None


class Injector:
    """istiod's injection webhook on `host:port` (0: any free port), serving a certificate for
    istiod[-revision].istio-system.svc from the mesh's CA."""

    def __init__(self, ca: MeshCA, host: str, port: int = 0, *, revision: str = DEFAULT_REVISION,
                 native_sidecars: bool = False, image: str = PROXY_IMAGE, mutants: frozenset[str] = frozenset()) -> None:
        self.revision = revision
        self.mutants = mutants
        self.native_sidecars = native_sidecars
        self.image = image
        self._cert = ca.issue_server([webhook_dns_name(revision)])
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # istiod serves its webhooks on one port: /inject, and /validate once a validator is added.
        self.routes: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {INJECT_PATH: self.answer}

    def serve(self, path: str, answer: Callable[[Mapping[str, Any]], dict[str, Any]]) -> None:
        """Answer AdmissionReviews POSTed to `path` with `answer` too."""
        self.routes[path] = answer

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens; kept after stop() (a stopped webhook's address still resolves)."""
        if self._port == 0:
            raise RuntimeError("the injector has no port until it starts")
        return self._host, self._port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"https://{host}:{port}{INJECT_PATH}"

    def start(self) -> None:
        server = _TLSServer((self._host, self._port), _handler(self))
        # The handshake happens in the request's thread: a slow or refusing client cannot stall accept().
        server.socket = self._tls().wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        # The port stays for a restart: a webhook's address does not move.
        self._port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="injector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def answer(self, review: Mapping[str, Any]) -> dict[str, Any]:
        return review_response(review, revision=self.revision, native_sidecars=self.native_sidecars, image=self.image,
                               mutants=self.mutants)

    def _tls(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # load_cert_chain reads files only; they live just long enough to be read.
        with tempfile.TemporaryDirectory() as scratch:
            cert, key = Path(scratch, "cert.pem"), Path(scratch, "key.pem")
            cert.write_text(self._cert.chain_pem)
            key.write_text(self._cert.key_pem)
            context.load_cert_chain(cert, key)
        return context


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that refuses the certificate or hangs up is its own failure, reported there.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _handler(injector: Injector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Seconds a client may take to finish its handshake and request (as a webhook's timeout).
        timeout = 30

        def setup(self) -> None:
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
            super().setup()

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            route = injector.routes.get(self.path.split("?", 1)[0])
            if route is None:
                self._reply(404, {"message": f"no handler for {self.path}"})
                return
            # serveInject refuses anything but JSON (webhook.go).
            if self.headers.get("Content-Type", "").split(";", 1)[0].strip() != "application/json":
                self._reply(415, {"message": "invalid Content-Type, want `application/json`"})
                return
            try:
                review = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                answer = route(review)
            except ValueError as error:
                self._reply(400, {"message": f"could not decode body: {error}"})
                return
            self._reply(200, answer)

        def _reply(self, status: int, body: Mapping[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the mesh's logs are its processes'; the caller sees every answer

    return Handler
