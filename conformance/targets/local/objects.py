"""How the local mesh, as an API server, keys and scopes objects, and the namespaces it starts with."""

from collections.abc import Mapping
from typing import Any

from conformance.webhooks import CONFIGURATION_KINDS

Key = tuple[str, str, str]  # kind, namespace ("" for a cluster-scoped kind), name
# Kinds without a namespace.
CLUSTER_SCOPED = frozenset({"Namespace", *CONFIGURATION_KINDS})
# The namespaces every cluster has (kube-system is where Istio never injects).
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def namespace_doc(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}


def object_key(doc: Mapping[str, Any], namespace: str) -> Key:
    return (doc["kind"], namespace, doc["metadata"]["name"])


def namespace_of(doc: Mapping[str, Any], default: str) -> str:
    if doc.get("kind") in CLUSTER_SCOPED:
        return ""
    return doc.get("metadata", {}).get("namespace") or default
