"""MESH-TELEMETRY's verdicts on Prometheus series, proxy counters and Kiali's graph: exact counts
pass, a lost, doubled or misattributed request fails with what was seen."""

from conformance import manifests
from conformance.verdicts.telemetry import (BOOKINFO_ACCOUNTS, Edge, buckets, counted, counters_match, graph_has,
                                           istio_edge)

SOURCE = {"reporter": "source", "source_workload": "curl", "destination_workload": "reviews-v2",
          "response_code": "200", "connection_security_policy": "unknown"}
EDGE = Edge("source curl -> reviews-v2", {"reporter": "source", "source_workload": "curl",
                                          "destination_workload": "reviews-v2"}, 20)


def series(labels: dict[str, str], value: float) -> dict:
    return {"metric": {"__name__": "istio_requests_total", **labels}, "value": [1700000000.0, str(value)]}


def test_an_exact_increase_passes_and_counts_from_an_absent_series() -> None:
    after = [series(SOURCE, 20)]
    verdict = counted("istio_requests_total", [], after, [EDGE])
    assert verdict.ok and "source curl -> reviews-v2 +20 (sent 20)" in verdict.message


def test_increases_are_summed_over_series_that_differ_in_other_labels() -> None:
    before = [series(SOURCE, 5)]
    after = [series(SOURCE, 17), series({**SOURCE, "response_flags": "-", "destination_version": "v2"}, 8)]
    assert counted("m", before, after, [EDGE]).ok


def test_an_undercount_is_short_and_fails() -> None:
    after = [series(SOURCE, 18)]
    verdict = counted("istio_requests_total", [], after, [EDGE])
    assert not verdict.ok and "1 did not: source curl -> reviews-v2 +18 (sent 20)" in verdict.message


def test_an_overcount_fails() -> None:
    verdict = counted("m", [], [series(SOURCE, 21)], [EDGE])
    assert not verdict.ok and "+21 (sent 20)" in verdict.message


def test_swapped_labels_say_where_the_counts_went() -> None:
    swapped = {**SOURCE, "source_workload": "reviews-v2", "destination_workload": "curl"}
    verdict = counted("m", [], [series(swapped, 20)], [EDGE])
    assert not verdict.ok and "source curl -> reviews-v2 +0 (sent 20)" in verdict.message
    assert "{reporter=source, source_workload=reviews-v2, destination_workload=curl" in verdict.message
    assert "} +20" in verdict.message
    assert "no series of it increased" in counted("m", [], [], [EDGE]).message


def test_a_histogram_needs_buckets_up_to_infinity() -> None:
    bucket = [series({**SOURCE, "le": le}, 3) for le in ("0.5", "1", "+Inf")]
    assert buckets(bucket, EDGE).ok
    verdict = buckets(bucket[:2], EDGE)
    assert not verdict.ok and "found ['0.5', '1']" in verdict.message


def test_proxy_counters_must_equal_the_replies_per_version() -> None:
    assert counters_match({"v1": 76, "v2": 24}, {"v1": 76, "v2": 24}, "upstream_rq_2xx").ok
    verdict = counters_match({"v1": 76, "v2": 24}, {"v1": 75, "v2": 24}, "upstream_rq_2xx")
    assert not verdict.ok and "v1: saw 76, upstream_rq_2xx +75" in verdict.message
    assert not counters_match({}, {}, "upstream_rq_2xx").ok  # nothing seen proves nothing


def graph(*edges: tuple[str, str]) -> dict:
    names = sorted({n for e in edges for n in e})
    nodes = [{"data": {"id": f"id-{n}", "workload": n}} for n in names]
    return {"nodes": nodes, "edges": [{"data": {"source": f"id-{s}", "target": f"id-{t}"}} for s, t in edges]}


def test_the_graph_must_show_every_edge() -> None:
    wanted = [("productpage-v1", "reviews-v2"), ("reviews-v2", "ratings-v1")]
    assert graph_has(graph(*wanted), wanted).ok
    verdict = graph_has(graph(wanted[0]), wanted)
    assert not verdict.ok and "to show reviews-v2 -> ratings-v1; its edges: productpage-v1 -> reviews-v2" in verdict.message


def test_the_accounts_are_those_the_manifests_run_each_workload_as() -> None:
    deployments = [d for m in ("bookinfo/bookinfo.yaml", "clients/curl.yaml") for d in manifests.load(m)
                   if d["kind"] == "Deployment"]
    accounts = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["serviceAccountName"] for d in deployments}
    assert accounts == BOOKINFO_ACCOUNTS


def test_an_edge_is_istios_label_set_for_a_bookinfo_call() -> None:
    source = istio_edge("ns", "source", "productpage-v1", "reviews-v2", 5)
    assert source.labels["destination_service"] == "reviews.ns.svc.cluster.local"
    assert (source.labels["destination_app"], source.labels["destination_version"]) == ("reviews", "v2")
    assert source.labels["connection_security_policy"] == "unknown" and "source_principal" not in source.labels
    server = istio_edge("ns", "destination", "productpage-v1", "reviews-v2", 5)
    assert server.labels["connection_security_policy"] == "mutual_tls"
    assert server.labels["source_principal"] == "spiffe://cluster.local/ns/ns/sa/bookinfo-productpage"
