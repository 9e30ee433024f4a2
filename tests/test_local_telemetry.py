"""The local mesh's Istio metrics from access log records, without Envoy: the labels istio_stats
gives each request (istio/proxy 1.28.0 istio_stats.cc) for both reporters, the text Prometheus
reads, the two metrics mutants, and the access log records they are made from."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conformance.targets.local.model import Pod, Service, ServicePort
from conformance.targets.local.telemetry.access_log import (
    DESTINATION,
    SOURCE,
    AccessLogTail,
    LoggedRequest,
    parse_record,
)
from conformance.targets.local.telemetry.labels import STANDARD_LABELS, request_labels
from conformance.targets.local.telemetry.metrics import ProxyMetrics
from conformance.targets.local.telemetry.peers import Directory, WorkloadMetadata
from conformance.targets.local.translator import translate
from conformance.targets.local.translator.mutants import METRICS_SWAPPED_LABELS, METRICS_UNDERCOUNT
from conformance.verdicts.telemetry import ENVOY_DEFAULT_BUCKETS
from tests.builders import INGRESS, PRODUCTPAGE, gateway, gateway_vs, hcm_of, make_pod, mesh

NS = "web"
CURL = make_pod("curl-7wzqrkwslk-8cwgn", "127.0.5.1", {"app": "curl"}, namespace=NS, ports=())
HTTPBIN = make_pod("httpbin-9c6hfscq2r-zbbgp", "127.0.5.2", {"app": "httpbin", "version": "v1"}, namespace=NS,
                   ports=(8080,))
PLAIN = make_pod("plain-6d8b5c9f7d-x2x4q", "127.0.5.3", {"app": "plain"}, namespace=NS, proxy="none", ports=(8080,))
LEGACY = make_pod("curl-7wzqrkwslk-q9z8r", "127.0.5.4", {"app": "curl"}, namespace="legacy", proxy="none", ports=())
GATEWAY = make_pod("istio-ingressgateway-5f7c9b8d4-k2j4h", "127.0.5.5",
                   {"app": "istio-ingressgateway", "istio": "ingressgateway"}, namespace="istio-system",
                   proxy="gateway", ports=())
# Each pod's workload: its Deployment, the name before the ReplicaSet's hash and the pod's suffix.
WORKLOADS = {pod.name: WorkloadMetadata(pod.name.rsplit("-", 2)[0], pod)
             for pod in (CURL, HTTPBIN, PLAIN, LEGACY, GATEWAY)}
HTTPBIN_SVC = Service("httpbin", NS, (ServicePort("http", 8000, 8080),), {"app": "httpbin"})
PLAIN_SVC = Service("plain", NS, (ServicePort("http", 8000, 8080),), {"app": "plain"})
CURL_ID = f"spiffe://cluster.local/ns/{NS}/sa/curl"
HTTPBIN_ID = f"spiffe://cluster.local/ns/{NS}/sa/httpbin"
HTTPBIN_CLUSTER = f"outbound|8000||httpbin.{NS}.svc.cluster.local"


def directory(*services: Service) -> Directory:
    found = Directory()
    found.update(WORKLOADS.values(), services or (HTTPBIN_SVC, PLAIN_SVC))
    return found


def record(reporter: str, **fields: object) -> str:
    """An access log line as Envoy writes it: absent values null, no response flag "-"."""
    line: dict[str, object] = {
        "reporter": reporter, "response_code": 200, "response_flags": "-", "response_code_details": "via_upstream",
        "duration": 3, "authority": f"httpbin.{NS}:8000", "route_name": None, "upstream_cluster": None,
        "upstream_host": None, "downstream_remote_address": None, "downstream_local_address": None,
        "downstream_peer_uri_san": None, "downstream_local_uri_san": None, "upstream_peer_uri_san": None,
        "upstream_local_uri_san": None, "content_type": None, "grpc_status": None, "method": "GET", "path": "/headers",
    }
    line.update(fields)
    return json.dumps(line)


def labels_of(pod: Pod, line: str, found: Directory | None = None) -> dict[str, str]:
    labels = request_labels(parse_record(line), WORKLOADS[pod.name], found or directory())
    assert list(labels) == list(STANDARD_LABELS)
    return labels


def from_curl(**fields: object) -> str:
    """curl's outbound record of a request to httpbin (by default: mutual TLS, answered)."""
    return record(SOURCE, **{"upstream_cluster": HTTPBIN_CLUSTER, "upstream_host": "127.0.5.2:8080",
                             "downstream_remote_address": "127.0.0.1:40000",
                             "upstream_local_uri_san": CURL_ID, "upstream_peer_uri_san": HTTPBIN_ID, **fields})


