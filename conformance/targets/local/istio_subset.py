"""The Istio networking API subset the local mesh implements, and a check that refuses the rest.

The translator reads only the fields allowed here. Anything else in a document
(a mirror, a fault, a trafficPolicy...) would be ignored by it, and a check
could then pass on the local mesh for a configuration it never applied. So
every field outside this allow-list is refused with its exact path.
"""

from collections.abc import Mapping
from typing import Any

from conformance.errors import UnsupportedResource

API_GROUP = "networking.istio.io"
API_VERSIONS = frozenset({f"{API_GROUP}/v1", f"{API_GROUP}/v1beta1", f"{API_GROUP}/v1alpha3"})


class _Any:
    """A field accepted with any value (the translator reads it as a whole)."""


class _ListOf:
    """A list whose every item follows `item`."""

    def __init__(self, item: "_Node") -> None:
        self.item = item


class _MapOf:
    """A mapping with free keys (e.g. header names) whose every value follows `value`."""

    def __init__(self, value: "_Node") -> None:
        self.value = value


_Node = _Any | _ListOf | _MapOf | Mapping[str, Any]

ANY = _Any()

# Istio StringMatch: one of exact, prefix, regex.
_STRING_MATCH: Mapping[str, _Node] = {"exact": ANY, "prefix": ANY, "regex": ANY}

_HTTP_MATCH: Mapping[str, _Node] = {
    "name": ANY,
    "uri": _STRING_MATCH,
    "headers": _MapOf(_STRING_MATCH),
}

_HTTP_ROUTE_DESTINATION: Mapping[str, _Node] = {
    "destination": {"host": ANY, "subset": ANY, "port": {"number": ANY}},
    "weight": ANY,
}

_HTTP_ROUTE: Mapping[str, _Node] = {
    "name": ANY,
    "match": _ListOf(_HTTP_MATCH),
    "route": _ListOf(_HTTP_ROUTE_DESTINATION),
    "timeout": ANY,
}

# Top-level fields common to every kind; status is written by the cluster, not configuration.
_COMMON: Mapping[str, _Node] = {"apiVersion": ANY, "kind": ANY, "metadata": ANY, "status": ANY}

_SCHEMAS: Mapping[str, Mapping[str, _Node]] = {
    "VirtualService": {
        **_COMMON,
        "spec": {"hosts": ANY, "gateways": ANY, "exportTo": ANY, "http": _ListOf(_HTTP_ROUTE)},
    },
    "DestinationRule": {
        **_COMMON,
        "spec": {"host": ANY, "exportTo": ANY, "subsets": _ListOf({"name": ANY, "labels": ANY})},
    },
    "Gateway": {
        **_COMMON,
        "spec": {
            "selector": ANY,
            "servers": _ListOf(
                {"port": {"number": ANY, "name": ANY, "protocol": ANY}, "hosts": ANY, "name": ANY}
            ),
        },
    },
}

SUPPORTED_KINDS = tuple(_SCHEMAS)


def describe(doc: Mapping[str, Any]) -> str:
    """`Kind ns/name` (or `Kind name` without a namespace), as messages name a document."""
    metadata = doc.get("metadata") or {}
    name = metadata.get("name", "<unnamed>")
    namespace = metadata.get("namespace")
    return f"{doc.get('kind')} {namespace}/{name}" if namespace else f"{doc.get('kind')} {name}"


def check_supported(doc: Mapping[str, Any]) -> None:
    """Raise UnsupportedResource unless the local mesh implements every field of `doc`."""
    kind = doc.get("kind")
    if kind not in _SCHEMAS:
        raise UnsupportedResource(
            f"kind {kind!r} ({doc.get('apiVersion')}) is not implemented by the local mesh; "
            f"it implements {', '.join(SUPPORTED_KINDS)} of {API_GROUP}"
        )
    if doc.get("apiVersion") not in API_VERSIONS:
        raise UnsupportedResource(
            f"{describe(doc)}: apiVersion {doc.get('apiVersion')!r} is not implemented by the "
            f"local mesh (use one of {', '.join(sorted(API_VERSIONS))})"
        )
    _walk(doc, _SCHEMAS[kind], "", doc)
    _check_values(doc)


def _walk(value: Any, node: _Node, path: str, doc: Mapping[str, Any]) -> None:
    if isinstance(node, _Any) or value is None:
        return
    if isinstance(node, _ListOf):
        for index, item in enumerate(value if isinstance(value, list) else []):
            _walk(item, node.item, f"{path}[{index}]", doc)
        return
    if not isinstance(value, Mapping):
        return  # a wrong type is the schema validator's business, not a missing feature
    for key, item in value.items():
        child = _join(path, key)
        if isinstance(node, _MapOf):
            _walk(item, node.value, child, doc)
            continue
        if key not in node:
            # A field explicitly set to null is absent (as server-side apply treats it).
            if item is None:
                continue
            raise UnsupportedResource(
                f"{describe(doc)}: field {child} is not implemented by the local mesh"
            )
        _walk(item, node[key], child, doc)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_values(doc: Mapping[str, Any]) -> None:
    """Allowed fields whose other values would change meaning the translator ignores."""
    spec = doc.get("spec") or {}
    export_to = spec.get("exportTo")
    if export_to is not None and list(export_to) != ["*"]:
        # The local mesh makes every resource visible to every namespace.
        raise UnsupportedResource(
            f"{describe(doc)}: field spec.exportTo {list(export_to)} is not implemented by the "
            f"local mesh (only [\"*\"])"
        )
    if doc.get("kind") == "Gateway":
        for index, server in enumerate(spec.get("servers") or []):
            protocol = str((server.get("port") or {}).get("protocol", ""))
            if protocol.upper() != "HTTP":
                raise UnsupportedResource(
                    f"{describe(doc)}: field spec.servers[{index}].port.protocol {protocol} is not "
                    f"implemented by the local mesh (only HTTP)"
                )
