"""The local mesh's own behaviour: refusal before any change, injection, endpoint readiness,
process lifetime."""

import copy
import os
from pathlib import Path

import pytest

from conformance import manifests
from conformance.errors import ConformanceError, UnsupportedResource
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.model import OUTBOUND_PORT
from conformance.targets.local.pods import RunningPod
from conformance.targets.local.target import namespace_doc
from tests.builders import deployment_doc, eventually, http_get, mesh_processes

# A sitecustomize that holds an app before it listens (see its docstring).
GATE = Path(__file__).parent / "data" / "gate"


@pytest.fixture
def mesh(tmp_path: Path):  # type: ignore[no-untyped-def]
    m = LocalMesh(tmp_path / "run")
    yield m
    m.stop()
    assert mesh_processes(str(tmp_path)) == []


def docs(name: str, kind: str | None = None) -> list[dict]:
    return [d for d in manifests.load(name) if kind is None or d["kind"] == kind]


def test_refused_document_leaves_nothing_applied(mesh: LocalMesh, tmp_path: Path) -> None:
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    before = dict(mesh.objects)
    bad = copy.deepcopy(docs("bookinfo/bookinfo.yaml", "Deployment")[0])
    bad["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/unknown/app:1"
    with pytest.raises(UnsupportedResource, match="image 'example.com/unknown/app:1'"):
        mesh.apply(docs("bookinfo/bookinfo.yaml", "Service") + [bad], "ns")
    assert mesh.objects == before and mesh.running() == []
    assert mesh_processes(str(tmp_path)) == []


def test_missing_namespace_is_refused(mesh: LocalMesh) -> None:
    with pytest.raises(ConformanceError, match="namespace 'nowhere' does not exist"):
        mesh.apply(docs("clients/curl.yaml"), "nowhere")


@pytest.mark.parametrize(("labels", "injected"), [({"istio-injection": "enabled"}, True), ({}, False)])
def test_injection_follows_namespace_label(mesh: LocalMesh, tmp_path: Path, labels: dict, injected: bool) -> None:
    mesh.apply([namespace_doc("ns", labels)], "ns")
    mesh.apply(docs("clients/curl.yaml"), "ns")
    mesh.wait_ready("ns", 30, 0.05)
    (pod,) = mesh.running()
    view = pod.view()
    assert ("istio-proxy" in view.containers) is injected
    assert ("sidecar.istio.io/status" in view.annotations) is injected
    assert (pod.proxy is not None) is injected
    assert len(mesh_processes(str(tmp_path))) == (2 if injected else 1)


@pytest.mark.parametrize(("namespace", "annotations", "host_network", "injected"), [
    ("ns", {}, None, True),
    # istio/istio pkg/kube/inject/inject.go injectRequired: the annotation counts when no label says.
    ("ns", {"sidecar.istio.io/inject": "false"}, None, False),
    ("ns", {"sidecar.istio.io/inject": "false"}, False, False),
    ("ns", {}, True, False),  # inject.go: never a hostNetwork pod
    ("kube-system", {}, None, False),  # pkg/kube/inject/initializer.go IgnoredNamespaces
])
def test_the_pod_template_reaches_the_injection_decision(
    mesh: LocalMesh, namespace: str, annotations: dict, host_network: bool | None, injected: bool
) -> None:
    mesh.apply([namespace_doc(namespace, {"istio-injection": "enabled"})], namespace)
    mesh.apply([deployment_doc("web", annotations=annotations, host_network=host_network)], namespace)
    mesh.wait_ready(namespace, 30, 0.05)
    (pod,) = mesh.running()
    assert (pod.proxy is not None) is injected, pod.injection.reason
    assert ("istio-proxy" in pod.view().containers) is injected


def _endpoints(pod: RunningPod, cluster: str) -> list[str] | None:
    """The hosts of `cluster` in the pod's Envoy, or None while Envoy has no such cluster."""
    assert pod.proxy is not None
    lines = pod.proxy.admin("/clusters").text.splitlines()
    if not any(line.startswith(f"{cluster}::") for line in lines):
        return None
    return sorted({line.split("::")[1] for line in lines
                   if line.startswith(f"{cluster}::") and line.split("::")[1][:1].isdigit()})


def test_a_pod_gets_traffic_only_once_ready(mesh: LocalMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only ready pods are endpoints: istiod sends no unhealthy endpoint by default
    (istio/istio pilot/pkg/xds/endpoints/endpoint_builder.go, PILOT_SEND_UNHEALTHY_ENDPOINTS);
    the mesh pushes when a pod becomes ready, as Kubernetes updates a Service's endpoints.
    The pod's own sidecar is configured meanwhile."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(GATE), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("MESHCONF_GATE_FIFO", str(gate))
    monkeypatch.setenv("MESHCONF_GATE_POD", "httpbin-")
    mesh.apply([namespace_doc(ns, {"istio-injection": "enabled"}) for ns in ("web", "tools")], "web")
    mesh.apply(docs("clients/httpbin.yaml"), "web")
    mesh.apply(docs("clients/curl.yaml"), "tools")
    mesh.wait_ready("tools", 30, 0.05)
    [httpbin] = [p for p in mesh.running() if p.workload.name == "httpbin"]
    [curl] = [p for p in mesh.running() if p.workload.name == "curl"]
    cluster = "outbound|8000||httpbin.web.svc.cluster.local"

    def get() -> tuple[int, str]:
        status, _, body = http_get(curl.model.ip, OUTBOUND_PORT, "http://httpbin.web:8000/get")
        return status, body

    # Not ready: the client's sidecar has the service, without endpoint.
    eventually(lambda: _endpoints(curl, cluster) is not None, "the client's sidecar to know httpbin")
    assert _endpoints(curl, cluster) == []
    assert get() == (503, "no healthy upstream")
    assert not httpbin.ready()
    # The pod's own sidecar has its configuration: its inbound listener.
    assert httpbin.proxy is not None
    proxy = httpbin.proxy
    assert eventually(lambda: f"inbound_{httpbin.model.ip}_8080" in proxy.admin("/listeners").text,
                      "the not-ready pod's sidecar to be configured")

    # Let the app start: nobody calls wait_ready, the mesh notices on its own.
    os.close(eventually(lambda: os.open(gate, os.O_WRONLY | os.O_NONBLOCK), "the gated app to open its gate"))
    assert eventually(lambda: get()[0] == 200, "httpbin to get traffic once ready")
    assert _endpoints(curl, cluster) == [f"{httpbin.model.ip}:8080"]


def test_deleting_a_deployment_stops_its_processes(mesh: LocalMesh, tmp_path: Path) -> None:
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    curl = docs("clients/curl.yaml")
    mesh.apply(curl, "ns")
    mesh.wait_ready("ns", 30, 0.05)
    mesh.delete([d for d in curl if d["kind"] == "Deployment"], "ns")
    assert mesh.running() == [] and mesh_processes(str(tmp_path)) == []


def test_a_document_refused_in_translation_is_not_kept(mesh: LocalMesh, tmp_path: Path) -> None:
    """A route the translator cannot build is refused at apply and removed again: later
    applies still work, and the proxies keep the configuration they had."""
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    mesh.apply(docs("clients/curl.yaml"), "ns")
    mesh.wait_ready("ns", 30, 0.05)
    before = dict(mesh.objects)
    no_destination = {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "curl-broken", "namespace": "ns"},
        "spec": {"hosts": ["curl"], "http": [{"match": [{"uri": {"prefix": "/"}}]}]},
    }
    with pytest.raises(ConformanceError, match="has no route"):
        mesh.apply([no_destination], "ns")
    assert mesh.objects == before
    mesh.apply(docs("clients/curl.yaml"), "ns")  # the next push translates without it
    assert len(mesh.running()) == 1
