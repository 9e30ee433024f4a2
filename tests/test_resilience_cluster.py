"""MESH-RESILIENCE on a cluster, against the fake API server (tests/fakeapi.py): the resilience
manifests on the API server (with Istio's CRDs, and refused without them), then what the suite
reads from the cluster's pods: the proxies' counters as pilot-agent prints them on Istio 1.24+,
found by the names the suite asks for and by none of their near misses, and the replies of a
circuit breaker as the curl batch script reports them.

Exec into the fake API's pods is tests/cluster_builders.py's PodExec: the batch script runs for
real with this machine's sh and curl, against a local server standing in for curl's sidecar.
"""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance import manifests
from conformance.errors import ConformanceError
from conformance.fixtures.mesh import BOOKINFO_MANIFESTS
from conformance.names import ISTIO_NAMESPACE, ISTIO_NETWORKING_GROUP, PROXY_CONTAINER
from conformance.probes import envoy_stats
from conformance.targets import kube as kube_module
from conformance.targets.cluster import ClusterTarget
from conformance.targets.local.admission.injector import Injector
from conformance.targets.local.xds.secrets import MeshCA
from conformance.verdicts.resilience import OVERLOADED, Overflow, circuit_broken, overflowed, retried
from tests.cluster_builders import (PodExec, cluster_target, injected_namespace, object_path, running_cluster,
                                    seed_namespace)
from tests.fakeapi import FakeApi
from tests.resilience_builders import (HTTPBIN_PORT, HTTPBIN_TARGET_PORT, OVERFLOW_BODY, RefusingSidecar,
                                       client_proxy_stats, server_proxy_stats)

RESILIENCE = sorted(p.name for p in (manifests.manifests_dir() / "resilience").glob("*.yaml"))
# What suites/test_resilience.py applies before a manifest, beside Bookinfo and its clients.
APPLIED_BEFORE = {"dr-flaky-outlier.yaml": ("resilience/flaky.yaml",)}
PILOT_AGENT_STATS = ("pilot-agent", "request", "GET", "stats")
LOAD, CONCURRENCY, SLOW = 20, 4, "/delay/0.2"  # the suite's circuit-breaking load


@pytest.fixture
def cluster(api: FakeApi, tmp_path: Path) -> Iterator[ClusterTarget]:
    """A cluster target on the fake API with Istio's CRDs and its root namespace."""
    with running_cluster(api, tmp_path, ISTIO_NAMESPACE) as target:
        yield target


def docs_of(*names: str) -> list[dict[str, Any]]:
    return [d for name in names for d in manifests.load(name)]


def routed_hosts(doc: dict[str, Any]) -> set[str]:
    """The hosts a DestinationRule or VirtualService names: its host(s) and its routes' destinations."""
    spec = doc["spec"]
    hosts = {spec["host"]} if doc["kind"] == "DestinationRule" else set(spec["hosts"])
    return hosts | {d["destination"]["host"] for rule in spec.get("http", []) for d in rule.get("route", [])}


# --- the manifests on the API server -----------------------------------------------------------


@pytest.mark.parametrize("name", RESILIENCE)
def test_each_resilience_manifest_is_stored_as_written_beside_the_services_it_names(
        cluster: ClusterTarget, api: FakeApi, name: str) -> None:
    docs = manifests.load(f"resilience/{name}")
    with cluster.namespace("bookinfo-r1", {}) as ns:
        cluster.apply(docs_of(*BOOKINFO_MANIFESTS, *APPLIED_BEFORE.get(name, ())), ns)
        cluster.apply(docs, ns)
        paths = [object_path(api, d, ns) for d in docs]
        for doc, path in zip(docs, paths):
            # As written: a CRD's schema pruned nothing (a misspelt field would be dropped, and the
            # policy would silently not apply); a built-in kind only gains its defaults.
            stored, written = api.objects[path]["spec"], json.loads(json.dumps(doc["spec"]))
            assert {k: stored.get(k) for k in written} == written, path
            if doc["apiVersion"].startswith(f"{ISTIO_NETWORKING_GROUP}/"):
                assert stored == written, path
            assert len(api.seen("PATCH", path)) == 1  # one server-side apply
        for doc in docs:
            if doc["apiVersion"].startswith(f"{ISTIO_NETWORKING_GROUP}/"):
                for host in routed_hosts(doc):  # a short name: a Service of the namespace, on the suite's port
                    service = api.objects.get(f"/api/v1/namespaces/{ns}/services/{host}")
                    assert service is not None, f"{name}: no Service {host} in {ns}"
                    assert HTTPBIN_PORT in [p["port"] for p in service["spec"]["ports"]], host
        cluster.delete(docs, ns)
        assert [p for p in paths if p in api.objects] == []


