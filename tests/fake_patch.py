"""How the fake Kubernetes API (tests/fakeapi.py) reads a PATCH and compares an object across writes.

- the two patch types it takes: server-side apply (tests/fake_apply.py) and JSON merge patch
  (RFC 7386: maps merge, null removes, anything else replaces);
- an object's spec, for generation: everything but metadata and status, so that a write changing
  only those leaves metadata.generation as it was;
- an object as apply sees it: without its status where the kind has a status subresource, which
  apply to the main resource cannot set.
"""

import copy
from typing import Any

from tests.fake_crds import Resource

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of target, which is left as it was."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def without_status(obj: dict[str, Any] | None, resource: Resource) -> dict[str, Any] | None:
    if obj is None or not resource.status_subresource:
        return obj
    return {k: v for k, v in obj.items() if k != "status"}
