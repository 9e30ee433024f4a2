"""Field ownership in the fake Kubernetes API (tests/fakeapi.py): server-side apply and its conflicts.

As the API server does it (kubernetes/kubernetes staging/src/k8s.io/apimachinery/pkg/util/
managedfields/internal: fieldmanager.go, conflict.go; sigs.k8s.io/structured-merge-diff):
- every write records which fields its manager set: an apply (PATCH application/apply-patch+yaml)
  as operation Apply, a create or patch as operation Update (the manager is ?fieldManager=, else
  the client's user agent up to its first "/");
- an apply that sets a field another manager owns to a different value is refused with 409
  Conflict (reason Conflict, one FieldManagerConflict cause per field) unless ?force=true, which
  takes the fields over; an Update takes them over silently;
- an apply removes the fields its manager applied before and no longer applies, unless another
  manager owns them too; everything else in the object stays.

Simplified: a list whose items all have a `name` is merged item by item, keyed by name (the
keys of the lists meshconf applies: ports, containers, env); any other list is one field.
"""

import copy
from dataclasses import dataclass, field
from typing import Any

Segment = str | tuple[str, str]  # a map key, or ("name", value): one item of a named list
FieldPath = tuple[Segment, ...]


@dataclass
class Entry:
    operation: str  # Apply or Update
    api_version: str
    fields: set[FieldPath] = field(default_factory=set)


@dataclass
class Conflict:
    manager: str
    operation: str
    api_version: str
    path: FieldPath

    def cause(self) -> dict[str, str]:
        return {"reason": "FieldManagerConflict", "message": self.who(), "field": render_path(self.path)}

    def who(self) -> str:
        # conflict.go: an Update manager is named with the version it wrote.
        using = f" using {self.api_version}" if self.operation == "Update" else ""
        return f'conflict with "{self.manager}"{using}'


def leaves(obj: dict[str, Any]) -> dict[FieldPath, Any]:
    """The object's fields a manager can own: spec-like content, labels and annotations."""
    out: dict[FieldPath, Any] = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "status"):
            continue
        if key == "metadata":
            for meta_key in ("labels", "annotations"):
                for name, text in (value.get(meta_key) or {}).items():
                    out[("metadata", meta_key, name)] = text
            continue
        _walk(value, (key,), out)
    return out


def _walk(value: Any, prefix: FieldPath, out: dict[FieldPath, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            _walk(sub, (*prefix, key), out)
    elif _named_list(value):
        for item in value:
            entry = (*prefix, ("name", str(item["name"])))
            for key, sub in item.items():
                _walk(sub, (*entry, key), out)
    else:
        out[prefix] = value


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) and "name" in i for i in value)


class Owners:
    """Who owns which fields of each object (by object path)."""

    def __init__(self) -> None:
        self.by_object: dict[str, dict[str, Entry]] = {}

    def forget(self, path: str) -> None:
        self.by_object.pop(path, None)

    def conflicts(self, path: str, manager: str, applied: dict[FieldPath, Any],
                  current: dict[FieldPath, Any]) -> list[Conflict]:
        found = []
        for other, entry in self.by_object.get(path, {}).items():
            if other == manager:
                continue
            for field_path in sorted(entry.fields & set(applied), key=render_path):
                if current.get(field_path) != applied[field_path]:
                    found.append(Conflict(other, entry.operation, entry.api_version, field_path))
        return found

    def apply(self, path: str, manager: str, api_version: str, current: dict[str, Any] | None,
              body: dict[str, Any], force: bool) -> tuple[dict[str, Any] | None, list[Conflict]]:
        """The object after `manager` applies `body`, or (None, conflicts) when refused."""
        applied = leaves(body)
        now = leaves(current or {})
        conflicts = self.conflicts(path, manager, applied, now)
        if conflicts and not force:
            return None, conflicts
        entries = self.by_object.setdefault(path, {})
        taken = {c.path for c in conflicts}  # with force; a field applied with its current value is shared
        for other_manager, entry in entries.items():
            if other_manager != manager:
                entry.fields -= taken
        previous = entries[manager].fields if manager in entries else set()
        others = set().union(*(e.fields for m, e in entries.items() if m != manager))
        result = copy.deepcopy(current) if current else {}
        result["apiVersion"], result["kind"] = body["apiVersion"], body["kind"]
        metadata = result.setdefault("metadata", {})
        for key in ("name", "namespace"):
            if key in (body.get("metadata") or {}):
                metadata[key] = body["metadata"][key]
        # An item's key last: removing it removes the whole item.
        for gone in sorted(previous - set(applied) - others, key=_is_item_name):
            _delete(result, gone)
        for field_path, value in applied.items():
            _set(result, field_path, copy.deepcopy(value))
        entries[manager] = Entry("Apply", api_version, set(applied))
        self._drop_empty(path)
        return result, []

    def update(self, path: str, manager: str, api_version: str, before: dict[str, Any] | None,
               after: dict[str, Any]) -> None:
        """A create or patch: its manager owns every field it changed, taken from any other."""
        old, new = leaves(before or {}), leaves(after)
        changed = {p for p, v in new.items() if p not in old or old[p] != v}
        entries = self.by_object.setdefault(path, {})
        for entry in entries.values():
            entry.fields -= changed
            entry.fields &= set(new)  # a field the update removed is nobody's
        mine = entries.setdefault(manager, Entry("Update", api_version))
        mine.operation, mine.api_version = "Update", api_version
        mine.fields |= changed
        self._drop_empty(path)

    def managed_fields(self, path: str, time: str) -> list[dict[str, Any]]:
        """metadata.managedFields as the server shows it (fieldsV1: f:<key>, k:{"name":...})."""
        return [{"manager": manager, "operation": entry.operation, "apiVersion": entry.api_version, "time": time,
                 "fieldsType": "FieldsV1", "fieldsV1": _fields_v1(entry.fields)}
                for manager, entry in self.by_object.get(path, {}).items()]

    def _drop_empty(self, path: str) -> None:
        entries = self.by_object.get(path, {})
        for manager in [m for m, e in entries.items() if not e.fields]:
            del entries[manager]


