"""Plain helpers, data builders and constants shared by the harness's own tests.

Test files import shared helpers from here, those of the tests that run real Envoy processes
from tests/envoy_builders.py, the admission tests' from tests/admission_builders.py, the
cluster side's from tests/cluster_builders.py
(and from the fakes: tests/fakeapi.py, tests/fakes/, tests/release_server.py,
tests/fakeforward.py, tests/fakegateway.py), never from another test file or from
tests/conftest.py. Shared pytest fixtures
are in tests/conftest.py: pytest finds them by name, they are never imported.
"""

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance import manifests
from conformance.errors import ConformanceError, ManifestError
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.model import MeshState, Pod, Service, ServicePort
from conformance.targets.local.translator import ProxyConfig, translate

REPO = Path(__file__).resolve().parent.parent
# The upstream samples the tests compare with (provenance and license in tests/upstream/README.md);
# the upstream CRDs are package data (conformance.targets.crd_schema.CRD_DIR).
UPSTREAM = REPO / "tests" / "upstream"


def upstream_file(relative: str | Path, reference: Path = UPSTREAM) -> Path:
    """reference/relative (e.g. "istio/curl__curl.yaml"); an error naming the path if it is missing."""
    path = reference / relative
    if not path.is_file():
        raise ConformanceError(f"upstream file not found: {path} (see tests/upstream/README.md)")
    return path


# ---------------------------------------------------------------------------------------------
# The CLI, run as a user would


# The test modules that run whole meshes (Bookinfo, its clients and the gateway: about 25
# processes each) share one xdist worker: two meshes at once on two cores slow each other
# past the features' timing windows.
WHOLE_MESH = pytest.mark.xdist_group("whole-mesh")


def meshconf(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "conformance.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@contextmanager
def running_local_mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    """A local mesh in tmp_path, stopped at the end, leaving no process behind."""
    local = LocalMesh(tmp_path / "run")
    try:
        yield local
    finally:
        local.stop()
    assert mesh_processes(str(tmp_path)) == []


def manifest_docs(name: str, kind: str | None = None) -> list[dict]:
    """The documents of manifests/<name>, those of `kind` only if given."""
    return [d for d in manifests.load(name) if kind is None or d["kind"] == kind]


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
# The local mesh's translator: inputs (a Bookinfo mesh, Istio documents, upstream samples)

NS = "bookinfo"
GATEWAY_NS = "istio-system"
ISTIO_API = "networking.istio.io/v1"
GATEWAY_API_V1 = "gateway.networking.k8s.io/v1"


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
RATINGS_DR = destination_rule("ratings", ["v1"])
# Bookinfo's per-version Services (samples/bookinfo/platform/kube/bookinfo-versions.yaml).
VERSION_SERVICES = tuple(
    Service(f"reviews-{v}", NS, (ServicePort("http", 9080, 9080),), {"app": "reviews", "version": v})
    for v in ("v1", "v2", "v3")
)
WITH_VERSIONS = (*BOOKINFO_SERVICES, *VERSION_SERVICES)


def gateway_vs(name: str, hosts: list[str], gateways: list[str], namespace: str = NS) -> dict:
    """A VirtualService bound to `gateways`, routing `hosts` to productpage."""
    return virtual_service(name, [{"route": [to("productpage", port=9080)]}], hosts=hosts,
                           namespace=namespace, gateways=gateways)


# ---------------------------------------------------------------------------------------------
# The local mesh's translator: reading outputs

REVIEWS_HOST = "reviews.bookinfo.svc.cluster.local"
REVIEWS_VHOST = f"{REVIEWS_HOST}:9080"
RATINGS_VHOST = "ratings.bookinfo.svc.cluster.local:9080"
DETAILS_VHOST = "details.bookinfo.svc.cluster.local:9080"


def virtual_hosts(config: ProxyConfig, route_name: str) -> dict[str, dict]:
    return {vh["name"]: vh for vh in config.routes[route_name]["virtual_hosts"]}


def outbound_routes(config: ProxyConfig, fqdn_port: str) -> list[dict]:
    return virtual_hosts(config, "outbound")[fqdn_port]["routes"]


def sidecar(state: MeshState, pod: Pod = PRODUCTPAGE) -> ProxyConfig:
    return translate(pod, state)


def hcm_of(listener: dict) -> dict:
    """The HTTP connection manager of a listener's first filter chain."""
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def weights(route: dict) -> list[tuple[str, int]]:
    """A route's weighted clusters: (name, weight)."""
    return [(c["name"], c["weight"]) for c in route["route"]["weighted_clusters"]["clusters"]]


# ---------------------------------------------------------------------------------------------
# Waiting for a condition


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
# The local mesh's translator: Gateway API HTTPRoutes for the mesh (GAMMA)


def http_route(name: str, rules: list[dict], parent: str | None = None, port: int | None = 9080,
               namespace: str = NS, parent_namespace: str | None = None) -> dict:
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": parent or name}
    if port is not None:
        ref["port"] = port
    if parent_namespace is not None:
        ref["namespace"] = parent_namespace
    return {"apiVersion": GATEWAY_API_V1, "kind": "HTTPRoute", "metadata": metadata(name, namespace),
            "spec": {"parentRefs": [ref], "rules": rules}}


def backend(name: str, weight: int | None = None, port: int = 9080) -> dict:
    ref: dict[str, Any] = {"name": name, "port": port}
    if weight is not None:
        ref["weight"] = weight
    return ref


def gamma(*docs: Mapping[str, Any], pod: Pod = PRODUCTPAGE, mutants: frozenset[str] = frozenset(),
          services: tuple[Service, ...] = WITH_VERSIONS) -> ProxyConfig:
    return translate(pod, mesh(*docs, services=services, mutants=mutants))


def load_gateway_api_sample(name: str, namespace: str = NS) -> list[dict]:
    return load_sample(f"bookinfo__gateway-api__{name}", namespace)


def version_cluster(version: str) -> str:
    return f"outbound|9080||reviews-{version}.bookinfo.svc.cluster.local"


# ---------------------------------------------------------------------------------------------
# The local mesh run for real: workload documents, and requests through its proxies

# The Bookinfo reviews app (v1 calls nothing): its JSON names the pod that served it.
REVIEWS_V1_IMAGE = "docker.io/istio/examples-bookinfo-reviews-v1:1.20.3"


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
