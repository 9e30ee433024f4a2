"""Istio's request metrics on a real local mesh: requests from an injected curl and from a curl
without a sidecar to an injected httpbin, through real Envoys, counted exactly in a real
Prometheus for both reporters, with Istio's labels. Prometheus is required here: without it these
tests fail with the install command (CI installs it)."""

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conformance.settings import RunSettings
from conformance.targets.local.objects import namespace_doc
from conformance.targets.local.target import LocalTarget
from conformance.targets.local.telemetry.labels import STANDARD_LABELS
from conformance.targets.local.translator import translate
from conformance.targets.local.translator.mutants import METRICS_SWAPPED_LABELS, METRICS_UNDERCOUNT
from tests.builders import INGRESS, PRODUCTPAGE, eventually, gateway, gateway_vs, manifest_docs, mesh, mesh_processes
from tests.envoy_builders import envoy_validate, static_bootstrap

MESHED, LEGACY = "web", "legacy"
URL = f"http://httpbin.{MESHED}:8000/get"
HTTPBIN_ID = f"spiffe://cluster.local/ns/{MESHED}/sa/httpbin"
CURL_ID = f"spiffe://cluster.local/ns/{MESHED}/sa/curl"
# Envoy flushes its access logs every second, Prometheus scrapes every second: a count is there
# within a few seconds; this leaves room for a machine slowed by parallel runs.
METRICS_TIMEOUT = 30.0
# (reporter, source workload, destination workload) -> requests
Counts = dict[tuple[str, str, str], float]


def running_target(tmp_path: Path, mutants: tuple[str, ...] = ()) -> Iterator[LocalTarget]:
    target = LocalTarget(RunSettings(target="local", work_dir=tmp_path / "work", mutants=mutants))
    target.up()
    try:
        target.apply([namespace_doc(MESHED, {"istio-injection": "enabled"})], MESHED)
        target.apply(manifest_docs("clients/httpbin.yaml") + manifest_docs("clients/curl.yaml"), MESHED)
        target.apply([namespace_doc(LEGACY, {})], LEGACY)
        target.apply(manifest_docs("clients/curl.yaml"), LEGACY)
        target.wait_ready(MESHED)
        target.wait_ready(LEGACY)
        yield target
    finally:
        prometheus = target.mesh.telemetry.prometheus.child if target.mesh else None
        target.down()
        assert prometheus is None or not prometheus.alive()
        assert mesh_processes(str(tmp_path)) == []


@pytest.fixture
def target(tmp_path: Path) -> Iterator[LocalTarget]:
    yield from running_target(tmp_path)


def send(target: LocalTarget, namespace: str, count: int) -> None:
    batch = target.client("curl", namespace).send(URL, count=count)
    assert [reply.status for reply in batch.replies] == [200] * count, batch.replies


def istio_series(target: LocalTarget, promql: str) -> list[tuple[dict[str, str], dict[str, str], float]]:
    """Each series: its Istio labels, the labels Prometheus added (the scraped pod's), its value."""
    found = []
    for series in target.prometheus_query(promql):
        metric: dict[str, Any] = series["metric"]
        istio = {name: metric.get(name, "") for name in STANDARD_LABELS}  # Prometheus drops "" labels
        found.append((istio, {k: v for k, v in metric.items() if k not in STANDARD_LABELS}, float(series["value"][1])))
    return found


def counts(target: LocalTarget, metric: str) -> Counts:
    """The counts of `metric` for requests to httpbin's namespace."""
    return {(labels["reporter"], labels["source_workload"], labels["destination_workload"]): value
            for labels, _, value in istio_series(target, f'{metric}{{destination_service_namespace="{MESHED}"}}')}


def require_prometheus(target: LocalTarget) -> None:
    """Fail, saying how to install it, on a machine without Prometheus."""
    assert target.prometheus_unavailable() is None, target.prometheus_unavailable()


def wait_for_counts(read: Callable[[], Counts], expected: Counts) -> None:
    """Until Prometheus holds exactly `expected`: fewer or more both fail, saying what it held."""
    seen: list[Counts] = []

    def holds() -> bool:
        seen.append(read())
        return seen[-1] == expected

    try:
        eventually(holds, "the counts", METRICS_TIMEOUT)
    except AssertionError:
        raise AssertionError(f"expected exactly {expected} in Prometheus; it held {seen[-1:]}") from None


