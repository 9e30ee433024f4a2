"""How the local mesh, as an API server, keys and scopes objects, and the namespaces it starts with."""

from collections.abc import Mapping
from typing import Any

from conformance.webhooks import CONFIGURATION_KINDS

# API group ("" for the core group), kind, namespace ("" for a cluster-scoped kind), name: an Istio
# Gateway and a Gateway API Gateway of one name are two objects, as on an API server.
Key = tuple[str, str, str, str]
# Kinds without a namespace.
CLUSTER_SCOPED = frozenset({"Namespace", "IngressClass", *CONFIGURATION_KINDS})
# The namespaces every cluster has (kube-system is where Istio never injects).
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def namespace_doc(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}


def object_key(doc: Mapping[str, Any], namespace: str) -> Key:
    return (api_group(doc), doc["kind"], namespace, doc["metadata"]["name"])


def api_group(doc: Mapping[str, Any]) -> str:
    group, _, _ = str(doc.get("apiVersion", "")).rpartition("/")
    return group


def namespace_key(name: str) -> Key:
    return ("", "Namespace", "", name)


def namespace_of(doc: Mapping[str, Any], default: str) -> str:
    if doc.get("kind") in CLUSTER_SCOPED:
        return ""
    return doc.get("metadata", {}).get("namespace") or default
