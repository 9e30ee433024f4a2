"""Clusters and listeners with Istio's names and defaults (istio/istio pilot/pkg/networking/core
cluster_builder.go, listener.go)."""

from collections.abc import Iterable, Mapping
from typing import Any

from conformance.targets.local.model import Pod
from conformance.targets.local.translator.index import MeshIndex
from conformance.targets.local.translator.resources import (
    CLUSTER_TYPE,
    CONNECT_TIMEOUT,
    FAULT_FILTER,
    FAULT_TYPE,
    HCM_TYPE,
    LISTENER_TYPE,
    NO_TIMEOUT,
    ROUTE_TYPE,
    ROUTER_TYPE,
    SERVER_NAME,
    UNLIMITED,
    rds_config_source,
)

def outbound_cluster_name(port: int, fqdn: str, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{fqdn}"


def inbound_cluster_name(port: int) -> str:
    return f"inbound|{port}||"


def outbound_clusters(index: MeshIndex) -> list[dict]:
    """One cluster per service port, and one per DestinationRule subset of it."""
    clusters = []
    for svc in index.state.services:
        members = [pod for pod in index.state.pods if svc.selects(pod)]
        for sp in svc.ports:
            endpoints = [(pod.ip, sp.target_port) for pod in members]
            clusters.append(static_cluster(outbound_cluster_name(sp.port, svc.fqdn), endpoints))
            for subset in index.subsets.get(svc.fqdn, ()):
                labels = subset.get("labels") or {}
                chosen = [(pod.ip, sp.target_port) for pod in members if has_labels(pod, labels)]
                name = outbound_cluster_name(sp.port, svc.fqdn, subset["name"])
                clusters.append(static_cluster(name, chosen))
    return clusters


def has_labels(pod: Pod, labels: Mapping[str, str]) -> bool:
    return all(pod.labels.get(key) == value for key, value in labels.items())


def static_cluster(name: str, endpoints: Iterable[tuple[str, int]]) -> dict:
    lb_endpoints = [
        {"endpoint": {"address": socket_address(ip, port)}} for ip, port in endpoints
    ]
    return {
        "@type": CLUSTER_TYPE,
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": UNLIMITED,
                    "max_pending_requests": UNLIMITED,
                    "max_requests": UNLIMITED,
                    "max_retries": UNLIMITED,
                }
            ]
        },
        # No endpoints is valid: Envoy then answers 503 "no healthy upstream", as Istio does.
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints else [],
        },
    }


def socket_address(ip: str, port: int) -> dict:
    return {"socket_address": {"address": ip, "port_value": port}}


def http_listener(
    name: str, ip: str, port: int, stat_prefix: str, route_name: str, config_dir: str,
    direction: str, absolute_urls: bool = False,
) -> dict:
    hcm: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "server_name": SERVER_NAME,
        "normalize_path": True,
        "generate_request_id": True,
        "rds": {
            "route_config_name": route_name,
            "config_source": rds_config_source(route_name, config_dir),
        },
        # As Istio: every HCM has the fault filter, doing nothing unless a route carries a fault
        # in typed_per_filter_config (which needs the filter in the chain, before the router).
        "http_filters": [
            {"name": FAULT_FILTER, "typed_config": {"@type": FAULT_TYPE}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    if absolute_urls:
        # The app uses this listener as its HTTP proxy: requests arrive in absolute form.
        hcm["http_protocol_options"] = {"allow_absolute_url": True}
    return {
        "@type": LISTENER_TYPE,
        "name": name,
        "address": socket_address(ip, port),
        "traffic_direction": direction,
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def route_config(name: str, virtual_hosts: list[dict]) -> dict:
    # A route may name a cluster that does not exist (a subset no DestinationRule defines):
    # Envoy must load the table and answer 503 NC for that route, as Istio. This is already
    # the default for RDS, but not for an inlined table; saying it keeps both the same.
    return {
        "@type": ROUTE_TYPE,
        "name": name,
        "virtual_hosts": virtual_hosts,
        "validate_clusters": False,
    }


def cluster_action(cluster: str) -> dict:
    return {"cluster": cluster, "timeout": NO_TIMEOUT}


def catch_all(cluster: str) -> dict:
    return {"match": {"prefix": "/"}, "route": cluster_action(cluster)}
