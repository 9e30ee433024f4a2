"""Outcome aggregation, the conformance report, and the reply classifier."""

import json

from conformance import features
from conformance.probes.classify import served_by, version_of
from conformance.report.conformance_report import build
from conformance.report.results import Outcome, ResultBook, Record, aggregate, overall_result
from conformance.targets.base import Batch, Reply
from conformance.verdicts import all_header, all_status, only_version

ROUTE = features.get("RouteToVersion")
INGRESS = features.get("IngressGateway")


def rec(outcome: Outcome, reason: str = "", feature: features.Feature = ROUTE, nodeid: str = "t") -> Record:
    return Record(nodeid, feature, outcome, reason)


def test_worst_outcome_of_a_test_wins_and_keeps_its_reason() -> None:
    book = ResultBook(selected=[ROUTE])
    book.record(rec(Outcome.PASSED))
    book.record(rec(Outcome.FAILED, "boom"))
    book.record(rec(Outcome.PASSED))  # teardown after a failed call
    assert [(r.outcome, r.reason) for r in book.records] == [(Outcome.FAILED, "boom")]


def test_feature_aggregation() -> None:
    assert aggregate([rec(Outcome.PASSED, "a"), rec(Outcome.PASSED, "b")]) == (Outcome.PASSED, "a; b")
    assert aggregate([rec(Outcome.PASSED), rec(Outcome.FAILED, "x")])[0] is Outcome.FAILED
    assert aggregate([rec(Outcome.NOT_SUPPORTED, "n/a")]) == (Outcome.NOT_SUPPORTED, "n/a")
    assert aggregate([rec(Outcome.NOT_SUPPORTED), rec(Outcome.SKIPPED, "s")])[0] is Outcome.SKIPPED
    assert aggregate([]) == (Outcome.SKIPPED, "no test ran")


def test_report_results() -> None:
    book = ResultBook(selected=[ROUTE, INGRESS])
    book.record(rec(Outcome.PASSED, "ok", ROUTE, "a"))
    book.record(rec(Outcome.NOT_SUPPORTED, "no gateway", INGRESS, "b"))
    report = build(book)
    assert report["result"] == "success"  # an unsupported feature is not a failure, nor a pass
    ingress = next(p for p in report["profiles"] if p["name"] == "MESH-INGRESS")
    assert ingress["core"]["unsupportedFeatures"] == ["IngressGateway"]
    assert ingress["core"]["statistics"]["PASSED"] == 0
    book.record(rec(Outcome.FAILED, "wrong version", ROUTE, "a"))
    assert build(book)["result"] == "failure"
    book.interrupted = True
    assert overall_result(book) == "interrupted"


def test_partial_when_a_core_feature_ran_no_test() -> None:
    book = ResultBook(selected=[ROUTE])
    assert build(book)["result"] == "partial"


def test_classifier() -> None:
    assert served_by(json.dumps({"podname": "reviews-v2-abc-12345"})) == "reviews-v2-abc-12345"
    html = "<h4>Reviews served by:</h4>\n<u>reviews-v3-xyz-9</u>"
    assert served_by(html) == "reviews-v3-xyz-9"
    assert served_by("not json {") is None and served_by("{bad json") is None
    assert version_of("reviews-v3-xyz-9") == "v3" and version_of("curl-abc") is None


def batch(*replies: Reply) -> Batch:
    return Batch(url="http://reviews:9080/reviews/0", client="ns/curl", replies=replies)


def test_only_version_passes_and_fails_with_counts() -> None:
    v1 = Reply(200, {}, "", served_by="reviews-v1-a-b")
    v3 = Reply(200, {}, "", served_by="reviews-v3-a-b")
    assert only_version(batch(v1, v1), "v1").ok
    verdict = only_version(batch(v1, v3, Reply(0, {}, "", error="connection refused")), "v1")
    assert not verdict.ok
    assert "2 were not" in verdict.message and "'v3': 1" in verdict.message
    assert "connection refused: 1" in verdict.message
    assert not only_version(batch(), "v1").ok  # no evidence is no pass


def test_all_status_and_header() -> None:
    ok = Reply(200, {"server": "istio-envoy"}, "Simple Bookstore App")
    assert all_status(batch(ok, ok), 200, "Bookstore").ok
    bad = all_status(batch(ok, Reply(404, {}, "")), 200)
    assert not bad.ok and "1 were not" in bad.message and "first bad reply: status 404" in bad.message
    assert all_header(batch(ok), "server", "istio-envoy").ok
    assert not all_header(batch(ok, Reply(200, {"server": "nginx"}, "")), "server", "istio-envoy").ok