def istio_kind(name: str) -> str | None:
    kinds = [d["kind"] for d in manifests.load(f"resilience/{name}")
             if d["apiVersion"].startswith(f"{ISTIO_NETWORKING_GROUP}/")]
    return kinds[0] if kinds else None


@pytest.mark.parametrize(("name", "kind"), [(n, istio_kind(n)) for n in RESILIENCE])
def test_without_istios_crds_a_traffic_policy_is_refused_naming_its_kind(
        api: FakeApi, tmp_path: Path, name: str, kind: str | None) -> None:
    seed_namespace(api, ISTIO_NAMESPACE)  # a cluster without Istio: no CRD of it installed
    api.deployments_roll_out = True
    target = cluster_target(api, tmp_path)
    target.up()
    docs = manifests.load(f"resilience/{name}")
    try:
        with target.namespace("bookinfo-r1", {}) as ns:
            if kind is None:  # flaky: built-in kinds only, which any cluster serves
                target.apply(docs, ns)
                assert all(object_path(api, d, ns) in api.objects for d in docs)
            else:
                with pytest.raises(ConformanceError) as refused:
                    target.apply(docs, ns)
                assert str(refused.value) == (f"the API server does not serve kind {kind} in apiVersion "
                                              f"{ISTIO_NETWORKING_GROUP}/v1 (is its CRD installed?)")
    finally:
        target.down()
    assert not [r for r in api.requests if r.path.startswith(f"/apis/{ISTIO_NETWORKING_GROUP}/v1/namespaces")]


def test_flakys_failing_endpoint_is_http_echo_pinned_by_digest_behind_the_service(
        cluster: ClusterTarget, api: FakeApi) -> None:
    docs = manifests.load("resilience/flaky.yaml")
    [echo] = [c for d in docs if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]
              if "/http-echo:" in c["image"]]
    # A tag can be moved to another image; the digest is the image's content.
    assert re.fullmatch(r"docker\.io/hashicorp/http-echo:1\.0\.0@sha256:[0-9a-f]{64}", echo["image"]), echo["image"]
    [service] = [d for d in docs if d["kind"] == "Service"]
    [port] = service["spec"]["ports"]
    with cluster.namespace("bookinfo-r1", {}) as ns:
        cluster.apply(docs, ns)
        cluster.wait_ready(ns)
        pods = [p for path, p in api.objects.items() if path.startswith(f"/api/v1/namespaces/{ns}/pods/")]
        # The Service's endpoints: its selector's pods, on its targetPort.
        endpoints = {p["metadata"]["labels"]["version"]: p for p in pods
                     if service["spec"]["selector"].items() <= p["metadata"]["labels"].items()}
        assert sorted(endpoints) == ["bad", "good"]
        for pod in endpoints.values():
            [container] = pod["spec"]["containers"]
            assert [p["containerPort"] for p in container["ports"]] == [port["targetPort"]]
        assert endpoints["bad"]["spec"]["containers"][0]["image"] == echo["image"]  # what the kubelet pulls
        assert port["port"] == HTTPBIN_PORT  # where the suite sends (flaky:8000)


# --- what the suite reads from the cluster's pods ------------------------------------------------


