"""The applied fixture's teardown (fixtures/mesh.py delete_all): every entry is deleted, last first,
even when one fails; the first failure is the error, the later ones noted on it."""

from collections.abc import Sequence
from typing import Any

import pytest

from conformance.errors import ConformanceError, NotConverged
from fixtures.mesh import delete_all


class Deleting:
    """Records delete calls; the entries named in `failing` raise their exception."""

    def __init__(self, failing: dict[str, Exception]) -> None:
        self.failing = failing
        self.deleted: list[str] = []

    def delete(self, docs: Sequence[dict[str, Any]], namespace: str) -> None:
        name = docs[0]["metadata"]["name"]
        self.deleted.append(name)
        if name in self.failing:
            raise self.failing[name]


def entry(name: str) -> tuple[list[dict[str, Any]], str]:
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}], "bookinfo-r1"


def test_every_entry_is_deleted_and_the_first_failure_raised_after() -> None:
    first = NotConverged("DestinationRule subsets out of the routes: not within 1s")
    target = Deleting({"c": first, "a": ConformanceError("delete ConfigMap a: HTTP 500")})
    with pytest.raises(NotConverged) as failed:
        delete_all(target, [entry("a"), entry("b"), entry("c"), entry("d")])  # type: ignore[arg-type]
    assert target.deleted == ["d", "c", "b", "a"]
    assert failed.value is first
    assert failed.value.__notes__ == ["and a later delete failed too: delete ConfigMap a: HTTP 500"]


def test_without_failures_all_are_deleted_last_first() -> None:
    target = Deleting({})
    delete_all(target, [entry("a"), entry("b")])  # type: ignore[arg-type]
    assert target.deleted == ["b", "a"]