def conflict_status(conflicts: list[Conflict]) -> dict[str, Any]:
    """409 Conflict as the API server words it (conflict.go: ConflictsToError)."""
    if len(conflicts) == 1:
        only = conflicts[0]
        message = f"Apply failed with 1 conflict: {only.who()}: {render_path(only.path)}"
    else:
        by_manager: dict[str, list[str]] = {}
        for conflict in conflicts:
            by_manager.setdefault(conflict.who().replace("conflict with", "conflicts with", 1), []).append(
                render_path(conflict.path))
        parts = [f"{who}:\n" + "\n".join(f"- {p}" for p in paths) for who, paths in by_manager.items()]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(parts)
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "Conflict", "details": {"causes": [c.cause() for c in conflicts]}, "code": 409}


def render_path(path: FieldPath) -> str:
    """.spec.ports[name="http2"].nodePort"""
    text = ""
    for segment in path:
        text += f'[{segment[0]}="{segment[1]}"]' if isinstance(segment, tuple) else f".{segment}"
    return text


def _is_item_name(path: FieldPath) -> bool:
    return len(path) >= 2 and isinstance(path[-2], tuple) and path[-1] == "name"


def _set(obj: dict[str, Any], path: FieldPath, value: Any) -> None:
    node: Any = obj
    for index, segment in enumerate(path[:-1]):
        following = path[index + 1]
        if isinstance(segment, tuple):
            node = _item(node, segment[1])
        else:
            default: Any = [] if isinstance(following, tuple) else {}
            if not isinstance(node.get(segment), type(default)):
                node[segment] = default
            node = node[segment]
    last = path[-1]
    if isinstance(last, tuple):
        _item(node, last[1])
    else:
        node[last] = value


def _item(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for item in items:
        if str(item.get("name")) == name:
            return item
    items.append({"name": name})
    return items[-1]


def _delete(obj: dict[str, Any], path: FieldPath) -> None:
    whole_item = _is_item_name(path)
    node: Any = obj
    for segment in path[:-2] if whole_item else path[:-1]:
        node = _child(node, segment)
        if node is None:
            return
    if whole_item and isinstance(node, list):
        node[:] = [i for i in node if str(i.get("name")) != path[-2][1]]
    elif isinstance(node, dict):
        node.pop(path[-1], None)


def _child(node: Any, segment: Segment) -> Any:
    if isinstance(segment, tuple):
        return next((i for i in node if str(i.get("name")) == segment[1]), None) if isinstance(node, list) else None
    return node.get(segment) if isinstance(node, dict) else None


def _fields_v1(paths: set[FieldPath]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for segment in path:
            key = f'k:{{"name":"{segment[1]}"}}' if isinstance(segment, tuple) else f"f:{segment}"
            node = node.setdefault(key, {})
    return tree