@dataclass
class Mesh:
    """curl and httpbin injected in one namespace of the fake API; exec into their pods through `exec`."""

    target: ClusterTarget
    api: FakeApi
    namespace: str
    exec: PodExec

    def pod(self, app: str) -> str:
        [pod] = [p for p in self.target.pods(self.namespace) if p.labels.get("app") == app]
        return pod.name

    def client_counter(self, stat: str, service: str = "httpbin") -> int:
        """As suites/test_resilience.py client_counter reads curl's proxy."""
        stats = envoy_stats.parse(self.target.proxy_stats("curl", self.namespace))
        fqdn = f"{service}.{self.namespace}.svc.cluster.local"
        return envoy_stats.total(stats, envoy_stats.outbound_cluster(HTTPBIN_PORT, fqdn, stat))

    def server_requests(self) -> int:
        """As suites/test_resilience.py server_requests reads httpbin's proxy."""
        stats = envoy_stats.parse(self.target.proxy_stats("httpbin", self.namespace))
        return envoy_stats.total(stats, envoy_stats.inbound_http(HTTPBIN_TARGET_PORT, "downstream_rq_total"))


@pytest.fixture
def mesh(cluster: ClusterTarget, api: FakeApi, ca: MeshCA, injector: Injector,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Mesh]:
    pod_exec = PodExec(api)
    monkeypatch.setattr(kube_module, "stream", pod_exec)
    with injected_namespace(cluster, api, ca.root_pem, injector.address, "bookinfo-r1",
                            "clients/curl.yaml", "clients/httpbin.yaml") as ns:
        yield Mesh(cluster, api, ns, pod_exec)


# The counters the suite reads from curl's proxy, of the outbound cluster of which Service.
CLIENT_COUNTERS = [("upstream_rq_pending_overflow", "httpbin"), ("upstream_rq_retry", "httpbin"),
                   ("outlier_detection.ejections_enforced_total", "flaky")]
OVERFLOW, RETRIES, EJECTIONS = 18, 7, 3


@pytest.mark.parametrize(("stat", "service"), CLIENT_COUNTERS)
def test_curls_counter_is_read_by_istios_name_and_no_near_miss_adds_to_it(mesh: Mesh, stat: str, service: str) -> None:
    ns = mesh.namespace
    text = client_proxy_stats(ns, OVERFLOW, RETRIES, EJECTIONS)
    expected = {"upstream_rq_pending_overflow": OVERFLOW, "upstream_rq_retry": RETRIES}.get(stat, EJECTIONS)
    assert f"\ncluster.outbound|{HTTPBIN_PORT}||{service}.{ns}.svc.cluster.local;.{stat}: {expected}\n" in text
    mesh.exec.answers[PILOT_AGENT_STATS] = [text, client_proxy_stats(ns, OVERFLOW, RETRIES, EJECTIONS, omit=stat)]
    assert mesh.client_counter(stat, service) == expected
    assert mesh.client_counter(stat, service) == 0  # without its own line, the near misses count nothing
    assert mesh.exec.calls == [(mesh.pod("curl"), ns, PROXY_CONTAINER, PILOT_AGENT_STATS[:2])] * 2


def inclusion_regexps(manifest: str) -> list[str]:
    """The stats a pod's proxy keeps beside Istio's required ones: its proxy.istio.io/config's
    proxyStatsMatcher (istio/istio pkg/bootstrap/config.go)."""
    [deployment] = [d for d in manifests.load(manifest) if d["kind"] == "Deployment"]
    config = yaml.safe_load(deployment["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"])
    return config["proxyStatsMatcher"]["inclusionRegexps"]


# Istio's own inclusion prefixes (istio/istio pkg/bootstrap/config.go
# requiredEnvoyStatsMatcherInclusionPrefixes): none of them keeps what the suite reads.
REQUIRED_PREFIXES = ("cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm")
READ_BY_THE_SUITE = [
    *[("clients/curl.yaml", f"cluster.outbound|{HTTPBIN_PORT}||{service}.bookinfo-r1.svc.cluster.local;.{stat}")
      for stat, service in CLIENT_COUNTERS],
    ("clients/httpbin.yaml", f"http.inbound_0.0.0.0_{HTTPBIN_TARGET_PORT};.downstream_rq_total"),
]


@pytest.mark.parametrize(("manifest", "stat"), READ_BY_THE_SUITE)
def test_each_counter_the_suite_reads_is_kept_by_its_pods_stats_matcher(manifest: str, stat: str) -> None:
    assert not stat.startswith(REQUIRED_PREFIXES)
    # Each regexp must match the whole name (Envoy's safe_regex matcher; istio/istio
    # tools/packaging/common/envoy_bootstrap.json).
    assert [r for r in inclusion_regexps(manifest) if re.fullmatch(r, stat)], f"{manifest} drops {stat}"


