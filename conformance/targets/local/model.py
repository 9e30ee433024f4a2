"""The local mesh's view of the cluster: plain values the translator turns into Envoy config."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from conformance.names import DEFAULT_REVISION, discovery_address

CLUSTER_DOMAIN = "cluster.local"
# pilot-agent's default (istio/istio pkg/config/mesh/mesh.go DefaultProxyConfig).
DEFAULT_DISCOVERY_ADDRESS = discovery_address(DEFAULT_REVISION)

# Ports every proxy owns on its pod address, as in Istio.
ADMIN_PORT = 15000
OUTBOUND_PORT = 15001
# An injected app listens on its container port + this offset; its sidecar owns the container port.
APP_PORT_OFFSET = 20000
# The control port of a client workload (the local stand-in for `kubectl exec`).
CONTROL_PORT = 15900


def app_port(container_port: int) -> int:
    return container_port + APP_PORT_OFFSET


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    ports: tuple[ServicePort, ...]
    selector: Mapping[str, str]

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}"

    def selects(self, pod: "Pod") -> bool:
        """As Kubernetes: a Service selects pods of its own namespace only."""
        return pod.namespace == self.namespace and pod.selected_by(self.selector)


@dataclass(frozen=True)
class StatsInclusions:
    """The stats a pod asks its proxy to keep beyond Istio's required ones, per kind of Envoy
    StringMatcher, as its annotations say (conformance.targets.local.xds.stats_matcher)."""

    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    regexps: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ip: str
    container_ports: tuple[int, ...]
    service_account: str
    # "sidecar": injected workload; "gateway": an ingress gateway proxy; "none": no proxy.
    proxy: str
    # Kubernetes' Ready condition: only a ready pod is a Service endpoint. A pod that is
    # not ready still gets its own proxy's configuration (it needs it to become ready).
    ready: bool = True
    # The istiod its proxy connects to, as pilot-agent reads it from the injected ProxyConfig;
    # reported in the proxy's node metadata. The local mesh serves every revision from one
    # control plane.
    discovery_address: str = DEFAULT_DISCOVERY_ADDRESS
    # What its proxy keeps of Envoy's stats besides Istio's required ones; every pod the mesh runs
    # has them (pods.pod_model). None: no stats matcher, every stat kept, for tests that run the
    # translator's Envoys directly and read any counter.
    stats_inclusions: StatsInclusions | None = None
    # The file its proxy's HTTP connection managers log every request to, which the local mesh's
    # Istio metrics are made from (telemetry/); every pod the mesh runs with a proxy has one. None:
    # no access log, for tests that run the translator's Envoys directly.
    access_log: str | None = None

    @property
    def injected(self) -> bool:
        return self.proxy == "sidecar"

    def selected_by(self, selector: Mapping[str, str]) -> bool:
        return bool(selector) and all(self.labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class MeshState:
    """Everything applied and running, as the translator sees it.

    Istio and Gateway API resources are kept as the applied documents (dicts),
    with metadata.namespace always set, in the order they were created.
    """

    services: tuple[Service, ...] = ()
    pods: tuple[Pod, ...] = ()
    virtual_services: tuple[Mapping[str, Any], ...] = ()
    destination_rules: tuple[Mapping[str, Any], ...] = ()
    gateways: tuple[Mapping[str, Any], ...] = ()
    mutants: frozenset[str] = field(default_factory=frozenset)
    # Gateway API HTTPRoutes (gateway.networking.k8s.io); last, so positional callers keep working.
    http_routes: tuple[Mapping[str, Any], ...] = ()
    # Istio's security configuration (security.istio.io), in creation order.
    peer_authentications: tuple[Mapping[str, Any], ...] = ()
    authorization_policies: tuple[Mapping[str, Any], ...] = ()
    # Gateway API Gateways (gateway.networking.k8s.io); `gateways` holds Istio's only.
    gateway_api_gateways: tuple[Mapping[str, Any], ...] = ()
    # Kubernetes Secrets (a gateway's credentialName names one of its namespace).
    secrets: tuple[Mapping[str, Any], ...] = ()

    @cached_property
    def endpoints(self) -> dict[str, tuple[Pod, ...]]:
        """Each Service's ready pods, its endpoints, by its fqdn (worked out once: every proxy's
        clusters need them)."""
        by_namespace: dict[str, list[Pod]] = {}
        for pod in self.pods:
            if pod.ready:
                by_namespace.setdefault(pod.namespace, []).append(pod)
        return {svc.fqdn: tuple(p for p in by_namespace.get(svc.namespace, ()) if svc.selects(p))
                for svc in self.services}
