"""Batches of requests: decoding a client's replies, and sending from outside the mesh."""

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from conformance.probes.classify import served_by
from conformance.targets.base import Batch, Reply

BODY_EXCERPT = 4096


def reply_from_dict(data: Mapping[str, Any]) -> Reply:
    body = str(data.get("body") or "")[:BODY_EXCERPT]
    return Reply(
        status=int(data.get("status", 0)),
        headers={str(k).lower(): str(v) for k, v in (data.get("headers") or {}).items()},
        body=body,
        served_by=served_by(body),
        error=data.get("error"),
        elapsed=float(data.get("elapsed", 0.0)),
        started=_seconds(data.get("started")),
    )


def _seconds(value: Any) -> float | None:
    """A client's start time, or None when it gave none it could measure."""
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def send_outside(
    url: str,
    count: int,
    concurrency: int,
    headers: Mapping[str, str] | None,
    timeout: float,
    client_name: str = "test-host",
    method: str = "GET",
    body: str | None = None,
) -> Batch:
    """Send from the harness process itself: the test host, outside the mesh."""
    with httpx.Client(timeout=timeout, follow_redirects=False) as http:

        def one(_: int) -> Reply:
            started, at = time.monotonic(), time.time()
            try:
                response = http.request(method, url, headers=dict(headers or {}), content=body)
            except httpx.HTTPError as exc:
                return Reply(0, {}, "", error=f"{type(exc).__name__}: {exc}", elapsed=time.monotonic() - started,
                             started=at)
            return reply_from_dict(
                {
                    "status": response.status_code,
                    "headers": dict(response.headers),
                    "body": response.text,
                    "elapsed": time.monotonic() - started,
                    "started": at,
                }
            )

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            replies = tuple(pool.map(one, range(count)))
    return Batch(url=url, client=client_name, replies=replies, request_headers=dict(headers or {}))


class HostClient:
    """The test host itself as a client: outside the mesh (ingress checks, negative checks)."""

    name = "test-host"
    namespace = ""

    def __init__(self, request_timeout: float) -> None:
        self._timeout = request_timeout

    def send(self, url: str, count: int = 1, concurrency: int = 1, headers: Mapping[str, str] | None = None,
             method: str = "GET", body: str | None = None) -> Batch:
        return send_outside(url, count, concurrency, headers, self._timeout, method=method, body=body)
