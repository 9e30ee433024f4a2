"""MESH-TELEMETRY on a cluster, against the fake API server (tests/fakeapi.py): the telemetry
manifest on the API server, which features the kubeconfig target supports with which addons ready,
and what the suite reads: Istio's standard metrics from a Prometheus that answers its HTTP API,
once it has scraped every pod after the traffic by its own clock (conformance/probes/prometheus.py),
Kiali's workload graph, both through the fake API's port-forward to stand-ins for the addons' pods
(tests/telemetry_builders.py), and curl's subset counters through pilot-agent.
"""

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conformance import manifests
from conformance.errors import ConformanceError, NotConverged
from conformance.fixtures.mesh import BOOKINFO_MANIFESTS
from conformance.names import ISTIO_NAMESPACE, ISTIO_NETWORKING_GROUP, PROXY_CONTAINER
from conformance.probes import envoy_stats
from conformance.probes.prometheus import RECORDED_WITHIN, now, scraped_since, settled
from conformance.settings import Timeouts
from conformance.targets import kube as kube_module
from conformance.targets.cluster import ClusterTarget
from conformance.targets.existing import ExistingClusterProvisioner
from conformance.targets.local.admission.injector import Injector
from conformance.targets.local.xds.secrets import MeshCA
from conformance.verdicts.telemetry import (GRAPH_EDGES, Edge, buckets, counted, counters_match, graph_has,
                                           istio_edge)
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
from tests.telemetry_builders import (ISTIO_REQUEST_LABELS, Prometheus, Sample, addons, duration_buckets, kiali_graph,
                                      pod_name, request_series, seed_addon, subset_stats)

TELEMETRY = sorted(p.name for p in (manifests.manifests_dir() / "telemetry").glob("*.yaml"))
DESTINATION_RULES = "istio/traffic/destination-rule-all.yaml"  # what the suite applies with them
VS_CRD = "virtualservices.networking.istio.io"
REQUESTS, DURATION = "istio_requests_total", "istio_request_duration_milliseconds"
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


# --- Istio's standard metrics, from Prometheus through the port-forward -----------------------------


def edge(reporter: str, source: str, destination: str, count: int) -> Edge:
    return istio_edge(NS, reporter, source, destination, count)


def test_the_suites_edges_select_on_labels_istios_proxies_emit() -> None:
    keys = set(edge("destination", "curl", "reviews-v2", 1).labels)
    assert "destination_workload" in keys and "source_principal" in keys
    assert sorted(keys - ISTIO_REQUEST_LABELS) == []


def query(target: ClusterTarget, name: str) -> list[dict[str, Any]]:
    """As suites/test_telemetry.py metric() asks."""
    return target.prometheus_query(f'{name}{{destination_workload_namespace="{NS}"}}')


N, VIA = 20, 18  # requests from curl to reviews v2, and pages through productpage that called it
EDGES = [edge("source", "curl", "reviews-v2", N), edge("destination", "curl", "reviews-v2", N),
         edge("destination", "productpage-v1", "reviews-v2", VIA), edge("destination", "reviews-v2", "ratings-v1", N + VIA)]


def scraped(name: str, curl: int, productpage: int, ratings: int, failed: int) -> list[Any]:
    """What Prometheus holds of `name`: the suite's edges with these totals (productpage's absent
    while 0), beside series that must not count: `failed` 503s of curl's edge, the reporter that is
    not asked for, and the same edge in a parallel worker's namespace."""
    series = [request_series(name, NS, "source", "curl", "reviews-v2", curl),
              request_series(name, NS, "destination", "curl", "reviews-v2", curl),
              request_series(name, NS, "destination", "curl", "reviews-v2", failed, code="503"),
              request_series(name, NS, "source", "reviews-v2", "ratings-v1", ratings + 3),
              request_series(name, NS, "destination", "reviews-v2", "ratings-v1", ratings),
              request_series(name, OTHER, "destination", "curl", "reviews-v2", 100 + curl)]
    if productpage:
        series.append(request_series(name, NS, "destination", "productpage-v1", "reviews-v2", productpage))
    return series


