"""Resilience in the local mesh as istiod configures it (istio/istio, tag 1.28.0), by value: a
DestinationRule's connectionPool and outlierDetection on a sidecar's clusters (pilot/pkg/networking/core/
cluster_traffic_policy.go applyConnectionPool, applyOutlierDetection; pilot/pkg/networking/util/
util.go GetPortLevelTrafficPolicy), checked as Istio validates them (pkg/config/validation/
validation.go validateConnectionPool, validateOutlierDetection), and VirtualService retries
(pilot/pkg/networking/core/route/retry/retry.go ConvertPolicy); with the mutants that drop each.
The same on real Envoys is tests/test_resilience_envoy.py.
"""

import re

import pytest

from conformance.errors import ManifestError, UnsupportedResource
from conformance.targets.local.istio_subset import check_supported
from conformance.targets.local.model import MeshState, Pod, Service, ServicePort
from conformance.targets.local.translator import translate
from conformance.targets.local.translator.index import MeshIndex
from conformance.targets.local.translator.retries import route_retry_policy
from conformance.targets.local.translator.traffic_policy import inbound_policy_fields
from tests.builders import (
    ALL_V1_DR,
    INGRESS,
    ISTIO_DEFAULT_RETRY,
    NS,
    PRODUCTPAGE,
    REVIEWS,
    REVIEWS_HOST,
    REVIEWS_VHOST,
    mesh,
    outbound_routes,
    sidecar,
    to,
    virtual_service,
)
from tests.resilience_builders import TASK_POOL, traffic_rule

UNLIMITED = 4294967295
ISTIO_THRESHOLDS = {"max_connections": UNLIMITED, "max_pending_requests": UNLIMITED, "max_requests": UNLIMITED,
                    "max_retries": UNLIMITED, "track_remaining": True}
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
REVIEWS_CLUSTER = f"outbound|9080||{REVIEWS_HOST}"


def clusters_of(state: MeshState, pod: Pod = PRODUCTPAGE) -> dict[str, dict]:
    return {cluster["name"]: cluster for cluster in translate(pod, state).clusters}


def thresholds(cluster: dict) -> dict:
    [only] = cluster["circuit_breakers"]["thresholds"]
    return only


# ---------------------------------------------------------------------------------------------
# Connection pools, by value


def test_every_cluster_gets_istios_circuit_breakers_without_a_destination_rule() -> None:
    """cluster_traffic_policy.go getDefaultCircuitBreakerThresholds (every limit at MaxUint32,
    TrackRemaining true in 1.28), applied to outbound, inbound and passthrough clusters alike
    (cluster_builder.go buildInboundCluster, buildDefaultPassthroughCluster); no protocol options,
    no outlier detection."""
    for pod in (PRODUCTPAGE, INGRESS):
        for name, cluster in clusters_of(mesh(), pod).items():
            assert cluster["circuit_breakers"] == {"thresholds": [ISTIO_THRESHOLDS]}, name
            assert "typed_extension_protocol_options" not in cluster and "outlier_detection" not in cluster, name


def test_the_circuit_breaking_tasks_pool_limits_connections_pending_requests_and_requests_per_connection() -> None:
    """applyConnectionPool: tcp.maxConnections -> max_connections, http1MaxPendingRequests ->
    max_pending_requests, the rest Istio's; maxRequestsPerConnection in the cluster's
    HttpProtocolOptions (common_http_protocol_options), with the explicit HTTP/1.1 config
    clusterWrapper.build adds. Subset clusters take the rule's policy (MergeSubsetTrafficPolicy);
    other services keep the defaults; the gateway's clusters follow the rule too."""
    state = mesh(traffic_rule("reviews", {"connectionPool": TASK_POOL}, ["v1", "v2"]))
    for pod in (PRODUCTPAGE, INGRESS):
        clusters = clusters_of(state, pod)
        for name in (REVIEWS_CLUSTER, f"outbound|9080|v1|{REVIEWS_HOST}", f"outbound|9080|v2|{REVIEWS_HOST}"):
            assert thresholds(clusters[name]) == {**ISTIO_THRESHOLDS, "max_connections": 1, "max_pending_requests": 1}
            assert clusters[name]["typed_extension_protocol_options"] == {HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
                "common_http_protocol_options": {"max_requests_per_connection": 1},
                "explicit_http_config": {"http_protocol_options": {}},
            }}
            assert clusters[name]["connect_timeout"] == "10s"
        ratings = clusters["outbound|9080||ratings.bookinfo.svc.cluster.local"]
        assert thresholds(ratings) == ISTIO_THRESHOLDS and "typed_extension_protocol_options" not in ratings


