"""The local mesh's own behaviour: refusal before any change, injection, process lifetime."""

import copy
from pathlib import Path

import pytest

from conformance import manifests
from conformance.errors import ConformanceError, UnsupportedResource
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.target import namespace_doc
from tests.builders import mesh_processes


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


def test_deleting_a_deployment_stops_its_processes(mesh: LocalMesh, tmp_path: Path) -> None:
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    curl = docs("clients/curl.yaml")
    mesh.apply(curl, "ns")
    mesh.wait_ready("ns", 30, 0.05)
    mesh.delete([d for d in curl if d["kind"] == "Deployment"], "ns")
    assert mesh.running() == [] and mesh_processes(str(tmp_path)) == []
