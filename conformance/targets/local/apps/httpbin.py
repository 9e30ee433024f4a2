"""A small httpbin with go-httpbin's response shapes (headers as canonical name -> list of values).

/delay and /unstable follow mccutchen/go-httpbin v2.15.0 (httpbin/handlers.go Delay, Unstable;
httpbin/helpers.go parseBoundedDuration, parseSeed, writeError), its inputs parsed as Go parses them.
"""

import json
import random
import time
from http import HTTPStatus
from urllib.parse import parse_qs

from conformance.targets.local.apps.go_values import (
    NANOS_PER_SECOND,
    GoError,
    duration_string,
    float_to_int64,
    parse_duration,
    parse_float,
    parse_int,
    wrap_int64,
)
from conformance.targets.local.apps.server import App, AppReply, Request, json_reply, not_found, text_reply

# go-httpbin's DefaultMaxDuration: the longest /delay it accepts.
MAX_DELAY_NANOS = 10 * NANOS_PER_SECOND
# /unstable without failure_rate fails half of the requests.
DEFAULT_FAILURE_RATE = 0.5
# go-httpbin's content types (httpbin/responses.go).
TEXT_TYPE = "text/plain; charset=utf-8"
JSON_TYPE = "application/json; charset=utf-8"


def canonical_name(name: str) -> str:
    """Go's textproto canonical form: x-b3-traceid -> X-B3-Traceid."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def header_lists(request: Request) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(canonical_name(name), []).append(value)
    return headers


def origin(request: Request) -> str:
    # As go-httpbin: the first X-Forwarded-For hop when a proxy added one, else the peer.
    forwarded = request.header("X-Forwarded-For")
    if forwarded:
        return forwarded.split(",", 1)[0].strip()
    return request.client_ip


def request_url(request: Request) -> str:
    if request.target.startswith(("http://", "https://")):
        return request.target
    scheme = request.header("X-Forwarded-Proto") or "http"
    return f"{scheme}://{request.header('Host') or ''}{request.target}"


def get_body(request: Request) -> dict[str, object]:
    return {
        "args": request.query,
        "headers": header_lists(request),
        "origin": origin(request),
        "url": request_url(request),
    }


def anything_body(request: Request) -> dict[str, object]:
    text = request.body.decode("utf-8", "replace")
    content_type = request.header("Content-Type") or ""
    form = parse_qs(text, keep_blank_values=True) if "application/x-www-form-urlencoded" in content_type else {}
    try:
        parsed = json.loads(text) if "json" in content_type else None
    except ValueError:
        parsed = None
    return {
        **get_body(request),
        "method": request.method,
        "data": text,
        "files": {},
        "form": form,
        "json": parsed,
    }


def _status(raw: str) -> AppReply:
    # 1xx would not be a final response; go-httpbin's other special bodies are not needed here.
    if not raw.isdigit() or not 200 <= int(raw) <= 599:
        return text_reply("invalid status code\n", 400)
    return AppReply(int(raw))


def go_error(status: int, detail: str) -> AppReply:
    """writeError: the status, its text and the detail as indented JSON."""
    body = {"status_code": status, "error": HTTPStatus(status).phrase, "detail": detail}
    return AppReply(status, (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode(), JSON_TYPE)


def delay_nanos(raw: str) -> int:
    """helpers.go parseDuration: a Go duration ("1.5s", "300ms"), else a float of seconds, kept to
    whole milliseconds as Go converts it (time.Duration(n*1000) * time.Millisecond, int64 arithmetic)."""
    try:
        return parse_duration(raw)
    except GoError:
        seconds = parse_float(raw)
    return wrap_int64(float_to_int64(seconds * 1000) * 10**6)


def _delay(raw: str, request: Request) -> AppReply:
    """handlers.go Delay: 0 to 10 s, else 400; then RequestWithBody's reply, with a Server-Timing."""
    try:
        nanos = delay_nanos(raw)
    except GoError as error:
        return go_error(400, f"invalid duration: {error}")
    if nanos > MAX_DELAY_NANOS:
        return go_error(400, f"invalid duration: duration {duration_string(nanos)} longer than "
                             f"{duration_string(MAX_DELAY_NANOS)}")
    if nanos < 0:
        return go_error(400, f"invalid duration: duration {duration_string(nanos)} shorter than 0s")
    time.sleep(nanos / NANOS_PER_SECOND)
    timing = f'initial_delay;dur={nanos / 10**6:.2f};desc="initial delay"'
    return json_reply(anything_body(request), headers=(("Server-Timing", timing),))


def _query_value(request: Request, name: str) -> str:
    """Go's url.Values.Get: the first value, or ""."""
    return (request.query.get(name) or [""])[0]


def _unstable(request: Request) -> AppReply:
    """handlers.go Unstable: 500 with probability failure_rate (default 0.5), else 200, both empty.

    A seed makes the outcome of one request fixed (each request draws once from a generator
    seeded anew). go-httpbin draws from Go's math/rand, which the local mesh does not reproduce:
    a given seed fails or succeeds here independently of what it does on go-httpbin.
    """
    raw_seed = _query_value(request, "seed")
    try:
        generator = random.Random(parse_int(raw_seed)) if raw_seed else random.Random()
    except GoError as error:
        return go_error(400, f"invalid seed: {error}")
    failure_rate = DEFAULT_FAILURE_RATE
    raw_rate = _query_value(request, "failure_rate")
    if raw_rate:
        try:
            failure_rate = parse_float(raw_rate)
        except GoError as error:
            return go_error(400, f"invalid failure rate: {error}")
        if failure_rate < 0 or failure_rate > 1:  # NaN passes, as in Go: it then never fails
            # go-httpbin formats a nil error with %d here: Go prints it so.
            return go_error(400, "invalid failure rate: %!d(<nil>) not in range [0, 1]")
    status = 500 if generator.random() < failure_rate else 200
    return AppReply(status, b"", TEXT_TYPE)


def _response_headers(request: Request) -> AppReply:
    headers = tuple((name, value) for name, values in request.query.items() for value in values)
    return json_reply({name: values for name, values in request.query.items()}, headers=headers)


def httpbin_app() -> App:
    def app(request: Request) -> AppReply:
        parts = [part for part in request.path.split("/") if part]
        first = parts[0] if parts else ""
        if not parts:
            return text_reply("httpbin ready\n")
        if first == "health":
            return json_reply({"status": "ok"})
        if first == "anything":
            return json_reply(anything_body(request))
        if len(parts) == 2 and first == "status":
            return _status(parts[1])
        if len(parts) == 2 and first == "delay":
            return _delay(parts[1], request)
        if request.path == "/unstable":
            return _unstable(request)
        if parts == ["response-headers"]:
            return _response_headers(request)
        if request.method not in ("GET", "HEAD"):
            return text_reply("method not allowed\n", 405)
        if parts == ["get"]:
            return json_reply(get_body(request))
        if parts == ["headers"]:
            return json_reply({"headers": header_lists(request)})
        if parts == ["ip"]:
            return json_reply({"origin": origin(request)})
        if parts == ["user-agent"]:
            return json_reply({"user-agent": request.header("User-Agent")})
        return not_found()

    return app