def test_every_connection_pool_field_the_local_mesh_admits() -> None:
    """applyConnectionPool: http2MaxRequests -> max_requests, maxRetries -> max_retries,
    tcp.connectTimeout -> connect_timeout; zeros leave Istio's defaults (Istio cannot tell 0 from
    unset: its FIXMEs), and no protocol options without maxRequestsPerConnection."""
    pool = {"tcp": {"maxConnections": 0, "connectTimeout": "250ms"},
            "http": {"http2MaxRequests": 7, "maxRetries": 3, "http1MaxPendingRequests": 0, "maxRequestsPerConnection": 0}}
    [cluster] = [c for name, c in clusters_of(mesh(traffic_rule("reviews", {"connectionPool": pool}))).items()
                 if name == REVIEWS_CLUSTER]
    assert thresholds(cluster) == {**ISTIO_THRESHOLDS, "max_requests": 7, "max_retries": 3}
    assert cluster["connect_timeout"] == "0.250000000s"
    assert "typed_extension_protocol_options" not in cluster and "outlier_detection" not in cluster


def test_port_level_settings_replace_the_whole_policy_of_their_port() -> None:
    """util.go GetPortLevelTrafficPolicy: a port's settings replace the top-level policy; what
    they leave out (here the outlier detection) takes Istio's defaults, not the top level's."""
    service = Service("web", NS, (ServicePort("http", 80, 8080), ServicePort("admin", 9000, 9000)), {"app": "web"})
    policy = {"connectionPool": {"tcp": {"maxConnections": 5}}, "outlierDetection": {"consecutive5xxErrors": 3},
              "portLevelSettings": [{"port": {"number": 9000}, "connectionPool": {"http": {"maxRetries": 4}}}]}
    clusters = clusters_of(mesh(traffic_rule("web", policy), services=(service,)))
    top, port = clusters["outbound|80||web.bookinfo.svc.cluster.local"], clusters["outbound|9000||web.bookinfo.svc.cluster.local"]
    assert thresholds(top) == {**ISTIO_THRESHOLDS, "max_connections": 5}
    assert top["outlier_detection"]["consecutive_5xx"] == 3
    assert thresholds(port) == {**ISTIO_THRESHOLDS, "max_retries": 4}
    assert "outlier_detection" not in port and "common_lb_config" not in port


def test_inbound_clusters_take_the_connection_pool_alone() -> None:
    """cluster_builder.go buildInboundCluster: the DestinationRule of the first service targeting
    the container port, as the pod's namespace sees it, its connection pool only (applyTrafficPolicy
    skips outlier detection inbound), read by the service port (GetPortLevelTrafficPolicy)."""
    rule = traffic_rule("reviews", {"connectionPool": TASK_POOL, "outlierDetection": {"consecutive5xxErrors": 1},
                                    "portLevelSettings": [{"port": {"number": 9999}, "connectionPool": {
                                        "tcp": {"maxConnections": 9}}}]})
    pod = REVIEWS["v1"]
    fields = inbound_policy_fields(pod, 9080, MeshIndex.build(mesh(rule), pod.namespace))
    assert set(fields) == {"circuit_breakers", "typed_extension_protocol_options"}
    assert thresholds(fields) == {**ISTIO_THRESHOLDS, "max_connections": 1, "max_pending_requests": 1}
    assert inbound_policy_fields(pod, 9080, MeshIndex.build(mesh(), pod.namespace)) == {
        "circuit_breakers": {"thresholds": [ISTIO_THRESHOLDS]}}
    assert inbound_policy_fields(pod, 9080, MeshIndex.build(mesh(rule, mutants=frozenset({"no-circuit-breaker"})),
                                                            pod.namespace)) == {
        "circuit_breakers": {"thresholds": [ISTIO_THRESHOLDS]}}


# ---------------------------------------------------------------------------------------------
# Outlier detection, by value