def at_httpbin(client: str = "127.0.5.1", **fields: object) -> str:
    """httpbin's inbound record of a request from `client` (by default: mutual TLS)."""
    return record(DESTINATION, **{"upstream_cluster": "inbound|8080||", "upstream_host": "127.0.5.2:28080",
                                  "downstream_remote_address": f"{client}:51000",
                                  "downstream_local_address": "127.0.5.2:8080",
                                  "downstream_peer_uri_san": CURL_ID, "downstream_local_uri_san": HTTPBIN_ID,
                                  **fields})


# -- the labels of each reporter ---------------------------------------------------------------


def test_the_client_sidecar_reports_source_with_the_metadata_its_server_exchanged() -> None:
    assert labels_of(CURL, from_curl()) == {
        "reporter": "source",
        "source_workload": "curl", "source_workload_namespace": NS, "source_principal": CURL_ID,
        "source_app": "curl", "source_version": "",  # its own missing label, as istio_stats reports it
        "source_canonical_service": "curl", "source_canonical_revision": "latest", "source_cluster": "Kubernetes",
        "destination_workload": "httpbin", "destination_workload_namespace": NS, "destination_principal": HTTPBIN_ID,
        "destination_app": "httpbin", "destination_version": "v1",
        "destination_service": f"httpbin.{NS}.svc.cluster.local", "destination_service_name": "httpbin",
        "destination_service_namespace": NS, "destination_canonical_service": "httpbin",
        "destination_canonical_revision": "v1", "destination_cluster": "Kubernetes",
        "request_protocol": "http", "response_flags": "-", "connection_security_policy": "unknown",
        "response_code": "200", "grpc_response_status": "",
    }


def test_the_server_sidecar_reports_destination_and_mutual_tls() -> None:
    assert labels_of(HTTPBIN, at_httpbin()) == {
        "reporter": "destination",
        "source_workload": "curl", "source_workload_namespace": NS, "source_principal": CURL_ID,
        "source_app": "curl", "source_version": "unknown",  # a peer's missing label is unknown
        "source_canonical_service": "curl", "source_canonical_revision": "latest", "source_cluster": "Kubernetes",
        "destination_workload": "httpbin", "destination_workload_namespace": NS, "destination_principal": HTTPBIN_ID,
        "destination_app": "httpbin", "destination_version": "v1",
        "destination_service": f"httpbin.{NS}.svc.cluster.local", "destination_service_name": "httpbin",
        "destination_service_namespace": NS, "destination_canonical_service": "httpbin",
        "destination_canonical_revision": "v1", "destination_cluster": "Kubernetes",
        "request_protocol": "http", "response_flags": "-", "connection_security_policy": "mutual_tls",
        "response_code": "200", "grpc_response_status": "",
    }


def test_plaintext_from_a_sidecar_keeps_the_peer_but_names_no_principal() -> None:
    labels = labels_of(HTTPBIN, at_httpbin(downstream_peer_uri_san=None, downstream_local_uri_san=None))
    assert labels["connection_security_policy"] == "none"
    peer = (labels["source_workload"], labels["source_workload_namespace"], labels["source_app"])
    assert peer == ("curl", NS, "curl")
    assert labels["source_principal"] == labels["destination_principal"] == "unknown"
    # A server certificate without a client one is not mutual TLS either.
    assert labels_of(HTTPBIN, at_httpbin(downstream_peer_uri_san=None))["connection_security_policy"] == "none"


