"""Is a document something the local mesh can apply? One check for apply and for preflight."""

from collections.abc import Mapping, Sequence
from typing import Any

from conformance.errors import UnsupportedResource
from conformance.targets.local import credentials, ingress_conversion, istio_subset, workloads
from conformance.webhooks import CONFIGURATION_KINDS, webhooks_of

# Every Istio kind the subset implements goes to its check (networking, and security.istio.io's).
ISTIO_KINDS = istio_subset.SUPPORTED_KINDS
# Manifests only cluster targets apply: the deliberately invalid object that proves Istio's
# validation webhook is live once installed, the kind nodePort pinning, and MeshUpgrade's workload
# (its rolling update strategy and readiness probe are what a cluster's rollout needs).
CLUSTER_ONLY = ("istio/readiness/", "kind/", "upgrade/")
# Manifests made to be refused by Istio's validation webhook (the ValidationWebhook feature): the
# local mesh's own limits do not apply to what never gets past admission.
INVALID_BY_DESIGN = ("validation/",)


def check_document(doc: Mapping[str, Any], namespace: str) -> None:
    kind = doc.get("kind")
    # Every Gateway API kind goes to the subset check: HTTPRoute is implemented, and the
    # others (a Gateway API Gateway among them) are refused there with a clear reason.
    if kind in ISTIO_KINDS or istio_subset.api_group(doc) == istio_subset.GATEWAY_API_GROUP:
        istio_subset.check_supported(doc)
    elif kind in ingress_conversion.KINDS:
        ingress_conversion.check(doc, namespace)
    elif kind in workloads.ALLOWED:
        workloads.check(doc, namespace)
    elif kind == credentials.KIND:
        credentials.check(doc, namespace)
    elif kind in CONFIGURATION_KINDS:
        webhooks_of(doc)  # refuses what the local API server does not implement
    else:
        name = doc.get("metadata", {}).get("name")
        raise UnsupportedResource(f"{kind} {namespace}/{name}: kind {kind!r} is not implemented by the local mesh")


def check_documents(docs: Sequence[Mapping[str, Any]], source: str) -> None:
    for doc in docs:
        try:
            check_document(doc, doc.get("metadata", {}).get("namespace") or "default")
        except UnsupportedResource as exc:
            raise UnsupportedResource(f"{source}: {exc}") from None
