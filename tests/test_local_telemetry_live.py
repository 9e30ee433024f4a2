"""Istio's request metrics on a real local mesh: requests from an injected curl and from a curl
without a sidecar to an injected httpbin, through real Envoys, counted exactly in a real
Prometheus for both reporters, with Istio's labels. Prometheus is required here: without it these
tests fail with the install command (CI installs it). Besides, the parts that run for real
around it: the access log tail, the metrics server, and how the mesh starts its Prometheus (on
first use; a binary that cannot run fails every query, saying why)."""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance.errors import ConformanceError
from conformance.settings import RunSettings
from conformance.targets.local.objects import namespace_doc
from conformance.targets.local.processes import Supervisor
from conformance.targets.local.target import LocalTarget
from conformance.targets.local.telemetry import prometheus
from conformance.targets.local.telemetry.access_log import AccessLogTail
from conformance.targets.local.telemetry.labels import STANDARD_LABELS
from conformance.targets.local.telemetry.server import MetricsServer
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


@contextmanager
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
        child = target.mesh.telemetry.prometheus.child if target.mesh else None
        target.down()
        assert child is None or not child.alive()
        assert mesh_processes(str(tmp_path)) == []


@pytest.fixture
def target(tmp_path: Path) -> Iterator[LocalTarget]:
    with running_target(tmp_path) as running:
        yield running


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
    send(target, MESHED, 7)
    # Not started until asked for; its first scrapes still count what was logged before.
    assert target.mesh is not None and target.mesh.telemetry.prometheus.child is None
    require_prometheus(target)
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
    with running_target(tmp_path, (METRICS_SWAPPED_LABELS, METRICS_UNDERCOUNT)) as target:
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


# -- the access log tail and the metrics server ------------------------------------------------


def test_a_line_that_does_not_parse_stops_the_tail_there_naming_it(tmp_path: Path) -> None:
    """The records before it are counted once; it and every later one wait, and each read says why."""
    log = tmp_path / "access.log"
    good = json.dumps({"reporter": "source", "response_code": 200, "duration": 1})
    bad = json.dumps({"reporter": "source", "response_code": "two hundred"})
    log.write_text(f"{good}\n{bad}\n{good}\n")
    tail, read = AccessLogTail(log), []
    for _ in range(2):
        with pytest.raises(ConformanceError) as refused:
            for request in tail.read():
                read.append(request.duration_ms)
        assert str(refused.value).startswith(f"{log}: the record at byte {len(good) + 1} does not parse (ValueError: ")
        assert "two hundred" in str(refused.value)
    assert read == [1]


def test_a_scrape_answers_503_naming_a_record_it_cannot_count() -> None:
    def scrape(pod: str) -> bytes:
        raise ValueError(f"access log record of {pod} has no reporter")

    server = MetricsServer("127.0.0.1", scrape, lambda: [], port=0)
    try:
        reply = httpx.get(f"http://{server.address}/stats/prometheus", params={"pod": f"{MESHED}/curl"})
    finally:
        server.stop()
    assert (reply.status_code, reply.text) == (503, f"access log record of {MESHED}/curl has no reporter\n")


# -- Prometheus, started by the mesh --------------------------------------------------------------------------------


def test_each_pod_is_a_target_labelled_as_istios_addon_labels_it() -> None:
    pod = "httpbin-9c6hfscq2r-zbbgp"
    target = prometheus.scrape_target("127.9.0.1:15020", MESHED, pod, "127.0.5.2",
                                      {"app": "httpbin", "service.istio.io/canonical-name": "httpbin"}, 15020)
    assert target == {"targets": ["127.9.0.1:15020"], "labels": {
        "app": "httpbin", "service_istio_io_canonical_name": "httpbin", "namespace": MESHED, "pod": pod,
        "instance": "127.0.5.2:15020", "__param_pod": f"{MESHED}/{pod}"}}
    config = prometheus.scrape_config("http://127.9.0.1:15020/targets")
    assert config["global"]["scrape_interval"] == "1s"
    [job] = config["scrape_configs"]
    assert (job["job_name"], job["honor_labels"], job["metrics_path"]) == ("kubernetes-pods", True, "/stats/prometheus")
    # Asked for over HTTP every second: no file for Prometheus to watch (no inotify instance per mesh).
    assert job["http_sd_configs"] == [{"url": "http://127.9.0.1:15020/targets", "refresh_interval": "1s"}]


