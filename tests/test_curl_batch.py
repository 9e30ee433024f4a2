"""The in-pod batch script, run for real with sh and curl against a local httpbin (the `httpbin` fixture)."""

import json
import subprocess
import time

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


def test_each_request_carries_its_start_on_the_pods_clock(httpbin: str) -> None:
    before = time.time()
    replies = run(f"{httpbin}/delay/0.05", count=3, concurrency=1)
    after = time.time()
    starts = [r.started for r in replies]
    assert all(s is not None and before <= s <= after for s in starts), (before, starts, after)
    # One at a time: each starts after the previous one's response.
    assert all(b - a >= replies[0].elapsed * 0.9 for a, b in zip(starts, starts[1:])), starts  # type: ignore[operator]


def test_a_date_without_nanoseconds_gives_no_start_rather_than_a_wrong_one() -> None:
    out = "@@meshconf 1 0 200 0.01 1700000000.%N\n@@body\n{}\n@@error \n@@end\n"
    assert curl_batch.parse(out)[0].started is None
    assert curl_batch.parse(out.replace("%N", "25"))[0].started == 1700000000.25
    assert curl_batch.parse(out.replace(" 1700000000.%N", ""))[0].started is None  # the script before this field
