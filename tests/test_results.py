"""Outcome aggregation, the conformance report, and the reply classifier."""

import json

from conformance import features
from conformance.probes.classify import served_by, version_of
from conformance.report.conformance_report import build
from conformance.report.results import INTERRUPTED, Outcome, Record, ResultBook, aggregate, overall_result
from conformance.targets.base import Batch, Reply
from conformance.verdicts import all_header, all_status, only_version

ROUTE = features.get("RouteToVersion")
INGRESS = features.get("IngressGateway")


def rec(outcome: Outcome, reason: str = "", feature: features.Feature = ROUTE, nodeid: str = "t") -> Record:
    return Record(nodeid, feature, outcome, reason)


def test_worst_outcome_of_a_test_wins_and_keeps_its_reason() -> None:
    book = ResultBook(selected=[ROUTE])
    book.record("t", ROUTE, "setup", Outcome.PASSED)
    book.record("t", ROUTE, "call", Outcome.FAILED, "boom")
    book.record("t", ROUTE, "teardown", Outcome.PASSED)
    assert [(r.outcome, r.reason) for r in book.records] == [(Outcome.FAILED, "boom")]


def test_only_the_call_phase_passes_a_test() -> None:
    book = ResultBook(selected=[ROUTE])
    book.record("t", ROUTE, "setup", Outcome.PASSED, duration=1.0)  # then Ctrl-C: no call report
    assert [(r.outcome, r.reason) for r in book.records] == [(Outcome.SKIPPED, INTERRUPTED)]
    book.interrupted = True
    assert book.feature_outcome(ROUTE) == (Outcome.SKIPPED, INTERRUPTED)
    assert overall_result(book) == "interrupted"
    book.record("t", ROUTE, "call", Outcome.PASSED, "held")
    assert book.feature_outcome(ROUTE) == (Outcome.PASSED, "held")


def test_an_error_in_setup_or_teardown_fails_the_test() -> None:
    book = ResultBook(selected=[ROUTE, INGRESS])
    book.record("a", ROUTE, "setup", Outcome.FAILED, "error in setup: no mesh")
    book.record("a", ROUTE, "teardown", Outcome.PASSED)
    book.record("b", INGRESS, "setup", Outcome.PASSED)
    book.record("b", INGRESS, "call", Outcome.PASSED, "held")
    book.record("b", INGRESS, "teardown", Outcome.FAILED, "error in teardown: delete refused")
    assert book.feature_outcome(ROUTE) == (Outcome.FAILED, "error in setup: no mesh")
    assert book.feature_outcome(INGRESS) == (Outcome.FAILED, "error in teardown: delete refused")


def test_a_skip_in_setup_decides_the_test() -> None:
    book = ResultBook(selected=[INGRESS])
    book.record("b", INGRESS, "setup", Outcome.NOT_SUPPORTED, "IngressGateway on target x")
    book.record("b", INGRESS, "teardown", Outcome.PASSED)
    assert book.feature_outcome(INGRESS) == (Outcome.NOT_SUPPORTED, "IngressGateway on target x")


def test_feature_aggregation() -> None:
    assert aggregate([rec(Outcome.PASSED, "a"), rec(Outcome.PASSED, "b")]) == (Outcome.PASSED, "a; b")
    assert aggregate([rec(Outcome.PASSED), rec(Outcome.FAILED, "x")])[0] is Outcome.FAILED
    assert aggregate([rec(Outcome.NOT_SUPPORTED, "n/a")]) == (Outcome.NOT_SUPPORTED, "n/a")
    assert aggregate([rec(Outcome.NOT_SUPPORTED), rec(Outcome.SKIPPED, "s")])[0] is Outcome.SKIPPED
    assert aggregate([]) == (Outcome.SKIPPED, "no test ran")


def test_report_results() -> None:
    book = ResultBook(selected=[ROUTE, INGRESS])
    book.record("a", ROUTE, "call", Outcome.PASSED, "ok")
    book.record("b", INGRESS, "setup", Outcome.NOT_SUPPORTED, "no gateway")
    report = build(book)
    assert report["result"] == "success"  # an unsupported feature is not a failure, nor a pass
    ingress = next(p for p in report["profiles"] if p["name"] == "MESH-INGRESS")
    assert ingress["core"]["unsupportedFeatures"] == ["IngressGateway"]
    assert ingress["core"]["statistics"]["PASSED"] == 0
    book.record("a", ROUTE, "teardown", Outcome.FAILED, "wrong version")
    assert build(book)["result"] == "failure"
    book.interrupted = True
    assert overall_result(book) == "interrupted"


def test_report_names_the_target_without_facts() -> None:
    book = ResultBook(selected=[ROUTE], target="local", interrupted=True)
    assert build(book)["run"]["target"] == "local"


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
