"""The bootstrap each Envoy starts from: its node identity, shaped as Istio's, and one ADS
stream to the control plane that brings everything else, and Istio's stats matcher (istio/istio
pkg/bootstrap and tools/packaging/common/envoy_bootstrap.json: the `xds-grpc` cluster, ADS for LDS
and CDS, stats_config.stats_matcher)."""

from typing import Any

from conformance.targets.local.model import ADMIN_PORT, CLUSTER_DOMAIN, Pod
from conformance.targets.local.translator.resources import ADS_SOURCE
from conformance.targets.local.xds.stats_matcher import stats_matcher

XDS_CLUSTER = "xds-grpc"
# The cluster every pod is in, as pilot-agent reports it (ISTIO_META_CLUSTER_ID, the injection
# template's default for a single-cluster mesh).
CLUSTER_ID = "Kubernetes"
HTTP2_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def node_id(pod: Pod) -> str:
    """Istio's node id: <type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local, where the
    type is sidecar, or router for a gateway (istio/istio pilot/pkg/model/context.go ParseServiceNodeWithMetadata)."""
    role = "router" if pod.proxy == "gateway" else "sidecar"
    return f"{role}~{pod.ip}~{pod.name}.{pod.namespace}~{pod.namespace}.svc.{CLUSTER_DOMAIN}"


def node_metadata(pod: Pod) -> dict[str, Any]:
    """The node metadata istio-agent sends that says who the proxy is (pilot/pkg/model/context.go NodeMetadata)."""
    return {
        "NAME": pod.name,
        "NAMESPACE": pod.namespace,
        "LABELS": dict(pod.labels),
        "SERVICE_ACCOUNT": pod.service_account,
        "INSTANCE_IPS": pod.ip,
        "CLUSTER_ID": CLUSTER_ID,
        # The whole ProxyConfig in Istio; here the one field the local mesh models.
        "PROXY_CONFIG": {"discoveryAddress": pod.discovery_address},
    }


def bootstrap(pod: Pod, control_plane: tuple[str, int]) -> dict[str, Any]:
    host, port = control_plane
    config: dict[str, Any] = {
        "node": {
            "id": node_id(pod),
            "cluster": f"{pod.labels.get('app', pod.name)}.{pod.namespace}",
            "metadata": node_metadata(pod),
        },
        "admin": {"address": {"socket_address": {"address": pod.ip, "port_value": ADMIN_PORT}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": True,
            },
            "lds_config": ADS_SOURCE,  # Istio's bootstrap waits for them as long as they take
            "cds_config": ADS_SOURCE,
        },
        "static_resources": {"clusters": [_xds_cluster(host, port)]},
        # A pod's connections leave from its own address, as from its network namespace on a
        # cluster: else every connection between loopback addresses would come from 127.0.0.1,
        # and a server could not tell which pod called (the metrics' peers, telemetry/peers.py).
        "cluster_manager": {"upstream_bind_config": {"source_address": {"address": pod.ip, "port_value": 0}}},
        "layered_runtime": {
            "layers": [{"name": "static", "static_layer": {"overload.global_downstream_max_connections": 50000}}]
        },
    }
    if pod.stats_inclusions is not None:
        config["stats_config"] = {"stats_matcher": stats_matcher(pod.stats_inclusions, pod.ip)}
    return config


def _xds_cluster(host: str, port: int) -> dict[str, Any]:
    return {
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            HTTP2_OPTIONS.rpartition("/")[2]: {
                "@type": HTTP2_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": host, "port_value": port}}}}]}],
        },
    }