def test_a_client_without_a_sidecar_is_unknown_to_the_server() -> None:
    """No proxy, no metadata exchange: the legacy client is known by nothing (plaintext)."""
    labels = labels_of(HTTPBIN, at_httpbin("127.0.5.4", downstream_peer_uri_san=None, downstream_local_uri_san=None))
    source = {name: value for name, value in labels.items() if name.startswith("source_")}
    assert source == {"source_workload": "unknown", "source_workload_namespace": "unknown",
                      "source_principal": "unknown", "source_app": "unknown", "source_version": "unknown",
                      "source_canonical_service": "unknown", "source_canonical_revision": "latest",
                      "source_cluster": "unknown"}
    assert labels["connection_security_policy"] == "none" and labels["destination_workload"] == "httpbin"
    # An address no pod of the mesh ever had (the test host) is unknown alike.
    assert labels_of(HTTPBIN, at_httpbin("127.0.0.1"))["source_workload"] == "unknown"


def test_a_server_without_a_sidecar_is_known_by_its_endpoint_metadata() -> None:
    """util.go AppendLbEndpointMetadata: workload, namespace, canonical service and revision and
    cluster, but no app, version nor identity."""
    labels = labels_of(CURL, from_curl(upstream_cluster=f"outbound|8000||plain.{NS}.svc.cluster.local",
                                       upstream_host="127.0.5.3:8080", upstream_local_uri_san=None,
                                       upstream_peer_uri_san=None, authority=f"plain.{NS}:8000"))
    destination = {name: value for name, value in labels.items() if name.startswith("destination_")}
    assert destination == {
        "destination_workload": "plain", "destination_workload_namespace": NS, "destination_principal": "unknown",
        "destination_app": "unknown", "destination_version": "unknown",
        "destination_service": f"plain.{NS}.svc.cluster.local", "destination_service_name": "plain",
        "destination_service_namespace": NS, "destination_canonical_service": "plain",
        "destination_canonical_revision": "latest", "destination_cluster": "Kubernetes",
    }
    assert labels["source_principal"] == "unknown"


def test_a_request_that_never_reached_its_server_has_envoys_code_and_flags() -> None:
    """No metadata exchange without an answer from the server's proxy: the endpoint's metadata names it."""
    refused = "upstream_reset_before_response_started{connection_failure}"
    labels = labels_of(CURL, from_curl(response_code=503, response_flags="UF,URX", upstream_peer_uri_san=None,
                                       upstream_local_uri_san=None, response_code_details=refused))
    assert (labels["response_code"], labels["response_flags"]) == ("503", "UF,URX")
    assert (labels["destination_workload"], labels["destination_app"]) == ("httpbin", "unknown")
    assert labels["destination_canonical_revision"] == "v1"
    # A downstream that went away before any response: code 0, as istio_stats' value_or(0).
    assert labels_of(CURL, from_curl(response_code=0, response_flags="DC"))["response_code"] == "0"


def test_the_gateway_reports_source() -> None:
    gateway_id = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    line = record(SOURCE, upstream_cluster=HTTPBIN_CLUSTER, upstream_host="127.0.5.2:8080",
                  upstream_local_uri_san=gateway_id, upstream_peer_uri_san=HTTPBIN_ID,
                  authority="httpbin.example.com", route_name="r1")
    labels = labels_of(GATEWAY, line)
    assert {name: labels[name] for name in STANDARD_LABELS if name.startswith("source_")} == {
        "source_workload": "istio-ingressgateway", "source_workload_namespace": "istio-system",
        "source_principal": gateway_id,
        "source_app": "istio-ingressgateway", "source_version": "",
        "source_canonical_service": "istio-ingressgateway", "source_canonical_revision": "latest",
        "source_cluster": "Kubernetes",
    }
    assert labels["reporter"] == "source" and labels["connection_security_policy"] == "unknown"
    destination = (labels["destination_workload"], labels["destination_service"])
    assert destination == ("httpbin", f"httpbin.{NS}.svc.cluster.local")
    # At the server, the gateway is a peer with a proxy: known by metadata exchange.
    assert labels_of(HTTPBIN, at_httpbin("127.0.5.5"))["source_workload"] == "istio-ingressgateway"


