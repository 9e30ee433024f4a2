"""Envoy v3 resource types, a proxy's set of resources, and where its routes and endpoints come from."""

from dataclasses import dataclass, field

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FAULT_FILTER = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTER_FILTER = "envoy.filters.http.router"
HCM_FILTER = "envoy.filters.network.http_connection_manager"

# Transport sockets and the TLS inspector, by Istio's names (istio/istio pkg/wellknown/wellknown.go).
TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER_SOCKET = "envoy.transport_sockets.raw_buffer"
RAW_BUFFER_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
UPSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TLS_INSPECTOR_TYPE = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
# The SDS resource names istio-agent serves every Envoy: the workload's certificate and key, and the
# mesh's trust bundle (istio/istio pkg/model/authentication.go SDSDefaultResourceName, SDSRootResourceName).
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"

# The Server header of inbound and gateway listeners (istio/istio pilot/pkg/networking/util/
# proxy_headers.go); sidecar outbound listeners keep Envoy's default, "envoy".
SERVER_NAME = "istio-envoy"
OUTBOUND_ROUTE = "outbound"
# Istio's catch-all for hosts no service names (pilot/pkg/networking/util/util.go).
PASSTHROUGH_CLUSTER = "PassthroughCluster"
PASSTHROUGH_VHOST = "allow_any"
# Ends every HCM stat prefix and cluster stat name since Istio 1.24 (istio/istio
# pkg/config/constants/constants.go StatPrefixDelimiter, releasenotes/notes/51761.yaml).
STAT_PREFIX_DELIMITER = ";"
# A cluster's load balancer when no DestinationRule sets one (istio/istio
# pilot/pkg/networking/core/cluster_traffic_policy.go defaultLBAlgorithm).
DEFAULT_LB_POLICY = "LEAST_REQUEST"
# Istio's defaults: 10s connect timeout, and circuit breakers opened wide (Envoy's own
# default of 1024 would be a limit no Istio configuration asked for).
CONNECT_TIMEOUT = "10s"
UNLIMITED = 4294967295
# Istio disables Envoy's 15s default route timeout: no timeout unless a VirtualService sets one.
NO_TIMEOUT = "0s"


# Routes and endpoints come over the proxy's one stream to the control plane (ADS), as istiod sends
# them; a listener or cluster waits for them however long they take (initial_fetch_timeout 0s,
# istio/istio pilot/pkg/networking/core listener.go and cluster_builder.go, and its bootstrap for
# LDS and CDS), instead of going active empty after Envoy's default 15s.
ADS_SOURCE = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}


@dataclass(frozen=True)
class ProxyConfig:
    listeners: list[dict]  # envoy.config.listener.v3.Listener JSON, with "@type"
    clusters: list[dict]  # envoy.config.cluster.v3.Cluster JSON, with "@type"
    routes: dict[str, dict]  # route config name -> RouteConfiguration JSON, with "@type"
    # EDS cluster name -> ClusterLoadAssignment JSON, with "@type"
    endpoints: dict[str, dict] = field(default_factory=dict)
    # SDS secrets istiod serves this proxy (a gateway's credentialNames), by name: Secret JSON, with "@type"
    secrets: dict[str, dict] = field(default_factory=dict)


def delimited_stat_prefix(prefix: str) -> str:
    """Istio's util.DelimitedStatsPrefix (pilot/pkg/networking/util/util.go)."""
    return prefix + STAT_PREFIX_DELIMITER
