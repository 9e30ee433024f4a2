"""Plain views of Kubernetes objects for reports and waits: what a Deployment still lacks, a Pod,
a webhook, an event as one line. Pure functions over the API's JSON (and text).
"""

from collections.abc import Mapping
from typing import Any

from conformance.targets.base import PodView

# The characters of a name Kubernetes generates (generateName's suffix, a pod-template-hash):
# no vowels and no look-alikes (kubernetes/kubernetes staging/src/k8s.io/apimachinery/pkg/util/
# rand/rand.go alphanums).
GENERATED_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def rollout_gap(deployment: Mapping[str, Any]) -> str | None:
    """What keeps a Deployment from being rolled out, or None (kubectl rollout status's rules)."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    want = spec.get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    available = status.get("availableReplicas") or 0
    total = status.get("replicas") or 0
    if (status.get("observedGeneration") or 0) < (meta.get("generation") or 0):
        return f"{meta.get('name')} (spec change not yet observed)"
    if updated == want and available == want and total == want:
        return None
    return f"{meta.get('name')} ({updated} updated, {available} available, {total} total of {want})"


def pod_view(pod: Mapping[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    return PodView(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        containers=tuple(c["name"] for c in spec.get("containers") or []),
        # Native sidecars (restartPolicy: Always) live here too, as Kubernetes puts them.
        init_containers=tuple(c["name"] for c in spec.get("initContainers") or []),
        ip=status.get("podIP") or "",
        ready=ready,
        service_account=spec.get("serviceAccountName") or "default",
        terminating=bool(meta.get("deletionTimestamp")),
    )


def webhook_summary(webhook: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": webhook.get("name"),
        "failurePolicy": webhook.get("failurePolicy"),
        "namespaceSelector": webhook.get("namespaceSelector") or {},
        "objectSelector": webhook.get("objectSelector") or {},
        "rules": webhook.get("rules") or [],
    }


def event_time(event: Mapping[str, Any]) -> str:
    # RFC 3339 UTC timestamps sort correctly as strings.
    return str(event.get("lastTimestamp") or event.get("eventTime")
               or (event.get("metadata") or {}).get("creationTimestamp") or "")


def event_line(event: Mapping[str, Any]) -> str:
    obj = event.get("involvedObject") or {}
    count = event.get("count") or 1
    line = (f"{event_time(event)} {event.get('type', '')} {event.get('reason', '')} "
            f"{str(obj.get('kind', '')).lower()}/{obj.get('name', '')}: {one_line(event.get('message') or '')}")
    return line + (f" (x{count})" if count > 1 else "")


def one_line(text: str) -> str:
    """Every run of whitespace, newlines too, as one space: an error or event fits one line."""
    return " ".join(text.split())


def qualified_name(name: str, namespace: str | None) -> str:
    """'ns/name' of a namespaced object, 'name' of a cluster-scoped one."""
    return f"{namespace}/{name}" if namespace else name


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})
