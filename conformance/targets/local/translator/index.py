"""What a translation looks things up in: services by name, DestinationRule subsets by host."""

from collections.abc import Mapping
from dataclasses import dataclass

from conformance.targets.base import Doc
from conformance.targets.local.model import CLUSTER_DOMAIN, MeshState, Service

@dataclass(frozen=True)
class MeshIndex:
    state: MeshState
    services: Mapping[str, Service]  # fqdn -> Service
    subsets: Mapping[str, tuple[Doc, ...]]  # fqdn -> DestinationRule subsets, merged in order

    @staticmethod
    def build(state: MeshState) -> "MeshIndex":
        services = {svc.fqdn: svc for svc in state.services}
        subsets: dict[str, list[Doc]] = {}
        for rule in state.destination_rules:
            fqdn = resolve_host(rule["spec"]["host"], namespace_of(rule))
            merged = subsets.setdefault(fqdn, [])
            # Istio merges DestinationRules for one host; the first definition of a subset wins.
            known = {subset["name"] for subset in merged}
            merged.extend(s for s in rule["spec"].get("subsets") or [] if s["name"] not in known)
        return MeshIndex(state, services, {k: tuple(v) for k, v in subsets.items()})

    def subset_names(self, fqdn: str) -> list[str]:
        return [subset["name"] for subset in self.subsets.get(fqdn, ())]


def resolve_host(host: str, namespace: str) -> str:
    """A short name (no dot) is relative to the namespace of the rule naming it, as in Istio."""
    if "." in host or "*" in host:
        return host
    return f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"


def namespace_of(doc: Doc) -> str:
    return doc["metadata"]["namespace"]


def name_of(doc: Doc) -> str:
    return doc["metadata"]["name"]
