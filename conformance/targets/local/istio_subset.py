"""The Istio and Gateway API subset the local mesh implements; a check refuses the rest.

The translator reads only the fields allowed here. Anything else in a document
(a mirror, a retry backoff, a loadBalancer...) would be ignored by it, and a check
could then pass on the local mesh for a configuration it never applied. So
every field outside this allow-list is refused with its exact path.

This module holds the entry points and the kind tables; each API area's allow-trees and
value checks live in its own module: istio_subset_networking.py (VirtualService,
DestinationRule, Gateway), istio_subset_security.py (AuthorizationPolicy,
PeerAuthentication) and istio_subset_gateway_api.py (HTTPRoutes whose parents are Services, GAMMA,
or Gateways of class istio, and those Gateways).
"""

from collections.abc import Collection, Mapping
from typing import Any

from conformance.errors import UnsupportedResource
from conformance.names import GATEWAY_API_GROUP, ISTIO_NETWORKING_GROUP
from conformance.targets.local import istio_subset_gateway_api as gateway_api
from conformance.targets.local import istio_subset_networking as networking
from conformance.targets.local import istio_subset_security as security
from conformance.targets.local.fields import ANY, Node, check_fields

API_VERSIONS = frozenset({f"{ISTIO_NETWORKING_GROUP}/v1", f"{ISTIO_NETWORKING_GROUP}/v1beta1",
                          f"{ISTIO_NETWORKING_GROUP}/v1alpha3"})
GATEWAY_API_VERSIONS = frozenset({f"{GATEWAY_API_GROUP}/v1", f"{GATEWAY_API_GROUP}/v1beta1"})
# Istio's security kinds (security.istio.io).
ISTIO_SECURITY_GROUP = "security.istio.io"
SECURITY_API_VERSIONS = frozenset({f"{ISTIO_SECURITY_GROUP}/v1", f"{ISTIO_SECURITY_GROUP}/v1beta1"})

# Top-level fields common to every kind; status is written by the cluster, not configuration.
_COMMON: Mapping[str, Node] = {"apiVersion": ANY, "kind": ANY, "metadata": ANY, "status": ANY}


def _documents(specs: Mapping[str, Mapping[str, Node]]) -> dict[str, Mapping[str, Node]]:
    """Whole-document allow-trees from an API area's `spec` trees."""
    return {kind: {**_COMMON, "spec": spec} for kind, spec in specs.items()}


_SCHEMAS: Mapping[str, Mapping[str, Node]] = {**_documents(networking.SPECS), **_documents(security.SPECS)}
# The API versions of a kind outside Istio's networking group.
_KIND_API_VERSIONS: Mapping[str, frozenset[str]] = {kind: SECURITY_API_VERSIONS for kind in security.SPECS}

SUPPORTED_KINDS = tuple(_SCHEMAS)

_GATEWAY_API_SCHEMAS: Mapping[str, Mapping[str, Node]] = _documents(gateway_api.SPECS)
GATEWAY_API_KINDS = tuple(_GATEWAY_API_SCHEMAS)


def describe(doc: Mapping[str, Any]) -> str:
    """`Kind ns/name` (or `Kind name` without a namespace), as messages name a document."""
    metadata = doc.get("metadata") or {}
    name = metadata.get("name", "<unnamed>")
    namespace = metadata.get("namespace")
    return f"{doc.get('kind')} {namespace}/{name}" if namespace else f"{doc.get('kind')} {name}"


def api_group(doc: Mapping[str, Any]) -> str:
    """The group of a document's apiVersion ("" for the core group, as in `v1`)."""
    api_version = str(doc.get("apiVersion") or "")
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def check_supported(doc: Mapping[str, Any]) -> None:
    """Raise UnsupportedResource unless the local mesh implements every field of `doc`."""
    if api_group(doc) == GATEWAY_API_GROUP:
        _check_gateway_api(doc)
        return
    kind = doc.get("kind")
    if kind not in _SCHEMAS:
        raise UnsupportedResource(
            f"kind {kind!r} ({doc.get('apiVersion')}) is not implemented by the local mesh; "
            f"it implements {', '.join(networking.SPECS)} of {ISTIO_NETWORKING_GROUP}, "
            f"{', '.join(security.SPECS)} of {ISTIO_SECURITY_GROUP} "
            f"and {', '.join(GATEWAY_API_KINDS)} of {GATEWAY_API_GROUP}"
        )
    _require_api_version(doc, _KIND_API_VERSIONS.get(kind, API_VERSIONS))
    check_fields(doc, _SCHEMAS[kind], describe(doc))
    _check_export_to(doc)
    networking.check_values(doc, describe(doc))
    security.check_values(doc, describe(doc))


def _check_gateway_api(doc: Mapping[str, Any]) -> None:
    kind = doc.get("kind")
    if kind not in _GATEWAY_API_SCHEMAS:
        raise UnsupportedResource(
            f"kind {kind!r} ({doc.get('apiVersion')}) is not implemented by the local mesh; of "
            f"{GATEWAY_API_GROUP} it implements {', '.join(GATEWAY_API_KINDS)}"
        )
    _require_api_version(doc, GATEWAY_API_VERSIONS)
    check_fields(doc, _GATEWAY_API_SCHEMAS[kind], describe(doc))
    gateway_api.check_values(doc, describe(doc))


def _require_api_version(doc: Mapping[str, Any], versions: Collection[str]) -> None:
    if doc.get("apiVersion") not in versions:
        raise UnsupportedResource(
            f"{describe(doc)}: apiVersion {doc.get('apiVersion')!r} is not implemented by the "
            f"local mesh (use one of {', '.join(sorted(versions))})"
        )


def _check_export_to(doc: Mapping[str, Any]) -> None:
    export_to = (doc.get("spec") or {}).get("exportTo")
    if export_to is not None and list(export_to) != ["*"]:
        # The local mesh makes every resource visible to every namespace.
        raise UnsupportedResource(
            f"{describe(doc)}: field spec.exportTo {list(export_to)} is not implemented by the "
            f"local mesh (only [\"*\"])"
        )