def test_traffic_to_no_service_names_istios_catch_alls_or_the_host() -> None:
    passthrough = labels_of(CURL, from_curl(route_name="allow_any", upstream_cluster="PassthroughCluster",
                                            authority="127.0.5.2:8080"))
    assert (passthrough["destination_service"], passthrough["destination_service_name"]) == (
        "127.0.5.2:8080", "PassthroughCluster")
    assert passthrough["destination_service_namespace"] == NS  # the peer's, with no service to name one
    no_route = labels_of(CURL, from_curl(response_code=404, response_flags="NR",
                                         response_code_details="route_not_found", upstream_cluster=None,
                                         upstream_host=None, upstream_peer_uri_san=None, upstream_local_uri_san=None,
                                         authority="nowhere.example:80"))
    assert {name: no_route[name] for name in ("destination_service", "destination_service_name",
                                              "destination_service_namespace", "destination_workload")} == {
        "destination_service": "nowhere.example:80", "destination_service_name": "nowhere.example:80",
        "destination_service_namespace": "unknown", "destination_workload": "unknown"}
    assert (no_route["response_code"], no_route["response_flags"]) == ("404", "NR")


def test_grpc_requests_report_their_grpc_status() -> None:
    grpc = labels_of(HTTPBIN, at_httpbin(content_type="application/grpc", grpc_status=14))
    assert (grpc["request_protocol"], grpc["grpc_response_status"]) == ("grpc", "14")
    web = labels_of(HTTPBIN, at_httpbin(content_type="application/grpc-web", grpc_status=14))
    assert (web["request_protocol"], web["grpc_response_status"]) == ("http", "")


def test_the_identitys_namespace_wins_over_the_peers() -> None:
    """istio_stats reads the namespace from the SPIFFE id first (what shared-identity shows)."""
    labels = labels_of(HTTPBIN, at_httpbin(downstream_peer_uri_san="spiffe://cluster.local/ns/default/sa/default"))
    assert (labels["source_workload"], labels["source_workload_namespace"]) == ("curl", "default")


@pytest.mark.parametrize(("labels", "service", "revision"), [
    ({"app": "reviews", "version": "v2"}, "reviews", "v2"),
    ({"app": "reviews", "app.kubernetes.io/name": "rev", "app.kubernetes.io/version": "2.0"}, "rev", "2.0"),
    ({"app": "reviews", "service.istio.io/canonical-name": "r", "service.istio.io/canonical-revision": "x",
      "app.kubernetes.io/name": "rev"}, "r", "x"),
    ({"run": "web"}, "web-deploy", "latest"),  # no label: the workload's name, and "latest"
])
def test_canonical_service_and_revision_follow_istios_labels(labels: dict[str, str], service: str,
                                                             revision: str) -> None:
    workload = WorkloadMetadata("web-deploy", make_pod("web-deploy-abc-12345", "127.0.5.9", labels, namespace=NS))
    assert (workload.canonical_service, workload.canonical_revision) == (service, revision)


def test_the_server_names_the_first_service_on_its_port_or_else_its_canonical_service_never_the_host() -> None:
    """Istio turns the Host-header fallback off for inbound (telemetry.go disableHostHeaderFallback)."""
    other = Service("another", NS, (ServicePort("web", 80, 8080),), {"app": "httpbin"})
    assert labels_of(HTTPBIN, at_httpbin(), directory(other, HTTPBIN_SVC))["destination_service_name"] == "another"
    for authority in (f"httpbin.{NS}:8000", "elsewhere.example", None):
        alone = labels_of(HTTPBIN, at_httpbin(authority=authority), directory(PLAIN_SVC))
        assert (alone["destination_service"], alone["destination_service_name"]) == ("httpbin", "httpbin")
        assert alone["destination_service_namespace"] == NS


