"""What the fake Kubernetes API (tests/fakeapi.py) fills in a Service it stores, as the API server's
Service storage allocates on a write (kubernetes/kubernetes pkg/registry/core/service/storage/
alloc.go, allocateCreate; refusals in pkg/registry/core/service/portallocator/allocator.go):

- a cluster IP, unless the Service is ExternalName or sets its own;
- as NodePort or LoadBalancer, a node port per port from 30000-32767, each used once across the
  cluster: a taken or out-of-range nodePort is 422 Invalid;
- an empty load balancer status: no controller gives a LoadBalancer an ingress address, as on kind.
"""

from typing import Any

from conformance.targets.field_errors import INVALID, FieldError, invalid_message
from tests.fake_admission import Objects
from tests.fake_discovery import Route
from tests.fake_http import Reply, status

NODE_PORTS = range(30000, 32768)  # the API server's default --service-node-port-range
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
ALREADY_ALLOCATED = "provided port is already allocated"  # portallocator.ErrAllocated
NOT_IN_RANGE = ("provided port is not in the valid range. The range of valid ports is "  # ErrNotInRange
                f"{NODE_PORTS.start}-{NODE_PORTS.stop - 1}")


def allocate(objects: Objects, route: Route, service: dict[str, Any]) -> Reply | None:
    """Fill in `service` (stored at route) in place; the refusal, if its node ports cannot be had."""
    spec = service.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
        spec["clusterIP"] = _cluster_ip(objects)
    service.setdefault("status", {"loadBalancer": {}})
    if spec["type"] not in NODE_PORT_TYPES:
        return None
    return _node_ports(service, _taken(objects, route))


def _cluster_ip(objects: Objects) -> str:
    # Not a real allocator: an address derived from how many objects the fake holds.
    return f"10.96.{len(objects) // 250}.{len(objects) % 250 + 1}"


def _taken(objects: Objects, route: Route) -> set[int]:
    """The node ports of every other Service (the one being written may keep its own)."""
    return {p["nodePort"] for path, other in objects.items() if path != route.object_path
            and other.get("kind") == "Service" for p in (other.get("spec") or {}).get("ports") or []
            if p.get("nodePort") is not None}


def _node_ports(service: dict[str, Any], taken: set[int]) -> Reply | None:
    free = (n for n in NODE_PORTS if n not in taken)
    for index, port in enumerate(service["spec"].get("ports") or []):
        wanted = port.get("nodePort")
        if wanted in taken or (wanted is not None and wanted not in NODE_PORTS):
            reason = ALREADY_ALLOCATED if wanted in taken else NOT_IN_RANGE
            error = FieldError(INVALID, f"spec.ports[{index}].nodePort", f"Invalid value: {wanted}: {reason}")
            message = invalid_message("Service", "", service["metadata"]["name"], [error])
            return Reply(422, status(422, "Invalid", message))
        if wanted is None:
            port["nodePort"] = next(free)
        taken.add(port["nodePort"])
    return None
