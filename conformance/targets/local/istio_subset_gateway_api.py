"""The Gateway API kinds the local mesh implements: HTTPRoutes whose parents are Services (GAMMA,
routing inside the mesh), with Service backends.

Their allow-trees (SPECS, the `spec` of each kind) and the checks of the allowed fields' values;
istio_subset.py runs them. `name` in every check is the document as messages name it
(istio_subset.describe).
"""

from collections.abc import Mapping
from typing import Any

from conformance.errors import UnsupportedResource
from conformance.names import GATEWAY_API_GROUP
from conformance.targets.local.fields import ANY, Node

SPECS: Mapping[str, Mapping[str, Node]] = {
    "HTTPRoute": {
        "parentRefs": {"group": ANY, "kind": ANY, "name": ANY, "namespace": ANY, "port": ANY},
        # Accepted and ignored: for a Service parent the Service names the host, as in Istio.
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
    """Parents must be Services (GAMMA) and backends Services of the route's own namespace."""
    spec = doc.get("spec") or {}
    for index, ref in enumerate(spec.get("parentRefs") or []):
        # Gateway API defaults: group gateway.networking.k8s.io, kind Gateway.
        group = ref.get("group", GATEWAY_API_GROUP)
        kind = ref.get("kind", "Gateway")
        if (group, kind) == (GATEWAY_API_GROUP, "Gateway"):
            raise UnsupportedResource(
                f"{name}: field spec.parentRefs[{index}] names Gateway {ref.get('name')!r}: "
                f"Gateway API Gateways are not implemented by the local mesh yet (only Service parents, "
                f"group \"\" kind Service)"
            )
        if (group, kind) != ("", "Service"):
            raise UnsupportedResource(
                f"{name}: field spec.parentRefs[{index}] of group {group!r} kind {kind!r} is not "
                f"implemented by the local mesh (only Service parents, group \"\" kind Service)"
            )
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
