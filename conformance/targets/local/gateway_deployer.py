"""The local mesh's stand-in for istiod's gateway deployment controller, and the Gateway status it writes.

For each Gateway API Gateway of class `istio`, istiod creates a ServiceAccount, a Deployment of
istio/proxyv2 (`proxy router`) and a Service, all named `<gateway>-istio` and labelled for the
Gateway (istio/istio 1.28.0 pilot/pkg/config/kube/gateway/deploymentcontroller.go, rendered by
manifests/charts/istio-control/istio-discovery/files/kube-gateway.yaml), and removes them with
the Gateway (they are owned by it). The local mesh does the same, in its object store, before it
reconciles pods: the gateway pod is then an ordinary gateway proxy of the mesh.

Where the local objects differ from the chart's: the Deployment keeps only the fields the local
mesh runs (no probes, volumes, environment or security context), and the Service has no
`ipFamilyPolicy`.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conformance.names import GATEWAY_API_GROUP, INJECT, ISTIO_REV, PROXY_CONTAINER, DEFAULT_REVISION
from conformance.targets.gateway_api_ingress import (
    DEFAULT_SERVICE_TYPE,
    GATEWAY_CLASS_LABEL,
    GATEWAY_NAME_LABEL,
    ISTIO_GATEWAY_CLASS,
    MANAGED_BY_ISTIO,
    MANAGED_LABEL,
    PROGRAMMED,
    SERVICE_TYPE_ANNOTATION,
    managed_name,
    programmed_gap,
)
from conformance.targets.local.model import CLUSTER_DOMAIN, MeshState
from conformance.targets.local.objects import Key, object_key
from conformance.settings import Timeouts
from conformance.waiting import wait_for

if TYPE_CHECKING:
    from conformance.targets.local.mesh import LocalMesh
    from conformance.targets.local.pods import RunningPod

# The proxy image the local mesh runs as a gateway (manifests/local/ingressgateway.yaml's).
PROXY_IMAGE = "docker.io/istio/proxyv2:1.28.0"
# Istio's gateway status port, first in every managed Service (deploymentcontroller.go extractServicePorts).
STATUS_PORT = 15021


def is_gateway_api_gateway(doc: Mapping[str, Any]) -> bool:
    return doc.get("kind") == "Gateway" and str(doc.get("apiVersion", "")).startswith(f"{GATEWAY_API_GROUP}/")


def is_managed(doc: Mapping[str, Any]) -> bool:
    return ((doc.get("metadata") or {}).get("labels") or {}).get(MANAGED_LABEL) == MANAGED_BY_ISTIO


def istio_gateways(objects: Mapping[Key, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The Gateway API Gateways istiod deploys a gateway for: those of class `istio`."""
    return [d for d in objects.values()
            if is_gateway_api_gateway(d) and (d.get("spec") or {}).get("gatewayClassName") == ISTIO_GATEWAY_CLASS]


