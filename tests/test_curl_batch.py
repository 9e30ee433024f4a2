"""The in-pod batch script, run for real with sh and curl against a local httpbin (the `httpbin` fixture)."""

import json
import subprocess

from conformance.probes import curl_batch
from tests.fakegateway import free_port


def run(url: str, count: int = 1, concurrency: int = 1, headers: dict[str, str] | None = None,
        method: str = "GET", body: str | None = None):  # type: ignore[no-untyped-def]
    argv = curl_batch.command(url, count, concurrency, headers, method, body, timeout=5)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return curl_batch.parse(done.stdout)


def test_statuses_in_order_and_count(httpbin: str) -> None:
    replies = run(f"{httpbin}/status/418", count=30, concurrency=6)
    assert [r.status for r in replies] == [418] * 30
    assert all(r.error is None and r.elapsed > 0 for r in replies)


def test_headers_both_ways_and_body(httpbin: str) -> None:
    (reply,) = run(f"{httpbin}/headers", headers={"end-user": "jason", "x-two": "a b"})
    seen = json.loads(reply.body)["headers"]
    assert seen["End-User"] == ["jason"] and seen["X-Two"] == ["a b"]
    assert reply.headers["content-type"].startswith("application/json")


def test_post_body(httpbin: str) -> None:
    (reply,) = run(f"{httpbin}/anything", method="POST", body="username=jason&passwd=password",
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status == 200 and "jason" in reply.body


def test_unreachable_is_status_zero_with_curl_error() -> None:
    replies = run(f"http://127.0.0.1:{free_port()}/", count=2)
    assert [r.status for r in replies] == [0, 0]
    assert all(r.error and r.error.startswith("curl exit 7") for r in replies)


def test_served_by_is_classified_like_the_local_target() -> None:
    out = "@@meshconf 1 0 200 0.01\nHTTP/1.1 200 OK\nServer: istio-envoy\n@@body\n" \
          '{"podname": "reviews-v2-abc-123"}\n@@error \n@@end\n'
    (reply,) = curl_batch.parse(out)
    assert reply.served_by == "reviews-v2-abc-123" and reply.headers["server"] == "istio-envoy"