def test_a_gateway_request_no_cluster_takes_names_no_service_and_a_sidecars_names_its_host() -> None:
    """A gateway has no Host-header fallback either: its 404 NR is to an unknown service."""
    no_route = {"response_code": 404, "response_flags": "NR", "response_code_details": "route_not_found",
                "upstream_cluster": None, "upstream_host": None, "upstream_peer_uri_san": None,
                "upstream_local_uri_san": None, "authority": "nowhere.example"}
    at_gateway = labels_of(GATEWAY, record(SOURCE, **no_route))
    at_curl = labels_of(CURL, record(SOURCE, **no_route))
    names = ("destination_service", "destination_service_name", "destination_service_namespace")
    assert [at_gateway[n] for n in names] == ["unknown", "unknown", "unknown"]
    assert [at_curl[n] for n in names] == ["nowhere.example", "nowhere.example", "unknown"]
    # Through a cluster, the gateway names the cluster's service, as a sidecar does.
    routed = labels_of(GATEWAY, record(SOURCE, upstream_cluster=HTTPBIN_CLUSTER, upstream_host="127.0.5.2:8080",
                                       authority="httpbin.example.com"))
    assert [routed[n] for n in names] == [f"httpbin.{NS}.svc.cluster.local", "httpbin", NS]


def test_the_client_names_the_service_namespace_of_its_cluster_before_its_peers() -> None:
    """istio_stats' ClientSidecar: the cluster metadata's service namespace first, then the peer's
    (its certificate's, then its metadata's); istio/proxy 1.28.0 testdata/metric/
    client_request_total_cluster_metadata_precedence.yaml.tmpl and client_disable_host_header_fallback."""
    elsewhere = "spiffe://cluster.local/ns/other/sa/httpbin"
    labels = labels_of(CURL, from_curl(upstream_peer_uri_san=elsewhere))
    assert (labels["destination_service_namespace"], labels["destination_workload_namespace"]) == (NS, "other")
    # The client proxy's own replies name the cluster's service as well: no healthy host (UH), overflow (UO).
    for flag in ("UH", "UO"):
        replied = labels_of(CURL, from_curl(response_code=503, response_flags=flag, upstream_host=None,
                                            upstream_peer_uri_san=None, response_code_details="no_healthy_upstream"))
        assert (replied["destination_service"], replied["destination_service_namespace"]) == (
            f"httpbin.{NS}.svc.cluster.local", NS), flag
        assert replied["destination_workload"] == "unknown"
    # Without a service's cluster, the peer's: its certificate's namespace over its metadata's.
    passthrough = labels_of(CURL, from_curl(route_name="allow_any", upstream_cluster="PassthroughCluster",
                                            upstream_peer_uri_san=elsewhere))
    assert passthrough["destination_service_namespace"] == "other"


# -- the access log records --------------------------------------------------------------------


def _logs(listeners: list[dict]) -> dict[str, list[dict]]:
    """Each listener's access logs (of its first chain: every chain of a listener shares its HCM)."""
    return {item["name"]: hcm_of(item).get("access_log", []) for item in listeners}


def test_every_connection_manager_logs_its_requests_as_its_reporter() -> None:
    """Sidecar inbound: destination; sidecar outbound and the gateway: source; one file per proxy."""
    state = mesh(gateway("gw", ["*"]), gateway_vs("front", ["*"], ["istio-system/gw"]))
    sidecar = replace(PRODUCTPAGE, access_log="/run/proxies/productpage/access.log")
    front = replace(INGRESS, access_log="/run/proxies/gateway/access.log")
    logs = {**_logs(translate(sidecar, state).listeners), **_logs(translate(front, state).listeners)}
    expected = {f"inbound_{sidecar.ip}_9080": (sidecar, "destination"), "outbound": (sidecar, "source"),
                f"{front.ip}_8080": (front, "source")}
    assert set(logs) == set(expected)
    for name, (pod, reporter) in expected.items():
        [log] = logs[name]
        config = log["typed_config"]
        assert (log["name"], config["path"]) == ("envoy.access_loggers.file", pod.access_log)
        assert config["log_format"]["json_format"]["reporter"] == reporter
        assert config["log_format"]["json_format"]["upstream_cluster"] == "%UPSTREAM_CLUSTER_RAW%"
    # A pod without a log file (the translator's tests) gets no access log at all.
    assert all(not log for log in _logs(translate(PRODUCTPAGE, state).listeners).values())