def fake_prometheus(directory: Path, monkeypatch: pytest.MonkeyPatch, version: str, then: str) -> Path:
    """A `prometheus` alone on PATH: prints `version` for --version, else runs the shell line `then`;
    each start is logged in calls.log."""
    binary = directory / "prometheus"
    binary.write_text(f"#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'prometheus, version {version} (branch: x)'; "
                      f"exit 0; fi\necho started >> {directory / 'calls.log'}\n{then}\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", str(directory))
    return directory / "calls.log"


def local_prometheus(tmp_path: Path, supervisor: Supervisor) -> prometheus.LocalPrometheus:
    return prometheus.LocalPrometheus(tmp_path / "run", "127.0.0.1", "http://127.0.0.1:15020/targets", supervisor)


def test_without_prometheus_the_mesh_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    supervisor = Supervisor()
    local = local_prometheus(tmp_path, supervisor)
    reason = local.unavailable()
    assert reason is not None and "apt-get install prometheus" in reason
    with pytest.raises(ConformanceError, match="the local mesh has no Prometheus: .*apt-get install prometheus"):
        local.query("up")
    assert local.child is None and supervisor.children() == []


def test_a_prometheus_older_than_http_service_discovery_fails_every_query_saying_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_prometheus(tmp_path, monkeypatch, "2.27.1", "exec /bin/sleep 30")
    supervisor = Supervisor()
    local = local_prometheus(tmp_path, supervisor)
    assert local.unavailable() is None  # there is one: the features run, and fail
    for _ in range(2):
        with pytest.raises(ConformanceError) as refused:
            local.query("up")
        assert str(refused.value).startswith(f"the local mesh's Prometheus cannot run: Prometheus 2.27.1 at "
                                             f"{tmp_path / 'prometheus'} is older than 2.28, which the scrape "
                                             f"configuration's http_sd_configs needs"), str(refused.value)
    assert not calls.exists() and supervisor.children() == []


def test_a_prometheus_that_cannot_start_is_started_once_on_first_use_and_fails_every_query_with_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_prometheus(tmp_path, monkeypatch, "2.42.0+ds",
                            "echo 'err: opening storage failed: lock DB directory: resource temporarily unavailable'"
                            "\nexit 1")
    supervisor = Supervisor()
    local = local_prometheus(tmp_path, supervisor)
    assert not calls.exists()  # nothing started with the mesh
    assert local.unavailable() is None
    for _ in range(2):
        with pytest.raises(ConformanceError) as refused:
            local.query("up")
        assert str(refused.value).startswith("the local mesh's Prometheus cannot run: Prometheus did not start: ")
        assert "exited with code 1: err: opening storage failed" in str(refused.value)
    assert calls.read_text() == "started\n" and supervisor.children() == []


def test_an_interrupt_while_prometheus_starts_leaves_it_stopped_and_the_next_use_tries_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_prometheus(tmp_path, monkeypatch, "3.5.0", "exec /bin/sleep 30")
    supervisor = Supervisor()
    local = local_prometheus(tmp_path, supervisor)

    waiting = prometheus.wait_for

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prometheus, "wait_for", interrupted)
    with pytest.raises(KeyboardInterrupt):
        local.unavailable()
    first = local.child
    assert first is not None and not first.alive() and supervisor.children() == []
    # The next use starts it again (this one never gets ready: it fails, saying so).
    monkeypatch.setattr(prometheus, "wait_for", waiting)
    monkeypatch.setattr(prometheus, "READY_TIMEOUT", 0.3)
    with pytest.raises(ConformanceError, match="Prometheus did not start: Prometheus at http://127.0.0.1:19090: "
                                               "not within 0.3s"):
        local.query("up")
    assert local.child is not first and not local.child.alive() and supervisor.children() == []
