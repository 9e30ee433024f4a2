"""The mutual TLS mode PeerAuthentications give a workload, a port of it, and a service's namespace.

As istiod resolves them (istio/istio, tag 1.28.0): pilot/pkg/model/authentication.go (which policies
a workload sees: getConfigsForWorkload; the namespace's mode: addPeerAuthentication,
GetNamespaceMutualTLSMode) and pilot/pkg/security/authn/policy_applier.go ComposePeerAuthentication.
State order stands for creation order: among equals, the first one wins (the oldest).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance.targets.local.model import Pod
from conformance.targets.local.translator.index import ROOT_NAMESPACE, namespace_of

UNSET = "UNSET"
DISABLE = "DISABLE"
PERMISSIVE = "PERMISSIVE"
STRICT = "STRICT"
MODES = (UNSET, DISABLE, PERMISSIVE, STRICT)

Doc = Mapping[str, Any]


@dataclass(frozen=True)
class PeerPolicy:
    """A workload's effective mode, and the ports whose mode differs (container port -> mode)."""

    mode: str = PERMISSIVE
    per_port: Mapping[int, str] = field(default_factory=dict)

    def for_port(self, port: int) -> str:
        """policy_applier.go GetMutualTLSModeForPort: the port's own mode, else the workload's."""
        return self.per_port.get(port, self.mode)


def selector_of(doc: Doc) -> Mapping[str, str]:
    """A security policy's spec.selector.matchLabels (none: it selects every workload it sees)."""
    return ((doc.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}


def has_labels(pod: Pod, labels: Mapping[str, str]) -> bool:
    """Whether `pod` carries every one of `labels` (none: every pod does)."""
    return all(pod.labels.get(key) == value for key, value in labels.items())


def mode_of(mtls: Mapping[str, Any] | None) -> str:
    """A MutualTLS setting's mode; no setting, or no mode, is UNSET (policy_applier.go isMtlsModeUnset)."""
    return str((mtls or {}).get("mode") or UNSET)


def workload_policy(pod: Pod, policies: Sequence[Doc], root_namespace: str = ROOT_NAMESPACE) -> PeerPolicy:
    """The policy istiod applies to `pod`'s inbound ports.

    The policies it sees are those of its namespace and the root namespace whose selector its
    labels satisfy (none: all). Of those, the oldest without selector in the root namespace is
    the mesh's, the oldest without selector elsewhere the namespace's, and the oldest with a
    selector outside the root namespace the workload's (one with a selector in the root
    namespace is ignored). Each narrower one that sets a mode overrides; UNSET inherits;
    nothing at all is PERMISSIVE. Port-level modes come from the workload's policy alone, and
    an UNSET port inherits the workload's mode.
    """
    seen = [doc for doc in policies
            if namespace_of(doc) in (pod.namespace, root_namespace)
            and has_labels(pod, selector_of(doc))]
    mesh = _first(doc for doc in seen if not selector_of(doc) and namespace_of(doc) == root_namespace)
    namespace = _first(doc for doc in seen if not selector_of(doc) and namespace_of(doc) != root_namespace)
    workload = _first(doc for doc in seen if selector_of(doc) and namespace_of(doc) != root_namespace)
    mode = PERMISSIVE
    for doc in (mesh, namespace, workload):
        if doc is not None and mode_of(doc["spec"].get("mtls")) != UNSET:
            mode = mode_of(doc["spec"].get("mtls"))
    per_port: dict[int, str] = {}
    if workload is not None:
        for port, mtls in (workload["spec"].get("portLevelMtls") or {}).items():
            port_mode = mode_of(mtls)
            per_port[int(port)] = mode if port_mode == UNSET else port_mode
    return PeerPolicy(mode, per_port)


def namespace_mode(namespace: str, policies: Sequence[Doc], root_namespace: str = ROOT_NAMESPACE) -> str | None:
    """authentication.go GetNamespaceMutualTLSMode: the mode of the namespace's oldest policy without
    selector (UNSET: the mesh's), else the mesh's (UNSET: PERMISSIVE); None when neither exists."""
    mesh_policy = _first(doc for doc in policies if namespace_of(doc) == root_namespace and not selector_of(doc))
    mesh = None if mesh_policy is None else mode_of(mesh_policy["spec"].get("mtls"))
    if mesh == UNSET:
        mesh = PERMISSIVE
    if namespace == root_namespace:
        return mesh
    own = _first(doc for doc in policies if namespace_of(doc) == namespace and not selector_of(doc))
    if own is None:
        return mesh
    mode = mode_of(own["spec"].get("mtls"))
    return (mesh or PERMISSIVE) if mode == UNSET else mode


def service_mode(namespace: str, policies: Sequence[Doc]) -> str:
    """The mode istiod assumes of a service's servers when it decides on auto mTLS: its namespace's,
    else PERMISSIVE (istio/istio pilot/pkg/model/push_context.go BestEffortInferServiceMTLSMode,
    for a service that is neither external nor passthrough)."""
    return namespace_mode(namespace, policies) or PERMISSIVE


def _first(docs: Iterable[Doc]) -> Doc | None:
    return next(iter(docs), None)
