"""Shared helpers of the security tests: the mutual-TLS test bed (a client sidecar, an injected
httpbin with two ports, a server without sidecar) and AuthorizationPolicy documents and meshes.

Test files import these from here; the rest of the shared helpers are in tests/builders.py and
tests/envoy_builders.py.
"""

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.names import spiffe_id
from conformance.targets.local.envoy import EnvoyProxy
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.model import MeshState, Pod, Service, ServicePort, app_port
from conformance.targets.local.translator.authorization import inbound_filters
from conformance.targets.local.translator.index import MeshIndex
from conformance.targets.local.translator.mutants import AUTHZ_IGNORED
from tests.builders import BOOKINFO_PODS, BOOKINFO_SERVICES, NS, mesh
from tests.envoy_builders import (
    SECURITY_API,
    Proxies,
    RecordingUpstream,
    direct_pod,
    envoy_counters,
    injected_pod,
    through,
    with_security,
)

# ---------------------------------------------------------------------------------------------
# Mutual TLS: the pods, services and documents of the bed

HTTP_PORT, OTHER_PORT = 8080, 9090  # the server's container ports
SERVICE_PORT, OTHER_SERVICE_PORT = 8000, 9000
SERVER_ID = spiffe_id(NS, "httpbin")
CLIENT_ID = spiffe_id(NS, "client")
SECURE_CLUSTER = f"outbound|{SERVICE_PORT}||httpbin.{NS}.svc.cluster.local"
PLAIN_CLUSTER = f"outbound|{SERVICE_PORT}||plain.{NS}.svc.cluster.local"
XFCC = "x-forwarded-client-cert"
TLS_MATCH = {"tlsMode": "istio"}
TLS_MODE = {"security.istio.io/tlsMode": "istio"}
# Envoy's answer when the server closes the connection after the request went out (response flag UC).
CONNECTION_TERMINATION = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"


def tls_destination_rule(host: str, mode: str, port_modes: dict[int, str] | None = None) -> dict:
    policy: dict = {"tls": {"mode": mode}}
    if port_modes:
        policy["portLevelSettings"] = [{"port": {"number": p}, "tls": {"mode": m}} for p, m in port_modes.items()]
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": host, "namespace": NS},
            "spec": {"host": host, "trafficPolicy": policy}}


@dataclass(frozen=True)
class Pods:
    client: Pod  # a sidecar without ports
    server: Pod  # httpbin: injected, container ports 8080 and 9090
    plain: Pod  # no sidecar, on 8080


def pods_on(ips: list[str]) -> Pods:
    return Pods(injected_pod("client", ips[0], ()), injected_pod("httpbin", ips[1], (HTTP_PORT, OTHER_PORT)),
                direct_pod("plain", ips[2], {"app": "plain"}, HTTP_PORT))


def state_of(pods: Pods, *docs: dict, mutants: frozenset[str] = frozenset()) -> MeshState:
    services = (
        Service("httpbin", NS, (ServicePort("http", SERVICE_PORT, HTTP_PORT),
                                ServicePort("http-other", OTHER_SERVICE_PORT, OTHER_PORT)), {"app": "httpbin"}),
        Service("plain", NS, (ServicePort("http", SERVICE_PORT, HTTP_PORT),), {"app": "plain"}),
    )
    return with_security(MeshState(services, (pods.client, pods.server, pods.plain), mutants=mutants), *docs)


PODS = pods_on(["127.0.9.1", "127.0.9.2", "127.0.9.3"])


# ---------------------------------------------------------------------------------------------
# Real Envoys: a client sidecar, the injected httpbin's sidecar, its app, and a plain server


@dataclass(frozen=True)
class Bed:
    proxies: Proxies
    pods: Pods
    client: EnvoyProxy
    server: EnvoyProxy
    app: RecordingUpstream  # httpbin's app, behind its sidecar, on 8080's app port
    other_app: RecordingUpstream  # behind 9090
    plain: RecordingUpstream  # the plain server

    def via_sidecar(self, service: str = "httpbin", port: int = SERVICE_PORT) -> tuple[int, str, dict[str, str] | None]:
        """A request from the client app through its sidecar: (status, body, the headers the app got)."""
        upstreams = (self.app, self.other_app, self.plain)
        before = [len(upstream.seen) for upstream in upstreams]
        reply = through(self.pods.client.ip, f"http://{service}.{NS}:{port}/headers")
        arrived = [u.seen[-1] for u, count in zip(upstreams, before, strict=True) if len(u.seen) > count]
        assert len(arrived) <= 1, arrived
        return reply.status, reply.body, (arrived[0] if arrived else None)

    def handshakes(self) -> int:
        """TLS handshakes the server's sidecar completed on its 8080 listener."""
        return envoy_counters(self.server).get(f"listener.{self.pods.server.ip}_{HTTP_PORT}.ssl.handshake", 0)


@contextmanager
def bed(tmp_path: Path, loopback_ips: list[str], *docs: dict, mutants: frozenset[str] = frozenset()) -> Iterator[Bed]:
    pods = pods_on(loopback_ips)
    state = state_of(pods, *docs, mutants=mutants)
    with ExitStack() as stack:
        app = stack.enter_context(RecordingUpstream(pods.server.ip, app_port(HTTP_PORT)))
        other = stack.enter_context(RecordingUpstream(pods.server.ip, app_port(OTHER_PORT)))
        plain = stack.enter_context(RecordingUpstream(pods.plain.ip, HTTP_PORT))
        proxies = stack.enter_context(Proxies(tmp_path))
        server = proxies.start(pods.server, state)
        client = proxies.start(pods.client, state)
        yield Bed(proxies, pods, client, server, app, other, plain)


# ---------------------------------------------------------------------------------------------
# AuthorizationPolicy documents, and the bookinfo mesh they apply to

IGNORED = frozenset({AUTHZ_IGNORED})
DENY_ALL = {"action": "DENY", "rules": [{}]}


def policy(name: str, spec: Mapping[str, Any], namespace: str = NS, api_version: str = SECURITY_API,
           **metadata: Any) -> dict:
    return {"apiVersion": api_version, "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace, **metadata}, "spec": dict(spec)}


def secured(*policies: Mapping[str, Any], pods: tuple[Pod, ...] = BOOKINFO_PODS,
            services: tuple[Service, ...] = BOOKINFO_SERVICES, mutants: frozenset[str] = frozenset()) -> MeshState:
    """The bookinfo mesh (or these pods and services) with `policies`, in creation order."""
    state = mesh(pods=pods, services=services, mutants=mutants)
    return dataclasses.replace(state, authorization_policies=tuple(policies))


def filters_of(pod: Pod, state: MeshState) -> list[dict]:
    for doc in state.authorization_policies:
        check_supported(doc)  # what the mesh admits before it translates
    return inbound_filters(pod, MeshIndex.build(state, pod.namespace))
