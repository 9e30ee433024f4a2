"""What the translator works from: the mesh's stored objects and running pods as one MeshState,
and the service registry the apps' clients without a sidecar read."""

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance.targets.local import workloads
from conformance.targets.local.gateway_deployer import is_gateway_api_gateway
from conformance.targets.local.ingress_conversion import converted
from conformance.targets.local.model import MeshState, Pod
from conformance.targets.local.objects import Key


def mesh_state(objects: Mapping[Key, dict[str, Any]], pods: Sequence[Pod], mutants: frozenset[str]) -> MeshState:
    def docs(kind: str) -> tuple[dict[str, Any], ...]:
        return tuple(d for (_, k, _, _), d in objects.items() if k == kind)

    services = tuple(workloads.service(d, ns) for (_, k, ns, _), d in objects.items() if k == "Service")
    # What istiod makes of the Ingresses it serves: Istio Gateways and VirtualServices.
    ingress_gateways, ingress_routes = converted(docs("Ingress"), docs("IngressClass"))
    return MeshState(
        services=services,
        pods=tuple(pods),
        virtual_services=(*docs("VirtualService"), *ingress_routes),
        destination_rules=docs("DestinationRule"),
        gateways=(*(d for d in docs("Gateway") if not is_gateway_api_gateway(d)), *ingress_gateways),
        gateway_api_gateways=tuple(d for d in docs("Gateway") if is_gateway_api_gateway(d)),
        mutants=mutants,
        http_routes=docs("HTTPRoute"),
        peer_authentications=docs("PeerAuthentication"),
        authorization_policies=docs("AuthorizationPolicy"),
        secrets=docs("Secret"),
    )


def write_registry(path: Path, state: MeshState) -> None:
    """The endpoints of a client without a sidecar: a Service's ready pods, as with kube-proxy."""
    entries = {
        f"{svc.fqdn}:{port.port}": [f"{pod.ip}:{port.target_port}" for pod in state.endpoints[svc.fqdn]]
        for svc in state.services
        for port in svc.ports
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
    os.replace(tmp, path)