def test_a_record_reads_envoys_nulls_and_dashes_as_absent() -> None:
    request = parse_record(record(SOURCE, duration=None, upstream_peer_uri_san=f"{HTTPBIN_ID},spiffe://other",
                                  upstream_host="-"))
    assert request == LoggedRequest(
        reporter="source", response_code=200, response_flags="-", response_code_details="via_upstream",
        duration_ms=None, authority=f"httpbin.{NS}:8000", route_name="", upstream_cluster="", upstream_host="",
        downstream_remote_address="", downstream_local_address="", downstream_peer_uri_san="",
        downstream_local_uri_san="", upstream_peer_uri_san=HTTPBIN_ID, upstream_local_uri_san="", content_type="",
        grpc_status="")


def test_the_tail_returns_each_complete_line_once(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    tail = AccessLogTail(log)
    assert list(tail.read()) == []  # no file yet
    first, second = from_curl(duration=1), from_curl(duration=2)
    log.write_text(first + "\n" + second[:20])
    assert [r.duration_ms for r in tail.read()] == [1]
    with log.open("a") as out:
        out.write(second[20:] + "\n")
    assert [r.duration_ms for r in tail.read()] == [2]
    assert list(tail.read()) == []


# -- the exposition and the mutants ------------------------------------------------------------


def exposed(metrics: ProxyMetrics) -> dict[str, list]:
    """The samples of each family, as prometheus_client's parser reads the text."""
    return {family.name: family.samples for family in text_string_to_metric_families(metrics.exposition().decode())}


def test_the_exposition_is_a_counter_and_a_histogram_with_envoys_buckets() -> None:
    metrics = ProxyMetrics()
    labels = labels_of(CURL, from_curl())
    for duration in (0, 3, 3, 700, None):
        metrics.record(labels, duration)
    families = exposed(metrics)
    [requests] = families["istio_requests"]
    assert (requests.name, requests.labels, requests.value) == ("istio_requests_total", labels, 5)
    samples = families["istio_request_duration_milliseconds"]
    buckets = {s.labels["le"]: s.value for s in samples if s.name.endswith("_bucket")}
    # Envoy's bounds as Envoy writes them ("{:.32g}"), cumulative; the request without a duration has none.
    assert list(buckets) == [*(f"{b:.32g}" for b in ENVOY_DEFAULT_BUCKETS), "+Inf"]
    assert list(buckets)[:4] == ["0.5", "1", "5", "10"] and list(buckets)[-2] == "3600000"
    picked = [buckets[le] for le in ("0.5", "1", "5", "500", "1000", "+Inf")]
    assert picked == [1, 1, 3, 3, 4, 4]
    totals = {s.name: s.value for s in samples if not s.name.endswith("_bucket")}
    assert totals == {"istio_request_duration_milliseconds_count": 4, "istio_request_duration_milliseconds_sum": 706}
    assert all({k: v for k, v in s.labels.items() if k != "le"} == labels for s in samples)


def test_swapped_labels_mutant_swaps_each_source_label_with_its_destination() -> None:
    labels = labels_of(HTTPBIN, at_httpbin())
    metrics = ProxyMetrics(frozenset({METRICS_SWAPPED_LABELS}))
    metrics.record(labels, 1)
    [sample] = exposed(metrics)["istio_requests"]
    sides = ("workload", "workload_namespace", "principal", "app", "version", "canonical_service",
             "canonical_revision", "cluster")
    for side in sides:
        assert sample.labels[f"source_{side}"] == labels[f"destination_{side}"]
        assert sample.labels[f"destination_{side}"] == labels[f"source_{side}"]
    assert {k: v for k, v in sample.labels.items() if not k.endswith(sides)} == \
        {k: v for k, v in labels.items() if not k.endswith(sides)}
    assert sample.labels["source_workload"] == "httpbin" and labels["source_workload"] == "curl"


def test_undercount_mutant_leaves_one_request_in_ten_uncounted() -> None:
    labels = labels_of(CURL, from_curl())
    counted = {}
    for mutants in (frozenset(), frozenset({METRICS_UNDERCOUNT})):
        metrics = ProxyMetrics(mutants)
        for _ in range(25):
            metrics.record(labels, 2)
        samples = exposed(metrics)
        counted[mutants] = (samples["istio_requests"][0].value,
                            next(s.value for s in samples["istio_request_duration_milliseconds"]
                                 if s.name.endswith("_count")))
    assert counted == {frozenset(): (25, 25), frozenset({METRICS_UNDERCOUNT}): (23, 23)}