def test_requests_through_the_mesh_are_counted_exactly_with_istios_labels(target: LocalTarget) -> None:
    require_prometheus(target)
    send(target, MESHED, 7)
    send(target, LEGACY, 3)
    expected = {("source", "curl", "httpbin"): 7, ("destination", "curl", "httpbin"): 7,
                ("destination", "unknown", "httpbin"): 3}
    wait_for_counts(lambda: counts(target, "istio_requests_total"), expected)
    assert counts(target, "istio_request_duration_milliseconds_count") == expected

    by_key = {(labels["reporter"], labels["source_workload"]): (labels, added)
              for labels, added, _ in istio_series(target, "istio_requests_total")}
    common = {
        "destination_workload": "httpbin", "destination_workload_namespace": MESHED,
        "destination_app": "httpbin", "destination_version": "v1",
        "destination_service": f"httpbin.{MESHED}.svc.cluster.local", "destination_service_name": "httpbin",
        "destination_service_namespace": MESHED, "destination_canonical_service": "httpbin",
        "destination_canonical_revision": "v1", "destination_cluster": "Kubernetes",
        "request_protocol": "http", "response_code": "200", "response_flags": "-", "grpc_response_status": "",
    }
    meshed_source = {
        "source_workload": "curl", "source_workload_namespace": MESHED, "source_principal": CURL_ID,
        "source_app": "curl", "source_canonical_service": "curl", "source_canonical_revision": "latest",
        "source_cluster": "Kubernetes",
    }
    source, scraped_at_curl = by_key[("source", "curl")]
    assert source == {**common, **meshed_source, "reporter": "source", "source_version": "",
                      "destination_principal": HTTPBIN_ID, "connection_security_policy": "unknown"}
    destination, scraped_at_httpbin = by_key[("destination", "curl")]
    assert destination == {**common, **meshed_source, "reporter": "destination", "source_version": "unknown",
                           "destination_principal": HTTPBIN_ID, "connection_security_policy": "mutual_tls"}
    legacy, _ = by_key[("destination", "unknown")]
    assert legacy == {**common, "reporter": "destination", "source_workload": "unknown",
                      "source_workload_namespace": "unknown", "source_principal": "unknown", "source_app": "unknown",
                      "source_version": "unknown", "source_canonical_service": "unknown",
                      "source_canonical_revision": "latest", "source_cluster": "unknown",
                      # Plaintext: no certificate on either side.
                      "destination_principal": "unknown", "connection_security_policy": "none"}
    # Each reporter's series was scraped from its own pod, labelled as Istio's addon labels it.
    assert (scraped_at_curl["namespace"], scraped_at_curl["pod"].split("-")[0], scraped_at_curl["job"]) == (
        MESHED, "curl", "kubernetes-pods")
    assert (scraped_at_httpbin["app"], scraped_at_httpbin["pod"].split("-")[0]) == ("httpbin", "httpbin")


def test_the_metrics_mutants_swap_labels_and_lose_a_request_in_ten(tmp_path: Path) -> None:
    for target in running_target(tmp_path, (METRICS_SWAPPED_LABELS, METRICS_UNDERCOUNT)):
        require_prometheus(target)
        send(target, MESHED, 10)
        # Swapped: httpbin is reported as the source of its own requests. One in ten is lost.
        expected = {("source", "httpbin", "curl"): 9, ("destination", "httpbin", "curl"): 9}
        wait_for_counts(lambda: _swapped_counts(target), expected)


def _swapped_counts(target: LocalTarget) -> Counts:
    return {(labels["reporter"], labels["source_workload"], labels["destination_workload"]): value
            for labels, _, value in istio_series(target, f'istio_requests_total{{namespace="{MESHED}"}}')}


def test_envoy_takes_the_access_logs_of_every_connection_manager(tmp_path: Path) -> None:
    state = mesh(gateway("gw", ["*"]), gateway_vs("front", ["*"], ["istio-system/gw"]))
    for pod in (PRODUCTPAGE, INGRESS):
        logged = replace(pod, access_log=str(tmp_path / f"{pod.name}.log"))
        envoy_validate(static_bootstrap(logged, translate(logged, state)), tmp_path)
