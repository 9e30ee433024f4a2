"""Istio's standard metric labels of one logged request, as istio_stats computes them.

Followed step by step from istio/proxy 1.28.0 source/extensions/filters/http/istio_stats/
istio_stats.cc: IstioStatsFilter::log (protocol, response code, gRPC status, flags, security
policy) and populatePeerInfo (the peer, the destination service, the principals, then the
source_* and destination_* labels of each reporter). A value nobody knows is "unknown"; a peer's
unknown canonical revision is "latest"; the proxy's own app and version are "" when its pod has
no such label, as istio_stats reports them.
"""

from dataclasses import dataclass

from conformance.targets.local.model import Service
from conformance.targets.local.telemetry.access_log import DESTINATION, SOURCE, LoggedRequest
from conformance.targets.local.telemetry.peers import DEFAULT_CANONICAL_REVISION, Directory, Peer, WorkloadMetadata
from conformance.targets.local.translator.resources import PASSTHROUGH_CLUSTER, PASSTHROUGH_VHOST

UNKNOWN = "unknown"
# The order istio_stats declares them in (Context::all_tags_).
STANDARD_LABELS = (
    "reporter",
    "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_canonical_service", "source_canonical_revision", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
    "destination_canonical_service", "destination_canonical_revision", "destination_cluster",
    "request_protocol", "response_flags", "connection_security_policy", "response_code", "grpc_response_status",
)
# The clusters istio_stats names instead of a service (populatePeerInfo), and Istio's route names
# for outbound traffic to no service (istio/istio pilot/pkg/networking/util/util.go BlackHoleRouteName,
# PassthroughRouteName).
SPECIAL_CLUSTERS = frozenset({"BlackHoleCluster", PASSTHROUGH_CLUSTER, "InboundPassthroughCluster",
                              "InboundPassthroughClusterIpv4", "InboundPassthroughClusterIpv6"})
BLACK_HOLE_ROUTE = "block_all"
GATEWAY_PROXY = "gateway"  # Pod.proxy of a gateway
# Response code details Envoy gives a response its upstream sent (not one Envoy made itself).
VIA_UPSTREAM = "via_upstream"

Labels = dict[str, str]


@dataclass(frozen=True)
class DestinationService:
    host: str  # destination_service
    name: str  # destination_service_name
    namespace: str  # destination_service_namespace ("" when no cluster metadata names it)


def request_labels(request: LoggedRequest, proxy: WorkloadMetadata, directory: Directory) -> Labels:
    """The labels of `request`, logged by `proxy`, in STANDARD_LABELS order."""
    if request.reporter == DESTINATION:
        peers = _destination_reporter(request, proxy, directory)
        # istio_stats.cc: mutual TLS when both the peer's and this proxy's certificates name an identity.
        mutual_tls = bool(request.downstream_peer_uri_san and request.downstream_local_uri_san)
        security = "mutual_tls" if mutual_tls else "none"
    elif request.reporter == SOURCE:
        peers = _source_reporter(request, proxy, directory)
        security = UNKNOWN  # never set for the client side
    else:
        raise ValueError(f"access log record of {proxy.pod.namespace}/{proxy.pod.name} has no reporter")
    grpc = _is_grpc(request.content_type)
    labels = {
        "reporter": request.reporter,
        **peers,
        "request_protocol": "grpc" if grpc else "http",
        "response_flags": request.response_flags,
        "connection_security_policy": security,
        "response_code": str(request.response_code),
        "grpc_response_status": request.grpc_status if grpc else "",
    }
    return {name: labels[name] for name in STANDARD_LABELS}


def _source_reporter(request: LoggedRequest, proxy: WorkloadMetadata, directory: Directory) -> Labels:
    """A sidecar's outbound or a gateway (ClientSidecar): this proxy is the source."""
    service = _destination_service(request, proxy, directory)
    server = directory.at(request.upstream_host) if request.upstream_host else None
    peer = None
    if server is not None and server.has_proxy and request.response_code_details == VIA_UPSTREAM:
        peer = Peer.exchanged(server)  # the server's proxy answered with its metadata
    elif server is not None and request.upstream_cluster.startswith("outbound|"):
        peer = Peer.from_endpoint(server)  # the EDS endpoint's telemetry metadata
    peer_san = request.upstream_peer_uri_san
    peer_namespace = _san_namespace(peer_san) or (peer.namespace if peer else "")
    peer = peer or Peer()
    return {
        **_own(proxy, "source", request.upstream_local_uri_san),
        **_peer_side("destination", peer, peer_namespace, peer_san),
        "destination_service": service.host or UNKNOWN,
        "destination_service_name": service.name or UNKNOWN,
        "destination_service_namespace": service.namespace or peer_namespace or UNKNOWN,
    }