@pytest.mark.parametrize(("received", "agree"), [(20 + 5, True), (20 + 6, False)])
def test_curls_retries_are_checked_against_the_attempts_httpbins_proxy_received(
        mesh: Mesh, received: int, agree: bool) -> None:
    ns = mesh.namespace
    [port] = mesh.api.objects[f"/api/v1/namespaces/{ns}/services/httpbin"]["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (HTTPBIN_PORT, HTTPBIN_TARGET_PORT)  # what names the inbound manager
    # In the suite's order: curl's retries, httpbin's requests; 20 requests; again.
    mesh.exec.answers[PILOT_AGENT_STATS] = [client_proxy_stats(ns, 0, 11, 0), server_proxy_stats(31),
                                            client_proxy_stats(ns, 0, 16, 0), server_proxy_stats(31 + received)]
    before = (mesh.client_counter("upstream_rq_retry"), mesh.server_requests())
    retries, attempts = mesh.client_counter("upstream_rq_retry") - before[0], mesh.server_requests() - before[1]
    assert (retries, attempts) == (5, received)
    verdict = retried(20, retries, attempts)
    assert verdict.ok == agree, verdict.message
    assert [(pod, container) for pod, _, container, _ in mesh.exec.calls] == \
        [(mesh.pod("curl"), PROXY_CONTAINER), (mesh.pod("httpbin"), PROXY_CONTAINER)] * 2


HALF = LOAD // 2  # the requests the stand-in refuses


@pytest.mark.parametrize(("marked", "counted", "message"), [
    (True, HALF, f"{HALF} of {LOAD} replies 503 with {OVERLOADED}: true, upstream_rq_pending_overflow +{HALF}, "
                 "the others 200"),
    (True, HALF + 1, f"the replies and the proxy's counter disagree: {HALF} of {LOAD} replies 503 with "
                     f"{OVERLOADED}: true, upstream_rq_pending_overflow +{HALF + 1}"),
    # An upstream's own 503 is no overflow, and the proxy did not count it as one.
    (False, 0, f"the circuit breaker never tripped: 0 of {LOAD} replies 503 with {OVERLOADED}: true, "
               "upstream_rq_pending_overflow +0"),
])
def test_overflow_replies_from_the_batch_script_are_counted_against_curls_counter(
        mesh: Mesh, marked: bool, counted: int, message: str) -> None:
    ns = mesh.namespace
    with RefusingSidecar(marked) as sidecar:
        mesh.exec.answers[PILOT_AGENT_STATS] = [client_proxy_stats(ns, 4, 0, 0)]
        before = mesh.client_counter("upstream_rq_pending_overflow")
        batch = mesh.target.client("curl", ns).send(f"{sidecar.url}{SLOW}", LOAD, CONCURRENCY)
        mesh.exec.answers[PILOT_AGENT_STATS] = [client_proxy_stats(ns, 4 + counted, 0, 0)]
        load = Overflow(batch, mesh.client_counter("upstream_rq_pending_overflow") - before)
    assert sidecar.refused == HALF and len(batch) == LOAD
    # Status, header and body as curl dumped them in the pod: Envoy's local reply, marked or not.
    assert {(r.headers.get(OVERLOADED), r.body) for r in batch if r.status == 503} == \
        {("true" if marked else None, OVERFLOW_BODY)}
    assert [overflowed(r) for r in batch].count(True) == (HALF if marked else 0)
    verdict = circuit_broken(load)
    assert verdict.ok == (marked and counted == sidecar.refused), verdict.message
    assert verdict.message.startswith(message), verdict.message
    if not marked:
        assert load.others == {"503": HALF}
    # One exec of the batch script into curl's own container, between the two reads of its proxy.
    pod = mesh.pod("curl")
    assert mesh.exec.calls == [(pod, ns, PROXY_CONTAINER, PILOT_AGENT_STATS[:2]), (pod, ns, "curl", ("sh", "-c")),
                               (pod, ns, PROXY_CONTAINER, PILOT_AGENT_STATS[:2])]