def with_deployed_gateways(objects: Mapping[Key, dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """The store after the controller's pass: each istio Gateway's objects created or brought up to
    date, and those of a Gateway that is gone removed (garbage collection of owned objects)."""
    result = {key: doc for key, doc in objects.items() if not is_managed(doc)}
    for gateway in istio_gateways(objects):
        namespace = gateway["metadata"]["namespace"]
        for doc in managed_objects(gateway):
            result[object_key(doc, namespace)] = doc
    return result


def _labels(gateway: Mapping[str, Any]) -> dict[str, str]:
    return {MANAGED_LABEL: MANAGED_BY_ISTIO, GATEWAY_CLASS_LABEL: ISTIO_GATEWAY_CLASS,
            GATEWAY_NAME_LABEL: gateway["metadata"]["name"]}


def managed_objects(gateway: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ServiceAccount, Deployment and Service istiod creates for `gateway`."""
    name, namespace = gateway["metadata"]["name"], gateway["metadata"]["namespace"]
    deployed = managed_name(name)
    labels = _labels(gateway)
    metadata = {"name": deployed, "namespace": namespace, "labels": labels}
    annotations = (gateway.get("metadata") or {}).get("annotations") or {}
    pod_labels = {**labels, INJECT: "false", "service.istio.io/canonical-name": deployed,
                  "service.istio.io/canonical-revision": "latest"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": dict(metadata),
        "spec": {
            "selector": {"matchLabels": {GATEWAY_NAME_LABEL: name}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {ISTIO_REV: DEFAULT_REVISION}},
                "spec": {
                    "serviceAccountName": deployed,
                    "containers": [{"name": PROXY_CONTAINER, "image": PROXY_IMAGE, "args": ["proxy", "router"],
                                    "ports": [{"containerPort": STATUS_PORT, "name": "status-port"}]}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": dict(metadata),
        "spec": {
            "type": annotations.get(SERVICE_TYPE_ANNOTATION, DEFAULT_SERVICE_TYPE),
            "selector": {GATEWAY_NAME_LABEL: name},
            "ports": service_ports(gateway),
        },
    }
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(metadata)}, deployment, service]


def service_ports(gateway: Mapping[str, Any]) -> list[dict[str, Any]]:
    """status-port, then one port per listener port, named after its first listener
    (deploymentcontroller.go extractServicePorts); targetPort is the port itself."""
    ports: list[dict[str, Any]] = [{"name": "status-port", "port": STATUS_PORT, "appProtocol": "tcp"}]
    seen: set[int] = set()
    for listener in (gateway.get("spec") or {}).get("listeners") or []:
        number = int(listener["port"])
        if number in seen:
            continue
        seen.add(number)
        ports.append({"name": str(listener["name"]).replace(".", "-")[:63], "port": number,
                      "appProtocol": str(listener.get("protocol", "")).lower()})
    return ports


def gateway_status(gateway: Mapping[str, Any], state: MeshState) -> dict[str, Any]:
    """The status istiod writes on the Gateway: Accepted, and Programmed once its Service has ready
    endpoints on each listener port and an address (conversion.go setProgrammedCondition, context.go
    ResolveGatewayInstances). A LoadBalancer Service never gets an external address here, as on a
    cluster without a load-balancer controller."""
    name, namespace = gateway["metadata"]["name"], gateway["metadata"]["namespace"]
    fqdn = f"{managed_name(name)}.{namespace}.svc.{CLUSTER_DOMAIN}"
    service = next((s for s in state.services if s.fqdn == fqdn), None)
    ports = sorted({int(listener["port"]) for listener in (gateway.get("spec") or {}).get("listeners") or []})
    internal: list[str] = []
    warnings: list[str] = []
    if service is None:
        warnings.append(f"hostname {fqdn!r} not found")
    elif not state.endpoints.get(fqdn):
        warnings.append(f"no instances found for hostname {fqdn!r}")
    else:
        internal = [f"{fqdn}:{port}" for port in ports]
        if service_type(gateway) == "LoadBalancer":
            warnings.append(f"address pending for hostname {fqdn!r}")
    programmed = {"type": PROGRAMMED, "status": "True", "reason": "Programmed",
                  "message": f"Resource programmed, assigned to service(s) {', '.join(internal)}"}
    if not internal:
        programmed.update(status="False", reason="AddressNotAssigned",
                          message=f"Failed to assign to any requested addresses: {'; '.join(warnings)}")
    elif warnings:
        programmed.update(status="False", reason="AddressNotAssigned",
                          message=f"Assigned to service(s) {', '.join(internal)}, but failed to assign to all "
                                  f"requested addresses: {'; '.join(warnings)}")
    accepted = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Resource accepted"}
    addresses = [{"type": "Hostname", "value": fqdn}] if internal else []
    return {"addresses": addresses, "conditions": [accepted, programmed]}


def service_type(gateway: Mapping[str, Any]) -> str:
    annotations = (gateway.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(SERVICE_TYPE_ANNOTATION, DEFAULT_SERVICE_TYPE))


def wait_for_gateway(mesh: "LocalMesh", gateway: str, namespace: str, timeouts: Timeouts) -> "RunningPod":
    """A ready pod of the gateway deployed for Gateway `namespace/gateway`, once the status istiod
    would write says Programmed (as a cluster run waits, gateway_api_ingress.reach_cluster_gateway)."""
    where = f"{namespace}/{gateway}"

    def pending() -> str | None:
        doc = mesh.objects.get((GATEWAY_API_GROUP, "Gateway", namespace, gateway))
        if doc is None or not is_gateway_api_gateway(doc):
            return f"Gateway {where} does not exist"
        state = mesh.state()
        gap = programmed_gap({**doc, "status": gateway_status(doc, state)}, where)
        if gap is not None:
            return gap
        if not _ready_pods(mesh, gateway, namespace):
            return f"Deployment {namespace}/{managed_name(gateway)}: 0 of 1 replicas available"
        return None

    wait_for(pending, timeouts.rollout, timeouts.poll, f"gateway for Gateway {where}")
    return _ready_pods(mesh, gateway, namespace)[0]


def _ready_pods(mesh: "LocalMesh", gateway: str, namespace: str) -> list["RunningPod"]:
    ready = {(p.namespace, p.name) for p in mesh.state().pods if p.ready}
    return [p for p in mesh.running()
            if p.model.namespace == namespace and p.model.labels.get(GATEWAY_NAME_LABEL) == gateway
            and (p.model.namespace, p.model.name) in ready]
