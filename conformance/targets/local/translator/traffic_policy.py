"""A DestinationRule's connection pool and outlier detection as a cluster's circuit breakers, HTTP
protocol options and outlier detection, as istiod sets them (istio/istio, tag 1.28.0:
pilot/pkg/networking/core/cluster_traffic_policy.go applyTrafficPolicy, applyConnectionPool,
applyOutlierDetection; pilot/pkg/networking/util/util.go GetPortLevelTrafficPolicy).

Every cluster gets Istio's circuit breakers; a connectionPool replaces some thresholds. Outbound
clusters get the outlierDetection too; an inbound cluster takes the connectionPool only.
istio_subset.py has admitted the fields read here and checked their values as Istio validates them.
"""

from typing import Any

from conformance.targets.base import Doc
from conformance.targets.local.model import Pod
from conformance.targets.local.translator.durations import envoy_duration
from conformance.targets.local.translator.index import MeshIndex
from conformance.targets.local.translator.mutants import NO_CIRCUIT_BREAKER, NO_OUTLIER_DETECTION
from conformance.targets.local.translator.resources import UNLIMITED

# Where a cluster's upstream HTTP options live (typed_extension_protocol_options), and their type
# (istio/istio pilot/pkg/networking/core/cluster_builder.go clusterWrapper.build).
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_PROTOCOL_OPTIONS_TYPE = f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"
# Envoy ejects a host once and for all only with enforcement at 100 (%): Istio's value for every
# consecutive-errors detection it enables.
ENFORCE_ALWAYS = 100


def default_thresholds() -> dict[str, Any]:
    """getDefaultCircuitBreakerThresholds: every limit opened wide (Envoy's own defaults, 1024
    connections and 3 retries, would be limits no Istio configuration asked for), with the
    remaining_* gauges tracked (TrackRemaining true up to Istio 1.28; 1.29 turned it off)."""
    return {
        "max_connections": UNLIMITED,
        "max_pending_requests": UNLIMITED,
        "max_requests": UNLIMITED,
        "max_retries": UNLIMITED,
        "track_remaining": True,
    }


def default_circuit_breakers() -> dict[str, Any]:
    return {"thresholds": [default_thresholds()]}


def port_policy(policy: Doc | None, port: int) -> Doc | None:
    """util.go GetPortLevelTrafficPolicy: the port-level settings of `port` (a service port), if
    any, replace the whole policy: what they leave out takes Istio's defaults, not the top level."""
    if policy is None:
        return None
    for settings in policy.get("portLevelSettings") or []:
        if int((settings.get("port") or {}).get("number", 0)) == port:
            return settings
    return policy


def outbound_policy_fields(policy: Doc | None, mutants: frozenset[str]) -> dict[str, Any]:
    """The fields a (port-level) traffic policy sets on an outbound cluster: its connection pool,
    and its outlier detection (applyTrafficPolicy, direction outbound)."""
    fields = connection_pool_fields(_connection_pool(policy, mutants))
    outlier = None if policy is None or NO_OUTLIER_DETECTION in mutants else policy.get("outlierDetection")
    if outlier is not None:
        fields.update(outlier_detection_fields(outlier))
    return fields


def inbound_policy_fields(pod: Pod, container_port: int, index: MeshIndex) -> dict[str, Any]:
    """The fields a DestinationRule sets on the inbound cluster of `pod`'s container port: the
    connection pool alone, so that the server side has the capacity the clients were given
    (cluster_builder.go buildInboundCluster). The rule is the one the pod's namespace sees for the
    first Service with a port targeting container_port (cluster.go
    buildInboundClustersFromServiceInstances: the first service instance wins); the port-level
    settings are read by that Service port."""
    for svc in index.state.services:
        if not svc.selects(pod):
            continue
        for sp in svc.ports:
            if sp.target_port == container_port:
                policy = port_policy(index.traffic_policies.get(svc.fqdn), sp.port)
                return connection_pool_fields(_connection_pool(policy, index.state.mutants))
    return connection_pool_fields(None)


def _connection_pool(policy: Doc | None, mutants: frozenset[str]) -> Doc | None:
    if policy is None or NO_CIRCUIT_BREAKER in mutants:
        return None
    return policy.get("connectionPool")


def connection_pool_fields(pool: Doc | None) -> dict[str, Any]:
    """applyConnectionPool: Istio's thresholds with those the pool sets (a zero leaves the default,
    as Istio cannot tell 0 from unset), its connect timeout, and the requests per connection as the
    cluster's HTTP protocol options."""
    thresholds = default_thresholds()
    http = (pool or {}).get("http") or {}
    tcp = (pool or {}).get("tcp") or {}
    for field, istio_field, settings in (
        ("max_requests", "http2MaxRequests", http),
        ("max_pending_requests", "http1MaxPendingRequests", http),
        ("max_retries", "maxRetries", http),
        ("max_connections", "maxConnections", tcp),
    ):
        if int(settings.get(istio_field) or 0) > 0:
            thresholds[field] = int(settings[istio_field])
    fields: dict[str, Any] = {"circuit_breakers": {"thresholds": [thresholds]}}
    if tcp.get("connectTimeout") is not None:
        fields["connect_timeout"] = envoy_duration(str(tcp["connectTimeout"]), "connectionPool.tcp.connectTimeout")
    per_connection = int(http.get("maxRequestsPerConnection") or 0)
    if per_connection > 0:
        fields["typed_extension_protocol_options"] = {HTTP_PROTOCOL_OPTIONS: http_protocol_options(per_connection)}
    return fields


def http_protocol_options(max_requests_per_connection: int) -> dict[str, Any]:
    """The cluster's HttpProtocolOptions: the limit in its common options, and the explicit
    HTTP/1.1 config Istio adds because Envoy requires one (cluster_builder.go clusterWrapper.build)."""
    return {
        "@type": HTTP_PROTOCOL_OPTIONS_TYPE,
        "common_http_protocol_options": {"max_requests_per_connection": max_requests_per_connection},
        "explicit_http_config": {"http_protocol_options": {}},
    }


def outlier_detection_fields(outlier: Doc) -> dict[str, Any]:
    """applyOutlierDetection: success-rate ejection off; each consecutive-errors detection the rule
    sets (0 included: Istio reads a wrapper) enforced always, or never for 0; interval, base ejection
    time and a positive max ejection percent copied; and the panic threshold at minHealthPercent,
    0 by default, so that Envoy never sends to ejected hosts (Envoy's default is 50%)."""
    detection: dict[str, Any] = {"enforcing_success_rate": 0}
    for envoy_field, istio_field in (("consecutive_5xx", "consecutive5xxErrors"),
                                     ("consecutive_gateway_failure", "consecutiveGatewayErrors")):
        if outlier.get(istio_field) is not None:
            count = int(outlier[istio_field])
            detection[envoy_field] = count
            detection[f"enforcing_{envoy_field}"] = ENFORCE_ALWAYS if count > 0 else 0
    for envoy_field, istio_field in (("interval", "interval"), ("base_ejection_time", "baseEjectionTime")):
        if outlier.get(istio_field) is not None:
            detection[envoy_field] = envoy_duration(str(outlier[istio_field]), f"outlierDetection.{istio_field}")
    if int(outlier.get("maxEjectionPercent") or 0) > 0:
        detection["max_ejection_percent"] = int(outlier["maxEjectionPercent"])
    panic_threshold = int(outlier.get("minHealthPercent") or 0)
    return {"outlier_detection": detection, "common_lb_config": {"healthy_panic_threshold": {"value": panic_threshold}}}
