"""Envoy v3 resource types, a proxy's set of resources, and where its route configs live."""

import re
from collections.abc import Mapping
from dataclasses import dataclass

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FAULT_FILTER = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"

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


@dataclass(frozen=True)
class ProxyConfig:
    listeners: list[dict]  # envoy.config.listener.v3.Listener JSON, with "@type"
    clusters: list[dict]  # envoy.config.cluster.v3.Cluster JSON, with "@type"
    routes: dict[str, dict]  # route config name -> RouteConfiguration JSON, with "@type"


def delimited_stat_prefix(prefix: str) -> str:
    """Istio's util.DelimitedStatsPrefix (pilot/pkg/networking/util/util.go)."""
    return prefix + STAT_PREFIX_DELIMITER


def rds_file_name(route_name: str) -> str:
    """The file (in the config directory) that holds route config `route_name`."""
    return f"rds_{re.sub(r'[^A-Za-z0-9_.-]', '_', route_name)}.json"


def rds_path(config_dir: str, route_name: str) -> str:
    return f"{config_dir.rstrip('/')}/{rds_file_name(route_name)}"


def rds_config_source(route_name: str, config_dir: str) -> dict:
    """Where a listener finds route config `route_name`: a watched file.

    Envoy reloads the file when one is renamed onto it, so writers replace it atomically
    (write a temporary file, then rename). Only the file is watched, not its directory: a
    rename anywhere in a watched directory makes every subscription watching it read its file
    again, and a refusal could no longer be told apart from the earlier ones.
    """
    return {"path_config_source": {"path": rds_path(config_dir, route_name)}, "resource_api_version": "V3"}


def check_rds_file_names(routes: Mapping[str, dict]) -> None:
    """Two route configs must not share a file after their names are made file-safe."""
    files: dict[str, str] = {}
    for name in routes:
        other = files.setdefault(rds_file_name(name), name)
        if other != name:
            raise ValueError(
                f"route configs {other!r} and {name!r} map to one file {rds_file_name(name)}"
            )
