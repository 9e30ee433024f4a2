"""Kubernetes core kinds the local mesh runs: Namespace, ServiceAccount, Service, Deployment."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conformance.errors import ManifestError, UnsupportedResource
from conformance.targets.local import images
from conformance.targets.local.fields import ANY, check_fields
from conformance.targets.local.model import Service, ServicePort

METADATA = {"name": ANY, "namespace": ANY, "labels": ANY, "annotations": ANY}
_BASE = {"apiVersion": ANY, "kind": ANY, "metadata": METADATA}

ALLOWED: dict[str, Mapping[str, Any]] = {
    "Namespace": _BASE,
    "ServiceAccount": _BASE,
    "Service": {
        **_BASE,
        "spec": {
            # type is accepted: every local Service behaves as ClusterIP.
            "type": ANY,
            "selector": ANY,
            "ports": {"name": ANY, "port": ANY, "targetPort": ANY, "protocol": ANY, "appProtocol": ANY},
        },
    },
    "Deployment": {
        **_BASE,
        "spec": {
            "replicas": ANY,
            "selector": {"matchLabels": ANY},
            "template": {
                "metadata": {"labels": ANY, "annotations": ANY},
                "spec": {
                    "serviceAccountName": ANY,
                    "terminationGracePeriodSeconds": ANY,
                    # Read for the injection decision only: the pod still gets its own address.
                    "hostNetwork": ANY,
                    "containers": {
                        "name": ANY,
                        "image": ANY,
                        # Pull policy has no meaning without a registry; accepted, no effect.
                        "imagePullPolicy": ANY,
                        "command": ANY,
                        "args": ANY,
                        "ports": {"containerPort": ANY, "name": ANY, "protocol": ANY},
                    },
                },
            },
        },
    },
}

API_VERSIONS = {"Namespace": "v1", "ServiceAccount": "v1", "Service": "v1", "Deployment": "apps/v1"}


@dataclass(frozen=True)
class Workload:
    """A Deployment, reduced to what the local mesh runs."""

    name: str
    namespace: str
    replicas: int
    selector: Mapping[str, str]
    pod_labels: Mapping[str, str]
    pod_annotations: Mapping[str, str]
    service_account: str
    container: str
    image: str
    app: images.AppSpec
    ports: tuple[int, ...]
    host_network: bool = False


def where(doc: Mapping[str, Any], namespace: str) -> str:
    return f"{doc.get('kind')} {namespace}/{doc.get('metadata', {}).get('name')}"


def check(doc: Mapping[str, Any], namespace: str) -> None:
    kind = doc.get("kind", "")
    here = where(doc, namespace)
    if kind not in ALLOWED:
        raise UnsupportedResource(f"{here}: kind {kind!r} is not implemented by the local mesh")
    if doc.get("apiVersion") != API_VERSIONS[kind]:
        raise UnsupportedResource(f"{here}: apiVersion {doc.get('apiVersion')!r} (expected {API_VERSIONS[kind]})")
    check_fields(doc, ALLOWED[kind], here)
    if kind == "Service":
        service(doc, namespace)
    elif kind == "Deployment":
        workload(doc, namespace)


def service(doc: Mapping[str, Any], namespace: str) -> Service:
    spec = doc.get("spec", {})
    here = where(doc, namespace)
    ports = []
    for i, p in enumerate(spec.get("ports", [])):
        target = p.get("targetPort", p["port"])
        if not isinstance(target, int):
            raise UnsupportedResource(
                f"{here}: field spec.ports[{i}].targetPort by name is not implemented by the local mesh")
        if p.get("protocol", "TCP") != "TCP":
            raise UnsupportedResource(
                f"{here}: spec.ports[{i}].protocol {p['protocol']} is not implemented by the local mesh")
        ports.append(ServicePort(p.get("name", ""), int(p["port"]), target))
    return Service(doc["metadata"]["name"], namespace, tuple(ports), dict(spec.get("selector", {})))


def workload(doc: Mapping[str, Any], namespace: str) -> Workload:
    here = where(doc, namespace)
    spec = doc.get("spec", {})
    template = spec.get("template", {})
    pod_spec = template.get("spec", {})
    containers = pod_spec.get("containers", [])
    if len(containers) != 1:
        raise UnsupportedResource(f"{here}: {len(containers)} containers; the local mesh runs exactly one per pod")
    container = containers[0]
    labels = dict(template.get("metadata", {}).get("labels", {}))
    selector = dict(spec.get("selector", {}).get("matchLabels", {}))
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        raise UnsupportedResource(f"{here}: spec.selector.matchLabels must be non-empty and match the template labels")
    app = images.resolve_container(container, here)
    host_network = pod_spec.get("hostNetwork", False)
    if not isinstance(host_network, bool):
        raise ManifestError(f"{here}: spec.template.spec.hostNetwork must be true or false")
    if app.app == "gateway" and container.get("args", ["proxy", "router"])[:2] != ["proxy", "router"]:
        raise UnsupportedResource(f"{here}: istio/proxyv2 runs here only as a gateway (args: proxy router)")
    return Workload(
        name=doc["metadata"]["name"],
        namespace=namespace,
        replicas=int(spec.get("replicas", 1)),
        selector=selector,
        pod_labels=labels,
        pod_annotations=dict(template.get("metadata", {}).get("annotations", {})),
        service_account=pod_spec.get("serviceAccountName", "default"),
        container=container.get("name", "app"),
        image=container["image"],
        app=app,
        ports=tuple(int(p["containerPort"]) for p in container.get("ports", [])),
        host_network=host_network,
    )
