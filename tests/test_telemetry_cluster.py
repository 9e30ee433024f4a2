"""MESH-TELEMETRY on a cluster, against the fake API server (tests/fakeapi.py): the telemetry
manifest on the API server, which features the kubeconfig target supports with which addons ready,
and what the suite reads: Istio's standard metrics from a Prometheus that answers its HTTP API,
once it has scraped every pod after the traffic by its own clock (conformance/probes/prometheus.py),
Kiali's workload graph, both through the fake API's port-forward to stand-ins for the addons' pods
(tests/telemetry_builders.py), and curl's subset counters through pilot-agent.
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from conformance import manifests
from conformance.errors import ConformanceError
from conformance.fixtures.mesh import BOOKINFO_MANIFESTS
from conformance.names import ISTIO_NAMESPACE, ISTIO_NETWORKING_GROUP, PROXY_CONTAINER
from conformance.probes import envoy_stats
from conformance.targets import kube as kube_module
from conformance.targets.cluster import ClusterTarget
from conformance.targets.existing import ExistingClusterProvisioner
from conformance.targets.local.admission.injector import Injector
from conformance.targets.local.xds.secrets import MeshCA
from conformance.verdicts.telemetry import GRAPH_EDGES, counters_match, graph_has
from tests.cluster_builders import (
    PodExec,
    cluster_target,
    injected_namespace,
    object_path,
    running_cluster,
    seed_namespace,
)
from tests.release_builders import ISTIO_CRDS, install_crds
from tests.existing_builders import GATEWAY, ISTIOD, ISTIOD_PATH, kube_config, service_path, settings
from tests.fakeapi import FakeApi
from tests.telemetry_builders import Kiali, addons, kiali_graph, seed_addon, subset_stats

TELEMETRY = sorted(p.name for p in (manifests.manifests_dir() / "telemetry").glob("*.yaml"))
DESTINATION_RULES = "istio/traffic/destination-rule-all.yaml"  # what the suite applies with them
VS_CRD = "virtualservices.networking.istio.io"
NS, OTHER = "bookinfo-r1", "bookinfo-r1-gw1"  # the run's namespace, and a parallel worker's


@pytest.fixture
def cluster(api: FakeApi, tmp_path: Path) -> Iterator[ClusterTarget]:
    with running_cluster(api, tmp_path, ISTIO_NAMESPACE) as target:
        yield target


# --- the manifest on the API server --------------------------------------------------------------


@pytest.mark.parametrize("name", TELEMETRY)
def test_each_telemetry_route_is_stored_as_written_to_a_subset_destination_rule_all_defines(
        cluster: ClusterTarget, api: FakeApi, name: str) -> None:
    docs = manifests.load(f"telemetry/{name}")
    with cluster.namespace(NS, {}) as ns:
        cluster.apply([d for m in (*BOOKINFO_MANIFESTS, DESTINATION_RULES) for d in manifests.load(m)], ns)
        cluster.apply(docs, ns)
        for doc in docs:
            path = object_path(api, doc, ns)
            assert api.objects[path]["spec"] == json.loads(json.dumps(doc["spec"])), path  # the schema pruned nothing
            for rule in doc["spec"]["http"]:
                for route in rule["route"]:
                    host, subset = route["destination"]["host"], route["destination"].get("subset")
                    assert f"/api/v1/namespaces/{ns}/services/{host}" in api.objects, host
                    rules = [d for d in api.objects.values() if d.get("kind") == "DestinationRule"
                             and d["metadata"]["namespace"] == ns and d["spec"]["host"] == host]
                    assert subset in [s["name"] for r in rules for s in r["spec"].get("subsets", [])], (host, subset)


@pytest.mark.parametrize("name", TELEMETRY)
def test_without_the_virtualservice_crd_a_telemetry_route_is_refused_naming_its_kind(
        api: FakeApi, tmp_path: Path, name: str) -> None:
    install_crds(api, *ISTIO_CRDS)
    assert httpx.delete(f"{api.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{VS_CRD}").status_code == 200
    seed_namespace(api, ISTIO_NAMESPACE)
    target = cluster_target(api, tmp_path)
    target.up()
    try:
        with target.namespace(NS, {}) as ns:
            target.apply(manifests.load(DESTINATION_RULES), ns)  # its kind is still served
            with pytest.raises(ConformanceError) as refused:
                target.apply(manifests.load(f"telemetry/{name}"), ns)
            assert str(refused.value) == (f"the API server does not serve kind VirtualService in apiVersion "
                                          f"{ISTIO_NETWORKING_GROUP}/v1 (is its CRD installed?)")
    finally:
        target.down()
    assert not [r for r in api.requests if "/virtualservices/" in r.path]


# --- which features the kubeconfig target supports -------------------------------------------------


def missing(addon: str) -> str:
    return (f"no ready {addon} pod in istio-system (app.kubernetes.io/name={addon}): meshconf installs Istio's "
            f"{addon} addon on kind and with --install-mesh; elsewhere apply samples/addons/{addon}.yaml of the release")


@pytest.mark.parametrize(("prometheus", "kiali", "metrics", "graph"), [
    ("ready", "ready", None, None),
    ("ready", "not ready", None, missing("kiali")),
    ("ready", "absent", None, missing("kiali")),
    ("not ready", "ready", missing("prometheus"), missing("prometheus")),  # Kiali draws from Prometheus
    ("absent", "absent", missing("prometheus"), missing("prometheus")),
    # An older addon's pod, labelled app=prometheus only: not the one meshconf reads.
    ("labelled app only", "ready", missing("prometheus"), missing("prometheus")),
])
def test_the_kubeconfig_target_supports_the_telemetry_its_ready_addons_allow(
        api: FakeApi, tmp_path: Path, prometheus: str, kiali: str, metrics: str | None, graph: str | None) -> None:
    api.objects[ISTIOD_PATH] = ISTIOD
    api.objects[service_path(GATEWAY)] = GATEWAY
    for addon, state in (("prometheus", prometheus), ("kiali", kiali)):
        if state != "absent":
            seed_addon(api, addon, ready=state != "not ready",
                       labels={"app": addon} if state == "labelled app only" else None)
    target = ClusterTarget(settings(), ExistingClusterProvisioner(settings(), kubeconfig=kube_config(tmp_path, api)))
    target.up()
    try:
        assert (target.unsupported_reason("StandardMetrics"), target.unsupported_reason("ServiceGraph")) == (metrics, graph)
        assert (target.supports("StandardMetrics"), target.supports("ServiceGraph")) == (metrics is None, graph is None)
        assert target.supports("ProxyStats")  # read from the proxies, not from an addon
    finally:
        target.down()


# --- Kiali's graph, through the port-forward -----------------------------------------------------

CALLS = [("curl", "productpage-v1"), ("productpage-v1", "details-v1"), *GRAPH_EDGES]


@pytest.mark.parametrize(("calls", "shown"), [(CALLS, True), ([c for c in CALLS if c[1] != "reviews-v3"], False)])
def test_kialis_workload_graph_shows_the_edges_the_suite_waits_for(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch,
        calls: list[tuple[str, str]], shown: bool) -> None:
    with addons(api, monkeypatch) as fake:
        fake.kiali.graphs = {NS: kiali_graph(NS, calls), OTHER: kiali_graph(OTHER, CALLS)}
        graph = cluster.kiali_graph(NS, 42)
    assert fake.kiali.asked == [{"namespaces": [NS], "graphType": ["workload"], "duration": ["42s"]}]
    assert {(ns, port) for _, ns, port in fake.forwarded} == {(ISTIO_NAMESPACE, 20001)}
    verdict = graph_has(graph, GRAPH_EDGES)
    assert verdict.ok == shown, verdict.message
    if not shown:
        assert verdict.message.startswith("expected Kiali's graph to show productpage-v1 -> reviews-v3; its edges: "
                                          "curl -> productpage-v1, productpage-v1 -> details-v1"), verdict.message


@pytest.mark.parametrize(("duration", "error"), [
    (None, "the stand-in draws a graph only over an explicit duration, not Kiali's 10m default"),
    ("42", "Invalid duration [42]"),
    ("4.5s", "Invalid duration [4.5s]"),
    ("s", "Invalid duration [s]"),
])
def test_the_kiali_stand_in_refuses_a_graph_without_a_valid_duration(duration: str | None, error: str) -> None:
    kiali = Kiali({NS: kiali_graph(NS, CALLS)})
    query = {"namespaces": [NS], "graphType": ["workload"], **({"duration": [duration]} if duration else {})}
    assert kiali.answer("/kiali/api/namespaces/graph", query) == (400, {"error": error})
    status, body = kiali.answer("/kiali/api/namespaces/graph", {**query, "duration": ["1m30s"]})
    assert (status, body["duration"], len(body["elements"]["edges"])) == (200, 90, len(CALLS))


def test_a_graph_kiali_refuses_is_an_error_with_its_reason(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    with addons(api, monkeypatch) as fake:
        with pytest.raises(ConformanceError) as refused:
            cluster.kiali_graph(NS, -5)
    assert str(refused.value) == f"Kiali's graph of '{NS}' has no elements: {{'error': 'Invalid duration [-5s]'}}"
    assert fake.kiali.asked[0]["duration"] == ["-5s"]


# --- curl's subset counters (ProxyStats), through pilot-agent ----------------------------------------


@pytest.fixture
def curl(cluster: ClusterTarget, api: FakeApi, ca: MeshCA, injector: Injector,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[PodExec]:
    pod_exec = PodExec(api)
    monkeypatch.setattr(kube_module, "stream", pod_exec)
    with injected_namespace(cluster, api, ca.root_pem, injector.address, NS, "clients/curl.yaml"):
        yield pod_exec


@pytest.mark.parametrize(("v2_counted", "agree"), [(20, True), (21, False)])
def test_curls_subset_counters_are_read_by_istios_names_against_the_replies(
        cluster: ClusterTarget, curl: PodExec, v2_counted: int, agree: bool) -> None:
    argv = ("pilot-agent", "request", "GET", "stats")
    curl.answers[argv] = [subset_stats(NS, {"v1": 300, "v2": 100, "v3": 9}),
                          subset_stats(NS, {"v1": 380, "v2": 100 + v2_counted, "v3": 9})]

    def subset_counters() -> dict[str, int]:  # as suites/test_telemetry.py subset_counters reads them
        stats = envoy_stats.parse(cluster.proxy_stats("curl", NS))
        fqdn = f"reviews.{NS}.svc.cluster.local"
        return {v: envoy_stats.total(stats, envoy_stats.outbound_cluster(9080, fqdn, "upstream_rq_2xx", v))
                for v in ("v1", "v2")}

    before, after = subset_counters(), subset_counters()
    assert before == {"v1": 300, "v2": 100}
    verdict = counters_match({"v1": 80, "v2": 20}, {v: after[v] - before[v] for v in before}, "upstream_rq_2xx")
    assert verdict.ok == agree, verdict.message
    assert all(call[2] == PROXY_CONTAINER for call in curl.calls) and len(curl.calls) == 2
    # What keeps the counter in curl's proxy, a regexp matching its whole name (Istio leaves it out by
    # default: istio/istio pkg/bootstrap/config.go).
    [deployment] = [d for d in manifests.load("clients/curl.yaml") if d["kind"] == "Deployment"]
    config = yaml.safe_load(deployment["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"])
    name = f"cluster.outbound|9080|v1|reviews.{NS}.svc.cluster.local;.upstream_rq_2xx"
    assert [r for r in config["proxyStatsMatcher"]["inclusionRegexps"] if re.fullmatch(r, name)]
