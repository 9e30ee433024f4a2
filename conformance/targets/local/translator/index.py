"""What a translation looks things up in: services by name, and the DestinationRule subsets that
apply for the client proxy's namespace."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from conformance.names import ISTIO_NAMESPACE
from conformance.targets.base import Doc
from conformance.targets.local.model import CLUSTER_DOMAIN, MeshState, Service

# Istio's mesh root namespace (meshConfig.rootNamespace defaults to the control plane's).
ROOT_NAMESPACE = ISTIO_NAMESPACE

V = TypeVar("V")


@dataclass(frozen=True)
class MeshIndex:
    state: MeshState
    services: Mapping[str, Service]  # fqdn -> Service
    # fqdn -> the subsets of the DestinationRule that applies for the client namespace
    subsets: Mapping[str, tuple[Doc, ...]]

    @staticmethod
    def build(state: MeshState, client_namespace: str) -> "MeshIndex":
        services = {svc.fqdn: svc for svc in state.services}
        by_namespace = _destination_rules_by_namespace(state.destination_rules)
        subsets = {}
        for svc in state.services:
            found = _destination_rule_for(svc, client_namespace, by_namespace)
            if found is not None:
                subsets[svc.fqdn] = found
        return MeshIndex(state, services, subsets)

    def subset_names(self, fqdn: str) -> list[str]:
        return [subset["name"] for subset in self.subsets.get(fqdn, ())]


def _destination_rules_by_namespace(rules: Iterable[Doc]) -> dict[str, dict[str, tuple[Doc, ...]]]:
    """namespace -> DestinationRule host -> subsets, the rules of one namespace for one host merged.

    Istio merges DestinationRules for one host in one namespace: the first definition of a
    subset wins (istio/istio pilot/pkg/model/destination_rule.go mergeDestinationRule).
    State order stands for creation order.
    """
    merged: dict[str, dict[str, list[Doc]]] = {}
    for rule in rules:
        host = resolve_host(rule["spec"]["host"], namespace_of(rule))
        subsets = merged.setdefault(namespace_of(rule), {}).setdefault(host, [])
        known = {subset["name"] for subset in subsets}
        subsets.extend(s for s in rule["spec"].get("subsets") or [] if s["name"] not in known)
    return {ns: {host: tuple(s) for host, s in hosts.items()} for ns, hosts in merged.items()}


def _destination_rule_for(
    svc: Service, client_namespace: str, by_namespace: Mapping[str, Mapping[str, tuple[Doc, ...]]]
) -> tuple[Doc, ...] | None:
    """The subsets of the DestinationRule Istio applies to `svc` for a proxy of client_namespace.

    istio/istio pilot/pkg/model/push_context.go destinationRule (tag 1.28.0): the client's
    namespace first (but not for a proxy in the root namespace, where only rules exported
    to "." would count, and the local mesh admits exportTo ["*"] only), then the service's
    namespace, then the root namespace; within one, the exact host, else the most specific
    wildcard.
    """
    order = [svc.namespace, ROOT_NAMESPACE]
    if client_namespace != ROOT_NAMESPACE:
        order.insert(0, client_namespace)
    for namespace in order:
        found = most_specific_host_match(svc.fqdn, by_namespace.get(namespace, {}))
        if found is not None:
            return found[1]
    return None


def most_specific_host_match(name: str, candidates: Mapping[str, V]) -> tuple[str, V] | None:
    """The candidate host that best matches `name`: the exact host, else the longest matching
    wildcard (istio/istio pilot/pkg/model/config.go MostSpecificHostMatch, pkg/config/host
    MoreSpecific). `name` is a service's FQDN; candidate hosts are FQDNs, `*` or `*.suffix`.
    """
    if name in candidates:
        return name, candidates[name]
    wildcards = sorted(
        (host for host in candidates if host.startswith("*") and name.endswith(host[1:])),
        key=lambda host: (-len(host), host),
    )
    return (wildcards[0], candidates[wildcards[0]]) if wildcards else None


def resolve_host(host: str, namespace: str) -> str:
    """A short name (no dot) is relative to the namespace of the rule naming it, as in Istio."""
    if "." in host or "*" in host:
        return host
    return f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"


def namespace_of(doc: Doc) -> str:
    return doc["metadata"]["namespace"]


def name_of(doc: Doc) -> str:
    return doc["metadata"]["name"]
