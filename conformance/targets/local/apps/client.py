"""The client pod: the local stand-in for `kubectl exec ... curl/fortio`.

The harness calls its control API directly; the requests it sends on the harness's
behalf leave through the outbound helper (the sidecar when there is one).
"""

import json
import re
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from conformance.targets.local.apps.outbound import (
    DEFAULT_TIMEOUT,
    Outbound,
    Session,
    Url,
    describe_error,
    parse_url,
)
from conformance.targets.local.apps.server import App, AppReply, Request, json_reply, not_found, text_reply

MAX_COUNT = 100_000
MAX_CONCURRENCY = 64
MAX_TIMEOUT = 300.0
BODY_CHARS = 4096
BATCH_KEYS = frozenset({"url", "count", "concurrency", "headers", "method", "body", "timeout"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Batch(NamedTuple):
    url: Url
    count: int
    concurrency: int
    headers: dict[str, str]
    method: str
    body: bytes | None
    timeout: float


def _int_field(spec: dict, key: str, default: int, maximum: int) -> int:
    value = spec.get(key, default)
    # bool is an int in Python; "count": true is a mistake, not 1.
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise ValueError(f"{key} must be an integer from 1 to {maximum}")
    return value


def _headers_field(spec: dict) -> dict[str, str]:
    headers = spec.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("headers must be an object of name -> string")
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0") or not value.isascii():
            raise ValueError(f"header {name!r} must be a single-line ASCII string")
    return headers


def parse_batch(raw: bytes) -> Batch:
    """The validated /batch request; ValueError says what is wrong."""
    try:
        spec = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise ValueError("body must be a JSON object")
    unknown = sorted(set(spec) - BATCH_KEYS)
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(unknown)}")
    if not isinstance(spec.get("url"), str):
        raise ValueError("url is required and must be a string")
    url = parse_url(spec["url"])
    method = spec.get("method") or "GET"
    if not isinstance(method, str) or not _TOKEN.fullmatch(method):
        raise ValueError("method must be an HTTP method name")
    body = spec.get("body")
    if body is not None and not isinstance(body, str):
        raise ValueError("body must be a string or null")
    timeout = spec.get("timeout", DEFAULT_TIMEOUT)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= MAX_TIMEOUT:
        raise ValueError(f"timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}]")
    count = _int_field(spec, "count", 1, MAX_COUNT)
    return Batch(
        url=url,
        count=count,
        concurrency=min(_int_field(spec, "concurrency", 1, MAX_CONCURRENCY), count),
        headers=_headers_field(spec),
        method=method.upper(),
        body=None if body is None else body.encode(),
        timeout=float(timeout),
    )


def send_one(session: Session, batch: Batch) -> dict[str, object]:
    started, at = time.perf_counter(), time.time()  # `at`: the wall clock, to relate to a change's moment
    try:
        response = session.send(batch.url, batch.method, batch.headers, batch.body)
    except Exception as exc:  # whatever went wrong, it is this request's result, not the batch's
        return {
            "status": 0,
            "headers": {},
            "body": "",
            "error": describe_error(exc),
            "elapsed": round(time.perf_counter() - started, 6),
            "started": at,
        }
    return {
        "status": response.status,
        "headers": response.headers,
        "body": response.body.decode("utf-8", "replace")[:BODY_CHARS],
        "error": None,
        "elapsed": round(time.perf_counter() - started, 6),
        "started": at,
    }


def _next_index(count: int) -> Callable[[], int | None]:
    indices = iter(range(count))
    lock = threading.Lock()

    def take() -> int | None:
        with lock:
            return next(indices, None)

    return take


def run_batch(outbound: Outbound, batch: Batch) -> list[dict[str, object]]:
    """Send batch.count requests from batch.concurrency workers, one keep-alive connection each."""
    replies: list[dict[str, object]] = [{} for _ in range(batch.count)]
    take = _next_index(batch.count)

    def worker() -> None:
        with outbound.session(batch.timeout) as session:
            while (index := take()) is not None:
                replies[index] = send_one(session, batch)

    # Plain threads: send_one never raises, and concurrent.futures would cost start-up time.
    workers = [threading.Thread(target=worker, daemon=True) for _ in range(batch.concurrency)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return replies


def client_app(outbound: Outbound) -> App:
    def app(request: Request) -> AppReply:
        if request.path == "/":
            return text_reply("client ready\n")
        if request.path == "/health":
            return json_reply({"status": "ok"})
        if request.path == "/batch":
            if request.method != "POST":
                return text_reply("POST a JSON batch\n", 405)
            try:
                batch = parse_batch(request.body)
            except ValueError as exc:
                return json_reply({"error": str(exc)}, 400)
            return json_reply({"replies": run_batch(outbound, batch)})
        return not_found()

    return app