def test_outlier_detection_as_istio_sets_it() -> None:
    """applyOutlierDetection: success-rate ejection off (enforcing 0); consecutive5xxErrors ->
    consecutive_5xx enforced at 100; interval, baseEjectionTime and maxEjectionPercent copied;
    the panic threshold at minHealthPercent, 0 when unset (Envoy's default would be 50)."""
    outlier = {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "30s", "maxEjectionPercent": 100}
    cluster = clusters_of(mesh(traffic_rule("reviews", {"outlierDetection": outlier}, ["v1"])))
    for name in (REVIEWS_CLUSTER, f"outbound|9080|v1|{REVIEWS_HOST}"):
        assert cluster[name]["outlier_detection"] == {
            "enforcing_success_rate": 0, "consecutive_5xx": 1, "enforcing_consecutive_5xx": 100,
            "interval": "1s", "base_ejection_time": "30s", "max_ejection_percent": 100,
        }
        assert cluster[name]["common_lb_config"] == {"healthy_panic_threshold": {"value": 0}}
        assert thresholds(cluster[name]) == ISTIO_THRESHOLDS


def test_outlier_detection_zeros_gateway_errors_and_min_health() -> None:
    """applyOutlierDetection reads the error counts as wrappers: an explicit 0 is set, and not
    enforced; consecutiveGatewayErrors -> consecutive_gateway_failure; maxEjectionPercent 0 is left
    out (Envoy's default); minHealthPercent is the panic threshold."""
    outlier = {"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 4, "maxEjectionPercent": 0, "minHealthPercent": 30}
    cluster = clusters_of(mesh(traffic_rule("reviews", {"outlierDetection": outlier})))[REVIEWS_CLUSTER]
    assert cluster["outlier_detection"] == {
        "enforcing_success_rate": 0, "consecutive_5xx": 0, "enforcing_consecutive_5xx": 0,
        "consecutive_gateway_failure": 4, "enforcing_consecutive_gateway_failure": 100,
    }
    assert cluster["common_lb_config"] == {"healthy_panic_threshold": {"value": 30}}


# ---------------------------------------------------------------------------------------------
# Validation and the fields not implemented


@pytest.mark.parametrize(("policy", "message"), [
    ({"connectionPool": {}}, "spec.trafficPolicy.connectionPool: connection pool must have at least one field"),
    ({"connectionPool": {"tcp": {"maxConnections": -1}}}, "max connections must be non-negative"),
    ({"connectionPool": {"http": {"http1MaxPendingRequests": -1}}}, "http1 max pending requests must be non-negative"),
    ({"connectionPool": {"http": {"http2MaxRequests": -2}}}, "http2 max requests must be non-negative"),
    ({"connectionPool": {"http": {"maxRequestsPerConnection": -1}}}, "max requests per connection must be non-negative"),
    ({"connectionPool": {"http": {"maxRetries": -1}}}, "max retries must be non-negative"),
    ({"connectionPool": {"http": {"maxRetries": "3"}}}, "connectionPool.http.maxRetries: '3' is not an integer"),
    ({"connectionPool": {"tcp": {"connectTimeout": "500us"}}}, "tcp.connectTimeout: duration must be greater than 1ms"),
    ({"connectionPool": {"tcp": {"connectTimeout": "1500us"}}}, "only durations to ms precision are supported"),
    ({"outlierDetection": {"interval": "0s"}}, "outlierDetection.interval: duration must be greater than 1ms"),
    ({"outlierDetection": {"baseEjectionTime": "1.5ms"}}, "only durations to ms precision are supported"),
    ({"outlierDetection": {"maxEjectionPercent": 101}}, "maxEjectionPercent: percentage 101 is not in range 0..100"),
    ({"outlierDetection": {"minHealthPercent": -1}}, "minHealthPercent: percentage -1 is not in range 0..100"),
    ({"portLevelSettings": [{"port": {"number": 80}, "connectionPool": {"tcp": {"maxConnections": -1}}}]},
     "spec.trafficPolicy.portLevelSettings[0].connectionPool: max connections must be non-negative"),
])
def test_invalid_pools_and_detections_are_refused_as_istio_validates_them(policy: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace(".", r"\.").replace("[", r"\[")):
        check_supported(traffic_rule("reviews", policy))


@pytest.mark.parametrize(("policy", "path"), [
    ({"loadBalancer": {"simple": "ROUND_ROBIN"}}, "loadBalancer"),
    ({"retryBudget": {"percent": {"value": 10}}}, "retryBudget"),
    ({"connectionPool": {"tcp": {"idleTimeout": "1s"}}}, "connectionPool.tcp.idleTimeout"),
    ({"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}}, "connectionPool.http.h2UpgradePolicy"),
    ({"outlierDetection": {"splitExternalLocalOriginErrors": True}}, "outlierDetection.splitExternalLocalOriginErrors"),
    ({"outlierDetection": {"consecutiveErrors": 5}}, "outlierDetection.consecutiveErrors"),
])
def test_policy_fields_not_implemented_are_refused_by_path(policy: dict, path: str) -> None:
    with pytest.raises(UnsupportedResource, match=rf"field spec\.trafficPolicy\.{re.escape(path)} is not implemented"):
        check_supported(traffic_rule("reviews", policy))


def test_a_subsets_own_traffic_policy_is_refused() -> None:
    rule = traffic_rule("reviews", {"connectionPool": TASK_POOL}, ["v1"])
    rule["spec"]["subsets"][0]["trafficPolicy"] = {"connectionPool": TASK_POOL}
    with pytest.raises(UnsupportedResource, match=r"field spec\.subsets\[0\]\.trafficPolicy is not implemented"):
        check_supported(rule)


def test_the_task_and_outlier_rules_are_accepted() -> None:
    check_supported(traffic_rule("httpbin", {"connectionPool": TASK_POOL}))
    check_supported(traffic_rule("flaky", {"outlierDetection": {
        "consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "30s", "maxEjectionPercent": 100}}))


# ---------------------------------------------------------------------------------------------
# Retries and the three mutants, by value


def test_retries_on_5xx_give_n_retries_and_attempts_0_none() -> None:
    """retry.go ConvertPolicy: attempts N -> num_retries N, retryOn replaces the default
    conditions; attempts 0 -> no retry policy at all (not even Istio's default)."""
    vs = virtual_service("reviews", [{"route": [to("reviews", "v1")], "retries": {"attempts": 3, "retryOn": "5xx"}}])
    [route] = outbound_routes(sidecar(mesh(ALL_V1_DR, vs)), REVIEWS_VHOST)
    assert route["route"]["retry_policy"] == {**ISTIO_DEFAULT_RETRY, "num_retries": 3, "retry_on": "5xx"}
    off = virtual_service("reviews", [{"route": [to("reviews", "v1")], "retries": {"attempts": 0}}])
    [route] = outbound_routes(sidecar(mesh(ALL_V1_DR, off)), REVIEWS_VHOST)
    assert "retry_policy" not in route["route"]


def test_no_retries_mutant_keeps_istios_default_policy() -> None:
    """Under no-retries a VirtualService's retries, attempts 0 included, give retry.go's DefaultPolicy."""
    for retries in ({"attempts": 3, "retryOn": "5xx"}, {"attempts": 0}):
        assert route_retry_policy(retries, "here", frozenset({"no-retries"})) == ISTIO_DEFAULT_RETRY
        assert route_retry_policy(retries, "here") != ISTIO_DEFAULT_RETRY


def test_no_circuit_breaker_and_no_outlier_detection_mutants_drop_their_part_only() -> None:
    rule = traffic_rule("reviews", {"connectionPool": TASK_POOL, "outlierDetection": {"consecutive5xxErrors": 1}})
    plain = clusters_of(mesh(rule))[REVIEWS_CLUSTER]
    no_pool = clusters_of(mesh(rule, mutants=frozenset({"no-circuit-breaker"})))[REVIEWS_CLUSTER]
    no_outlier = clusters_of(mesh(rule, mutants=frozenset({"no-outlier-detection"})))[REVIEWS_CLUSTER]
    assert thresholds(no_pool) == ISTIO_THRESHOLDS and "typed_extension_protocol_options" not in no_pool
    assert no_pool["outlier_detection"] == plain["outlier_detection"]
    assert "outlier_detection" not in no_outlier and "common_lb_config" not in no_outlier
    assert thresholds(no_outlier) == thresholds(plain) != ISTIO_THRESHOLDS
