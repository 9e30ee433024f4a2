"""The Gateway API kinds the local mesh implements: HTTPRoutes whose parents are Services (GAMMA,
routing inside the mesh) or Gateways of class istio (ingress), with Service backends; and Gateways
of class istio with HTTP listeners, which the mesh deploys a gateway for (gateway_deployer.py).

Their allow-trees (SPECS, the `spec` of each kind) and the checks of the allowed fields' values;
istio_subset.py runs them. `name` in every check is the document as messages name it
(istio_subset.describe).
"""

from collections.abc import Mapping
from typing import Any

from conformance.errors import UnsupportedResource
from conformance.names import GATEWAY_API_GROUP
from conformance.targets.gateway_api_ingress import ISTIO_GATEWAY_CLASS
from conformance.targets.local.fields import ANY, Node

SPECS: Mapping[str, Mapping[str, Node]] = {
    "Gateway": {
        "gatewayClassName": ANY,
        "listeners": {
            "name": ANY, "hostname": ANY, "port": ANY, "protocol": ANY,
            "allowedRoutes": {"namespaces": {"from": ANY}},
        },
    },
    "HTTPRoute": {
        "parentRefs": {"group": ANY, "kind": ANY, "name": ANY, "namespace": ANY, "port": ANY, "sectionName": ANY},
        # For a Service parent the Service names the host, as in Istio: ignored there. For a
        # Gateway parent they choose the virtual hosts (translator/gateway_api_gateway.py).
        "hostnames": ANY,
        "rules": {
            "name": ANY,
            "matches": {
                "path": {"type": ANY, "value": ANY},
                "headers": {"type": ANY, "name": ANY, "value": ANY},
            },
            "backendRefs": {"group": ANY, "kind": ANY, "name": ANY, "namespace": ANY, "port": ANY, "weight": ANY},
            "timeouts": {"request": ANY},
        },
    },
}


def check_values(doc: Mapping[str, Any], name: str) -> None:
    if doc.get("kind") == "Gateway":
        _check_gateway(doc, name)
        return
    _check_http_route(doc, name)


def _check_gateway(doc: Mapping[str, Any], name: str) -> None:
    """Class istio (the one whose gateways istiod deploys), HTTP listeners, routes from Same or All."""
    spec = doc.get("spec") or {}
    if spec.get("gatewayClassName") != ISTIO_GATEWAY_CLASS:
        raise UnsupportedResource(
            f"{name}: field spec.gatewayClassName {spec.get('gatewayClassName')!r} is not implemented by the "
            f"local mesh (only {ISTIO_GATEWAY_CLASS!r})")
    for index, listener in enumerate(spec.get("listeners") or []):
        where = f"spec.listeners[{index}]"
        if listener.get("protocol") != "HTTP":
            raise UnsupportedResource(
                f"{name}: field {where}.protocol {listener.get('protocol')!r} is not implemented by the local "
                f"mesh (only HTTP)")
        allowed = ((listener.get("allowedRoutes") or {}).get("namespaces") or {}).get("from", "Same")
        if allowed not in ("Same", "All"):
            raise UnsupportedResource(
                f"{name}: field {where}.allowedRoutes.namespaces.from {allowed!r} is not implemented by the "
                f"local mesh (only Same or All)")


def _check_http_route(doc: Mapping[str, Any], name: str) -> None:
    """Parents must be Services (GAMMA) or Gateways, backends Services of the route's own namespace."""
    spec = doc.get("spec") or {}
    for index, ref in enumerate(spec.get("parentRefs") or []):
        # Gateway API defaults: group gateway.networking.k8s.io, kind Gateway.
        group = ref.get("group", GATEWAY_API_GROUP)
        kind = ref.get("kind", "Gateway")
        if (group, kind) not in (("", "Service"), (GATEWAY_API_GROUP, "Gateway")):
            raise UnsupportedResource(
                f"{name}: field spec.parentRefs[{index}] of group {group!r} kind {kind!r} is not "
                f"implemented by the local mesh (only Services, group \"\" kind Service, and Gateways)"
            )
        if kind == "Service" and ref.get("sectionName") is not None:
            raise UnsupportedResource(
                f"{name}: field spec.parentRefs[{index}].sectionName is not implemented by the local mesh "
                f"for a Service parent")
    namespace = (doc.get("metadata") or {}).get("namespace")
    for rule_index, rule in enumerate(spec.get("rules") or []):
        for index, ref in enumerate(rule.get("backendRefs") or []):
            path = f"spec.rules[{rule_index}].backendRefs[{index}]"
            # Gateway API defaults for a backend: the core group, kind Service.
            group, kind = ref.get("group", ""), ref.get("kind", "Service")
            if (group, kind) != ("", "Service"):
                raise UnsupportedResource(
                    f"{name}: field {path} of group {group!r} kind {kind!r} is not implemented "
                    f"by the local mesh (only Services)"
                )
            if ref.get("namespace") not in (None, namespace):
                # Another namespace needs a ReferenceGrant, which the local mesh does not implement.
                raise UnsupportedResource(
                    f"{name}: field {path}.namespace {ref['namespace']!r} is not implemented by the "
                    f"local mesh (only the route's own namespace)"
                )
