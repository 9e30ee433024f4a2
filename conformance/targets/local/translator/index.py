"""What a translation looks things up in: services by name, and the DestinationRule subsets that
apply for the client proxy's namespace."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from conformance.names import ISTIO_NAMESPACE
from conformance.targets.base import Doc
from conformance.targets.local.model import CLUSTER_DOMAIN, MeshState, Service

# Istio's mesh root namespace (meshConfig.rootNamespace defaults to the control plane's).
ROOT_NAMESPACE = ISTIO_NAMESPACE

V = TypeVar("V")


@dataclass(frozen=True)
class MergedRule:
    """The DestinationRules of one namespace for one host, merged as Istio merges them."""

    subsets: tuple[Doc, ...]
    traffic_policy: Doc | None


@dataclass(frozen=True)
class MeshIndex:
    state: MeshState
    services: Mapping[str, Service]  # fqdn -> Service
    # fqdn -> the subsets of the DestinationRule that applies for the client namespace
    subsets: Mapping[str, tuple[Doc, ...]]
    # fqdn -> the top-level trafficPolicy of that DestinationRule, when it has one
    traffic_policies: Mapping[str, Doc] = field(default_factory=dict)

    @staticmethod
    def build(state: MeshState, client_namespace: str) -> "MeshIndex":
        services = {svc.fqdn: svc for svc in state.services}
        by_namespace = _destination_rules_by_namespace(state.destination_rules)
        subsets, policies = {}, {}
        for svc in state.services:
            found = _destination_rule_for(svc, client_namespace, by_namespace)
            if found is not None:
                subsets[svc.fqdn] = found.subsets
                if found.traffic_policy is not None:
                    policies[svc.fqdn] = found.traffic_policy
        return MeshIndex(state, services, subsets, policies)

    def subset_names(self, fqdn: str) -> list[str]:
        return [subset["name"] for subset in self.subsets.get(fqdn, ())]


def _destination_rules_by_namespace(rules: Iterable[Doc]) -> dict[str, dict[str, MergedRule]]:
    """namespace -> DestinationRule host -> the rules of that namespace for that host, merged.

    Istio merges DestinationRules for one host in one namespace: the first definition of a
    subset wins, and the first top-level trafficPolicy (istio/istio pilot/pkg/model/
    destination_rule.go mergeDestinationRule). State order stands for creation order.
    """
    merged: dict[str, dict[str, MergedRule]] = {}
    for rule in rules:
        host = resolve_host(rule["spec"]["host"], namespace_of(rule))
        hosts = merged.setdefault(namespace_of(rule), {})
        before = hosts.get(host, MergedRule((), None))
        known = {subset["name"] for subset in before.subsets}
        added = tuple(s for s in rule["spec"].get("subsets") or [] if s["name"] not in known)
        policy = before.traffic_policy if before.traffic_policy is not None else rule["spec"].get("trafficPolicy")
        hosts[host] = MergedRule(before.subsets + added, policy)
    return merged


def _destination_rule_for(
    svc: Service, client_namespace: str, by_namespace: Mapping[str, Mapping[str, MergedRule]]
) -> MergedRule | None:
    """The (merged) DestinationRule Istio applies to `svc` for a proxy of client_namespace.

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