def _destination_reporter(request: LoggedRequest, proxy: WorkloadMetadata, directory: Directory) -> Labels:
    """A sidecar's inbound (ServerSidecar): this proxy is the destination."""
    service = _destination_service(request, proxy, directory)
    client = directory.at(request.downstream_remote_address) if request.downstream_remote_address else None
    # Only a client with a proxy takes part in metadata exchange; without one it stays unknown.
    peer = Peer.exchanged(client) if client is not None and client.has_proxy else Peer()
    peer_san = request.downstream_peer_uri_san
    peer_namespace = _san_namespace(peer_san) or peer.namespace
    return {
        **_peer_side("source", peer, peer_namespace, peer_san),
        **_own(proxy, "destination", request.downstream_local_uri_san),
        "destination_service": service.host or proxy.canonical_service,
        "destination_service_name": service.name or proxy.canonical_service,
        "destination_service_namespace": proxy.namespace,
    }


def _peer_side(side: str, peer: Peer, namespace: str, san: str) -> Labels:
    """The other side, as the peer's exchanged (or endpoint) metadata and its certificate say; what
    is not known is "unknown", a revision "latest" as istio_stats' defaults."""
    return {
        f"{side}_workload": peer.workload or UNKNOWN,
        f"{side}_workload_namespace": namespace or UNKNOWN,
        f"{side}_principal": san or UNKNOWN,
        f"{side}_app": peer.app or UNKNOWN,
        f"{side}_version": peer.version or UNKNOWN,
        f"{side}_canonical_service": peer.canonical_service or UNKNOWN,
        f"{side}_canonical_revision": peer.canonical_revision or DEFAULT_CANONICAL_REVISION,
        f"{side}_cluster": peer.cluster or UNKNOWN,
    }


def _own(proxy: WorkloadMetadata, side: str, local_san: str) -> Labels:
    """The proxy's own side, from its node metadata; its principal from its certificate, if one was used."""
    return {
        f"{side}_workload": proxy.name,
        f"{side}_workload_namespace": proxy.namespace,
        f"{side}_principal": local_san or UNKNOWN,
        f"{side}_app": proxy.app,
        f"{side}_version": proxy.version,
        f"{side}_canonical_service": proxy.canonical_service,
        f"{side}_canonical_revision": proxy.canonical_revision,
        f"{side}_cluster": proxy.cluster,
    }


def _destination_service(request: LoggedRequest, proxy: WorkloadMetadata, directory: Directory) -> DestinationService:
    """The Host header, unless the route or cluster says better: Istio's catch-all routes and
    clusters by their names, a service's cluster by the service its telemetry metadata names.
    Istio turns the Host-header fallback off for a sidecar's inbound and for gateways (istio/istio
    1.28.0 pilot/pkg/model/telemetry.go disableHostHeaderFallback; istio_stats.cc
    disable_host_header_fallback_): there a request no cluster names leaves both empty."""
    host = name = "" if _no_host_fallback(request, proxy) else request.authority
    if request.route_name == BLACK_HOLE_ROUTE:
        return DestinationService(host, "BlackHoleCluster", "")
    if request.route_name == PASSTHROUGH_VHOST:
        return DestinationService(host, PASSTHROUGH_CLUSTER, "")
    if request.upstream_cluster in SPECIAL_CLUSTERS:
        return DestinationService(host, request.upstream_cluster, "")
    service = _cluster_service(request.upstream_cluster, proxy, directory)
    if service is None:
        return DestinationService(host, name, "")
    return DestinationService(service.fqdn, service.name, service.namespace)


def _no_host_fallback(request: LoggedRequest, proxy: WorkloadMetadata) -> bool:
    return request.reporter == DESTINATION or proxy.pod.proxy == GATEWAY_PROXY


def _cluster_service(cluster: str, proxy: WorkloadMetadata, directory: Directory) -> Service | None:
    """The first Service of a cluster's telemetry metadata: an outbound cluster's own
    (outbound|port|subset|fqdn), or the first of the pod's Services on an inbound cluster's port."""
    parts = cluster.split("|")
    if len(parts) != 4:
        return None
    direction, port, _, fqdn = parts
    if direction == "outbound":
        return directory.services.get(fqdn)
    if direction == "inbound" and port.isdigit():
        return directory.inbound_service(proxy, int(port))
    return None


def _san_namespace(principal: str) -> str:
    """The namespace of a SPIFFE identity, .../ns/<namespace>/sa/... (istio_stats.cc getNamespace)."""
    _, found, rest = principal.partition("/ns/")
    return rest.split("/", 1)[0] if found else ""


def _is_grpc(content_type: str) -> bool:
    """envoyproxy/envoy source/common/grpc/common.cc Common::hasGrpcContentType: exactly
    application/grpc, or application/grpc+<format> (application/grpc-web is not gRPC)."""
    return content_type == "application/grpc" or content_type.startswith("application/grpc+")