# --- reading Prometheus once it has scraped every pod after the traffic ------------------------------

UP = f'timestamp(up{{namespace="{NS}"}})'  # as conformance/probes/prometheus.py asks when it scraped each pod
READ = f'{REQUESTS}{{destination_workload_namespace="{NS}"}}'
PODS = [pod_name(w) for w in ("curl", "details-v1", "reviews-v2", "ratings-v1")]  # as the suite lists them
CURL, DETAILS, REVIEWS_V2, RATINGS = PODS
WAIT = Timeouts(metrics=10.0, metrics_poll=0.01)  # ended by the scrapes a test plays, never by the timeout


def test_now_is_prometheuss_clock_not_this_machines(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    with addons(api, monkeypatch) as fake:
        clock = fake.prometheus.advance(0.25)
        read = now(cluster)
    assert read == clock and abs(read - time.time()) > 5 * 60  # minutes off, as a cluster's clock can be
    assert fake.prometheus.asked == ["vector(time())"]


def test_timestamp_of_up_is_each_pods_last_scrape_under_the_jobs_labels_without_the_metric_name(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    with addons(api, monkeypatch) as fake:
        scraped_at = fake.prometheus.advance(4.5)
        fake.prometheus.scrape(NS, CURL)
        clock = fake.prometheus.advance(10)
        [up] = cluster.prometheus_query(f'timestamp(up{{namespace="{NS}", pod="{CURL}"}})')
    assert up["value"] == [clock, str(scraped_at)]
    assert "__name__" not in up["metric"]
    assert {k: up["metric"][k] for k in ("job", "namespace", "pod")} == {"job": "kubernetes-pods", "namespace": NS,
                                                                        "pod": CURL}
    assert re.fullmatch(r"10\.244\.\d+\.\d+:15020", up["metric"]["instance"]), up["metric"]


def test_scraped_since_names_the_pods_not_scraped_since_and_one_prometheus_has_not_found(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    with addons(api, monkeypatch) as fake:
        prometheus = fake.prometheus
        since = prometheus.clock + 10
        prometheus.advance(15)
        prometheus.scrape(NS, CURL, at=since)  # at the moment itself: in time
        prometheus.scrape(NS, REVIEWS_V2, at=since - 0.001)
        prometheus.scrape(NS, RATINGS)
        for pod in PODS:  # a parallel worker's pods of the same names, details among them, just scraped
            prometheus.scrape(OTHER, pod)
        late = scraped_since(cluster, NS, PODS, since)  # details: no `up` series in NS at all
        prometheus.scrape(NS, REVIEWS_V2)
        prometheus.scrape(NS, DETAILS)
        caught_up = scraped_since(cluster, NS, PODS, since)
    assert late == f"2 of 4 pods not scraped since: {DETAILS}, {REVIEWS_V2}"
    assert caught_up is None
    assert prometheus.asked == [UP, UP]


def playing(prometheus: Prometheus, rounds: list[dict[str, list[Sample]]]) -> Callable[[str], None]:
    """Before each look at `up`, RECORDED_WITHIN / 2 passes and Prometheus scrapes the next round's pods,
    each holding then its series of those given."""
    def scrape(promql: str) -> None:
        if promql == UP and rounds:
            prometheus.advance(RECORDED_WITHIN / 2)
            for pod, series in rounds.pop(0).items():
                prometheus.scrape(NS, pod, series)
    return scrape


def test_settled_waits_until_the_last_pod_is_scraped_after_it_was_called_and_reads_the_metrics_then(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    short = scraped(REQUESTS, 5 + N - 1, VIA, 9 + N + VIA - 1, failed=3)  # before the last requests were recorded
    after = scraped(REQUESTS, 5 + N, VIA, 9 + N + VIA, failed=3)
    rounds = [{CURL: short, REVIEWS_V2: short, RATINGS: short},  # sooner than RECORDED_WITHIN: each too early
              {CURL: after, REVIEWS_V2: after, DETAILS: []},  # exactly RECORDED_WITHIN later; details found
              {},
              {RATINGS: after}]
    with addons(api, monkeypatch) as fake:
        fake.prometheus.samples = scraped(REQUESTS, 5, 0, 9, failed=2)  # curl, reviews and ratings, not details
        fake.prometheus.on_query = playing(fake.prometheus, rounds)
        read, took = settled(cluster, NS, PODS, [REQUESTS], WAIT)
    assert fake.prometheus.asked == ["vector(time())", UP, UP, UP, UP, READ]
    assert {frozenset(s["metric"].items()): float(s["value"][1]) for s in read[REQUESTS]} == {
        frozenset(s.labels.items()): s.value for s in after if s.labels["destination_workload_namespace"] == NS}
    assert 0 <= took < WAIT.metrics


def test_settled_gives_up_when_the_timeout_passes_naming_the_pods_still_not_scraped(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    with addons(api, monkeypatch) as fake:
        fake.prometheus.samples = scraped(REQUESTS, 5, 0, 9, failed=2)
        fake.prometheus.on_query = playing(fake.prometheus, [{}, {CURL: []}])
        with pytest.raises(NotConverged) as late:
            settled(cluster, NS, PODS, [REQUESTS], Timeouts(metrics=0.3, metrics_poll=0.02))
    assert str(late.value) == (f"Prometheus scrapes the pods of {NS} after the requests: not within 0.3s: "
                               f"3 of 4 pods not scraped since: {DETAILS}, {RATINGS}, {REVIEWS_V2}")
    assert fake.prometheus.asked[:3] == ["vector(time())", UP, UP] and READ not in fake.prometheus.asked


@pytest.mark.parametrize("major", [2, 3])
@pytest.mark.parametrize("last_counted", [N, N - 1, N + 1])
def test_increases_between_two_settled_readings_are_counted_exactly_per_edge(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch, major: int, last_counted: int) -> None:
    with addons(api, monkeypatch, major) as fake:
        earlier = fake.prometheus.samples = scraped(REQUESTS, 5, 0, 9, failed=2)  # a parallel worker's among them
        # Each settled(): one look too soon, then every pod of NS scraped in time.
        fake.prometheus.on_query = playing(fake.prometheus, [{}, {pod: earlier for pod in PODS}])
        before, _ = settled(cluster, NS, PODS, [REQUESTS], WAIT)
        later = scraped(REQUESTS, 5 + last_counted, VIA, 9 + N + VIA, failed=3)
        fake.prometheus.on_query = playing(fake.prometheus, [{}, {pod: later for pod in PODS}])
        after, _ = settled(cluster, NS, PODS, [REQUESTS], WAIT)
    assert fake.prometheus.asked == ["vector(time())", UP, UP, READ] * 2
    assert {pod for pod, _, _ in fake.forwarded} == {"prometheus-7d9f8c6b4-k2x7p"}
    assert {(ns, port) for _, ns, port in fake.forwarded} == {(ISTIO_NAMESPACE, 9090)}
    assert all(s["metric"]["destination_workload_namespace"] == NS for s in before[REQUESTS] + after[REQUESTS])
    verdict = counted(REQUESTS, before[REQUESTS], after[REQUESTS], EDGES)
    assert verdict.ok == (last_counted == N), verdict.message
    curls = (f"source curl -> reviews-v2 +{last_counted} (sent {N}); destination curl -> reviews-v2 +{last_counted} "
             f"(sent {N}); ")
    others = (f"destination productpage-v1 -> reviews-v2 +{VIA} (sent {VIA}); destination reviews-v2 -> ratings-v1 "
              f"+{N + VIA} (sent {N + VIA})")
    if last_counted == N:
        assert verdict.message == f"{REQUESTS}: {curls}{others}"
    else:  # one short or one over on both of curl's edges
        assert verdict.message.startswith(f"{REQUESTS}: expected each edge to increase by exactly its requests; "
                                          f"2 did not: {curls}{others}; increased: "), verdict.message


@pytest.mark.parametrize("major", [2, 3])
def test_the_duration_histogram_has_its_buckets_in_either_prometheus(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch, major: int) -> None:
    name = f"{DURATION}_bucket"
    with addons(api, monkeypatch, major) as fake:
        fake.prometheus.samples = duration_buckets(NS, "destination", "curl", "reviews-v2", N)
        series = query(cluster, name)
        fake.prometheus.samples = [s for s in fake.prometheus.samples if s.labels["le"] != "+Inf"]
        without_inf = query(cluster, name)
    assert ("1.0" if major == 3 else "1") in {s["metric"]["le"] for s in series}
    verdict = buckets(series, EDGES[1])
    assert verdict.ok and verdict.message == "destination curl -> reviews-v2: 20 buckets", verdict.message
    assert not buckets(without_inf, EDGES[1]).ok


@pytest.mark.parametrize(("promql", "refusal", "error"), [
    # Prometheus' parser (its HTTP API answers 400 bad_data).
    (f'{REQUESTS}{{destination_workload_namespace="{NS}"', None, "bad_data: invalid parameter \"query\": 1:1: "
                                                                 "parse error: unsupported or malformed expression"),
    # Valid PromQL the stand-in does not evaluate: refused the same way rather than answered wrong.
    (f"timestamp(rate({REQUESTS}[5m]))", None, "bad_data: invalid parameter \"query\": 1:1: parse error: unsupported"),
    # Too much for the server (422 execution).
    (f'{REQUESTS}{{destination_workload_namespace="{NS}"}}',
     (422, "execution", "query processing would load too many samples into memory in query execution"),
     "execution: query processing would load too many samples into memory in query execution"),
])
def test_a_query_prometheus_refuses_is_an_error_naming_the_query(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch, promql: str,
        refusal: tuple[int, str, str] | None, error: str) -> None:
    with addons(api, monkeypatch) as fake:
        fake.prometheus.refusal = refusal
        with pytest.raises(ConformanceError) as refused:
            cluster.prometheus_query(promql)
    assert str(refused.value).startswith(f"Prometheus refused the query {promql!r}: {error}"), str(refused.value)
    assert fake.prometheus.asked == [promql]


# --- Kiali's graph, through the port-forward -----------------------------------------------------

CALLS = [("curl", "productpage-v1"), ("productpage-v1", "details-v1"), *GRAPH_EDGES]


@pytest.mark.parametrize(("calls", "shown"), [(CALLS, True), ([c for c in CALLS if c[1] != "reviews-v3"], False)])
def test_kialis_workload_graph_shows_the_edges_the_suite_waits_for(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch,
        calls: list[tuple[str, str]], shown: bool) -> None:
    with addons(api, monkeypatch) as fake:
        fake.kiali.graphs = {NS: kiali_graph(NS, calls), OTHER: kiali_graph(OTHER, CALLS)}
        graph = cluster.kiali_graph(NS)
    assert fake.kiali.asked == [{"namespaces": [NS], "graphType": ["workload"]}]
    assert {(ns, port) for _, ns, port in fake.forwarded} == {(ISTIO_NAMESPACE, 20001)}
    verdict = graph_has(graph, GRAPH_EDGES)
    assert verdict.ok == shown, verdict.message
    if not shown:
        assert verdict.message.startswith("expected Kiali's graph to show productpage-v1 -> reviews-v3; its edges: "
                                          "curl -> productpage-v1, productpage-v1 -> details-v1"), verdict.message


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
