"""Sidecar injection decisions, by Istio's documented policy.

istio.io "Controlling the injection policy": a `disabled`/`false` label anywhere
wins; then `enabled`/`true` anywhere; else no injection. `istio-injection` on the
namespace takes precedence over `istio.io/rev`; a revision label only injects
when it names the installed revision (or one of its tags).
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass

NS_LABEL = "istio-injection"
POD_LABEL = "sidecar.istio.io/inject"
REV_LABEL = "istio.io/rev"


@dataclass(frozen=True)
class Decision:
    inject: bool
    reason: str


def decide(
    namespace_labels: Mapping[str, str],
    pod_labels: Mapping[str, str],
    revisions: Collection[str] = ("default",),
) -> Decision:
    ns_injection = namespace_labels.get(NS_LABEL)
    pod_inject = pod_labels.get(POD_LABEL)
    if ns_injection == "disabled":
        return Decision(False, f"namespace label {NS_LABEL}=disabled")
    if pod_inject == "false":
        return Decision(False, f"pod label {POD_LABEL}=false")
    if ns_injection == "enabled":
        return _by_revision("default", f"namespace label {NS_LABEL}=enabled", revisions)
    ns_rev = namespace_labels.get(REV_LABEL)
    if ns_rev is not None:
        return _by_revision(ns_rev, f"namespace label {REV_LABEL}={ns_rev}", revisions)
    pod_rev = pod_labels.get(REV_LABEL)
    if pod_rev is not None:
        return _by_revision(pod_rev, f"pod label {REV_LABEL}={pod_rev}", revisions)
    if pod_inject == "true":
        return _by_revision("default", f"pod label {POD_LABEL}=true", revisions)
    return Decision(False, "no injection label on namespace or pod")


def _by_revision(revision: str, why: str, revisions: Collection[str]) -> Decision:
    if revision in revisions:
        return Decision(True, why)
    return Decision(False, f"{why}, but no installed revision or tag is named {revision!r}")
