"""Refusing fields the local mesh does not implement, naming the exact path.

The local mesh reads only the fields its allow-trees name; anything else would be
ignored, and a check could then pass for configuration that was never applied.

An allow-tree node is ANY (anything below is accepted), MapOf(node) (a mapping with
free keys, such as header names, whose every value follows node), or a mapping from
field name to node. A list is checked item by item against the node of the field
holding it. A field set to null counts as absent, as server-side apply treats it.
"""

from collections.abc import Mapping
from typing import Any

from conformance.errors import UnsupportedResource


class _Any:
    """Accepts any value (the reader takes the field as a whole)."""


class MapOf:
    """A mapping with free keys whose every value follows `value`."""

    def __init__(self, value: "Node") -> None:
        self.value = value


Node = _Any | MapOf | Mapping[str, Any]
ANY = _Any()


def check_fields(value: Any, node: Node, where: str, path: str = "") -> None:
    """Raise UnsupportedResource naming `where` and the first field outside `node`."""
    if isinstance(node, _Any) or value is None:
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_fields(item, node, where, f"{path}[{index}]")
        return
    if not isinstance(value, Mapping):
        return  # a wrong type is the schema validator's business, not a missing feature
    for key, item in value.items():
        child = f"{path}.{key}" if path else str(key)
        if isinstance(node, MapOf):
            check_fields(item, node.value, where, child)
        elif key in node:
            check_fields(item, node[key], where, child)
        elif item is not None:
            raise UnsupportedResource(f"{where}: field {child} is not implemented by the local mesh")
