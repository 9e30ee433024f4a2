"""Sidecar injection is decided in Istio's two stages.

1. The API server calls the injector only when one of its webhooks selects the pod,
   and webhook selectors see labels, never annotations (istio/istio 1.28.0
   manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml and
   revision-tags-mwc.yaml): `istio-injection=enabled` on the namespace; else, with no
   `istio-injection` label at all, `istio.io/rev` on the namespace, or else on the pod;
   else the pod label `sidecar.istio.io/inject=true`. A pod label
   `sidecar.istio.io/inject=false` excludes the pod from every webhook. The local mesh runs
   this stage as the API server does: manifests/local/istio-sidecar-injector.yaml's webhooks,
   called by conformance.targets.local.admission.
2. istiod then decides from the pod itself (pkg/kube/inject/inject.go injectRequired; this
   module, for the local injector): never for hostNetwork pods or the system namespaces (pkg/kube/inject/initializer.go
   IgnoredNamespaces); else the pod's `sidecar.istio.io/inject` label, or its annotation
   when the label is absent, "false" stops injection; anything else falls back to the
   policy, which Istio's chart sets to enabled (global.proxy.autoInject).
"""

from collections.abc import Mapping

from conformance.names import INJECT

IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})


def istiod_refuses(
    namespace: str, pod_labels: Mapping[str, str], pod_annotations: Mapping[str, str], host_network: bool
) -> str | None:
    """Why istiod does not inject a pod its webhook was called for, or None when it does."""
    if host_network:
        return "istiod never injects a hostNetwork pod"
    if namespace in IGNORED_NAMESPACES:
        return f"istiod never injects pods of namespace {namespace}"
    # A present label wins over the annotation, whatever its value.
    source, value = (
        ("label", pod_labels[INJECT]) if INJECT in pod_labels else ("annotation", pod_annotations.get(INJECT))
    )
    if value == "false":
        return f"pod {source} {INJECT}=false"
    return None
