"""A small httpbin with go-httpbin's response shapes (headers as canonical name -> list of values)."""

import json
import time
from urllib.parse import parse_qs

from conformance.targets.local.apps.server import App, AppReply, Request, json_reply, not_found, text_reply

MAX_DELAY = 10.0


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


def _delay(raw: str, request: Request) -> AppReply:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        return text_reply("invalid delay\n", 400)
    time.sleep(min(seconds, MAX_DELAY))
    return json_reply(get_body(request))


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
