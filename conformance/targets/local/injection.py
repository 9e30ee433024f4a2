"""Sidecar injection decisions, made in Istio's two stages.

1. The API server calls the injector only when one of its webhooks selects the pod,
   and webhook selectors see labels, never annotations (istio/istio 1.28.0
   manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml and
   revision-tags-mwc.yaml): `istio-injection=enabled` on the namespace; else, with no
   `istio-injection` label at all, `istio.io/rev` on the namespace, or else on the pod;
   else the pod label `sidecar.istio.io/inject=true`. A pod label
   `sidecar.istio.io/inject=false` excludes the pod from every webhook.
2. istiod then decides from the pod itself (pkg/kube/inject/inject.go injectRequired):
   never for hostNetwork pods or the system namespaces (pkg/kube/inject/initializer.go
   IgnoredNamespaces); else the pod's `sidecar.istio.io/inject` label, or its annotation
   when the label is absent, "false" stops injection; anything else falls back to the
   policy, which Istio's chart sets to enabled (global.proxy.autoInject).
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass

NS_LABEL = "istio-injection"
# A pod label for the webhook's selectors; istiod also reads it as an annotation.
INJECT = "sidecar.istio.io/inject"
REV_LABEL = "istio.io/rev"
DEFAULT_REVISION = "default"
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})


@dataclass(frozen=True)
class Decision:
    inject: bool
    reason: str


def decide(
    namespace: str,
    namespace_labels: Mapping[str, str],
    pod_labels: Mapping[str, str],
    pod_annotations: Mapping[str, str] | None = None,
    host_network: bool = False,
    revisions: Collection[str] = (DEFAULT_REVISION,),
) -> Decision:
    """Whether a pod created in `namespace` gets a sidecar; `revisions`: installed revisions and tags."""
    selected, why = _webhook_selects(namespace_labels, pod_labels, revisions)
    if not selected:
        return Decision(False, why)
    refusal = _istiod_refuses(namespace, pod_labels, pod_annotations or {}, host_network)
    if refusal is not None:
        return Decision(False, f"{why}, but {refusal}")
    return Decision(True, why)


def _webhook_selects(
    namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str], revisions: Collection[str]
) -> tuple[bool, str]:
    """Whether a webhook's namespace and object selectors match, and why (not)."""
    opted_out = pod_labels.get(INJECT) == "false"
    if NS_LABEL in namespace_labels:
        # Every other webhook requires the label to be absent: any other value disables injection.
        value = namespace_labels[NS_LABEL]
        why = f"namespace label {NS_LABEL}={value}"
        if value != "enabled":
            return False, why
        if DEFAULT_REVISION not in revisions:
            return False, f"{why}, but no default revision is installed"
        return _unless_opted_out(opted_out, why)
    for owner, labels in (("namespace", namespace_labels), ("pod", pod_labels)):
        revision = labels.get(REV_LABEL)
        if revision is not None:
            why = f"{owner} label {REV_LABEL}={revision}"
            if revision not in revisions:
                return False, f"{why}, but no installed revision or tag is named {revision!r}"
            return _unless_opted_out(opted_out, why)
    if pod_labels.get(INJECT) == "true" and DEFAULT_REVISION in revisions:
        return True, f"pod label {INJECT}=true"
    if opted_out:
        return False, f"pod label {INJECT}=false"
    return False, "no injection label on the namespace or the pod (webhook selectors do not see annotations)"


def _unless_opted_out(opted_out: bool, why: str) -> tuple[bool, str]:
    if opted_out:
        return False, f"{why}, but pod label {INJECT}=false"
    return True, why


def _istiod_refuses(
    namespace: str, pod_labels: Mapping[str, str], pod_annotations: Mapping[str, str], host_network: bool
) -> str | None:
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
