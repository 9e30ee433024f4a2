"""Refusing fields the local mesh does not implement, naming the exact path.

An allow-tree maps a field name to ANY (anything below is accepted), to a nested
allow-tree (for mappings, and for each item of a list), or to LEAF (a scalar or
list of scalars).
"""

from collections.abc import Mapping
from typing import Any

from conformance.errors import UnsupportedResource

ANY = "any"
LEAF = "leaf"
AllowTree = Mapping[str, Any]


def check_fields(doc: Mapping[str, Any], allowed: AllowTree, where: str) -> None:
    _walk(doc, allowed, "", where)


def _walk(value: Any, allowed: AllowTree | str, path: str, where: str) -> None:
    if allowed == ANY or allowed == LEAF:
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, allowed, f"{path}[{i}]", where)
        return
    if not isinstance(value, Mapping):
        return
    assert isinstance(allowed, Mapping)
    for key, sub in value.items():
        here = f"{path}.{key}" if path else str(key)
        if key not in allowed:
            raise UnsupportedResource(f"{where}: field {here} is not implemented by the local mesh")
        _walk(sub, allowed[key], here, where)
