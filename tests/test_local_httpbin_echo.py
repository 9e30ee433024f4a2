"""The local mesh's httpbin (go-httpbin's API) and http-echo (hashicorp/http-echo's flags), run for
real on loopback ports."""

import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from conformance.errors import ManifestError, UnsupportedResource
from conformance.targets.local.apps.http_echo import EchoOptions, http_echo_app, parse_echo_args
from conformance.targets.local.apps.server import AppServer
from conformance.targets.local.images import AppSpec, resolve, resolve_container
from tests.apps_builders import Apps


# --- httpbin ----------------------------------------------------------------------------------


def test_httpbin(apps: Apps) -> None:
    httpbin = apps.start("httpbin", "httpbin-a")

    got = httpx.get(f"{httpbin}/get?a=1&a=2", headers={"x-b3-traceid": "abc"}).json()
    assert got["args"] == {"a": ["1", "2"]}
    assert got["headers"]["X-B3-Traceid"] == ["abc"]
    assert got["headers"]["Host"] == [httpbin.removeprefix("http://")]
    assert got["origin"] == "127.0.0.1" and got["url"] == f"{httpbin}/get?a=1&a=2"
    assert httpx.get(f"{httpbin}/headers", headers={"x-custom": "v"}).json()["headers"]["X-Custom"] == ["v"]
    assert httpx.get(f"{httpbin}/ip").json() == {"origin": "127.0.0.1"}

    teapot = httpx.get(f"{httpbin}/status/418")
    assert teapot.status_code == 418 and teapot.content == b""
    assert httpx.get(f"{httpbin}/status/abc").status_code == 400

    started = time.monotonic()
    delayed = httpx.get(f"{httpbin}/delay/0.3")
    assert time.monotonic() - started >= 0.3
    assert delayed.status_code == 200 and "headers" in delayed.json()

    anything = httpx.post(f"{httpbin}/anything/x", json={"k": 1}).json()
    assert anything["method"] == "POST" and anything["json"] == {"k": 1}
    assert httpx.get(f"{httpbin}/health").status_code == 200


def go_error_body(status: int, reason: str, detail: str) -> str:
    """go-httpbin's writeError body: indented JSON and a newline (httpbin/helpers.go)."""
    return json.dumps({"status_code": status, "error": reason, "detail": detail}, indent=2) + "\n"


def test_httpbin_unstable_fails_its_share_with_500_as_go_httpbin(apps: Apps) -> None:
    """go-httpbin v2.15.0 handlers.go Unstable: 500 with probability failure_rate (default 0.5),
    else 200, empty text replies; a seed fixes a request's outcome; bad input is a 400 in go-httpbin's
    words, Go's %d of a nil error included."""
    httpbin = apps.start("httpbin", "httpbin-a")
    with httpx.Client() as session:
        def statuses(query: str, count: int) -> list[int]:
            return [session.get(f"{httpbin}/unstable{query}").status_code for _ in range(count)]

        failed = session.get(f"{httpbin}/unstable?failure_rate=1")
        assert (failed.status_code, failed.content) == (500, b"")
        assert failed.headers["content-type"] == "text/plain; charset=utf-8"
        assert statuses("?failure_rate=1", 20) == [500] * 20
        assert statuses("?failure_rate=0", 20) == [200] * 20
        assert statuses("?failure_rate=1e-400", 5) == [200] * 5  # underflows to 0, as Go parses it
        assert session.post(f"{httpbin}/unstable?failure_rate=0").status_code == 200  # any method
        # Binomial(200, 1/2): 60..140 is beyond five standard deviations either side.
        assert 60 <= statuses("", 200).count(500) <= 140
        assert 60 <= statuses("?failure_rate=0.5", 200).count(500) <= 140
        for seed in ("1", "2", "-7", "+12"):
            outcomes = statuses(f"?seed={seed}", 10)
            assert len(set(outcomes)) == 1, seed
        for query, detail in (
            ("failure_rate=abc", 'invalid failure rate: strconv.ParseFloat: parsing "abc": invalid syntax'),
            ("failure_rate=1e400", 'invalid failure rate: strconv.ParseFloat: parsing "1e400": value out of range'),
            ("failure_rate=2", "invalid failure rate: %!d(<nil>) not in range [0, 1]"),
            ("failure_rate=-0.1", "invalid failure rate: %!d(<nil>) not in range [0, 1]"),
            ("seed=x", 'invalid seed: strconv.ParseInt: parsing "x": invalid syntax'),
            ("seed=1.5", 'invalid seed: strconv.ParseInt: parsing "1.5": invalid syntax'),
            ("seed=9223372036854775808", 'invalid seed: strconv.ParseInt: parsing "9223372036854775808": '
                                         "value out of range"),
        ):
            refused = session.get(f"{httpbin}/unstable?{query}")
            assert refused.status_code == 400, query
            assert refused.headers["content-type"] == "application/json; charset=utf-8"
            assert refused.text == go_error_body(400, "Bad Request", detail), query


def test_httpbin_delay_takes_go_durations_and_seconds_up_to_10s(apps: Apps) -> None:
    """go-httpbin handlers.go Delay (helpers.go parseBoundedDuration): a Go duration or a float of
    seconds, 0 to 10 s; beyond, a 400 naming the duration as Go prints it; the reply is
    RequestWithBody's, with a Server-Timing."""
    httpbin = apps.start("httpbin", "httpbin-a")
    for raw in ("0.2", "200ms", "0.2s"):
        started = time.monotonic()
        delayed = httpx.get(f"{httpbin}/delay/{raw}?a=1")
        assert 0.2 <= time.monotonic() - started < 2.0, raw
        assert delayed.status_code == 200 and delayed.json()["args"] == {"a": ["1"]}
        assert delayed.json()["method"] == "GET"
        assert delayed.headers["server-timing"] == 'initial_delay;dur=200.00;desc="initial delay"'
    assert httpx.get(f"{httpbin}/delay/0").status_code == 200
    for raw, detail in (
        ("11", "invalid duration: duration 11s longer than 10s"),
        ("1m", "invalid duration: duration 1m0s longer than 10s"),
        ("10.5s", "invalid duration: duration 10.5s longer than 10s"),
        ("-1", "invalid duration: duration -1s shorter than 0s"),
        ("abc", 'invalid duration: strconv.ParseFloat: parsing "abc": invalid syntax'),
    ):
        refused = httpx.get(f"{httpbin}/delay/{raw}")
        assert (refused.status_code, refused.text) == (400, go_error_body(400, "Bad Request", detail)), raw


# --- http-echo --------------------------------------------------------------------------------


@pytest.fixture
def echo_server() -> Iterator[Callable[[list[str]], str]]:
    """Starts the local http-echo, in the test process, given the container's args; its base URL."""
    servers: list[AppServer] = []

    def start(args: list[str]) -> str:
        server = AppServer(("127.0.0.1", 0), http_echo_app(parse_echo_args(args)), "echo")
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_http_echo_answers_its_text_and_status_to_every_path(echo_server: Callable[[list[str]], str]) -> None:
    """hashicorp/http-echo v1.0.0 main.go and handlers.go: every path but /health gets the text and a
    newline with -status-code; /health 200 {"status":"ok"}; both name the app and its version."""
    echo = echo_server(["-listen=:8080", "-status-code=503", "-text=always 503"])
    for path in ("/", "/get", "/status/200", "/health/"):
        reply = httpx.get(f"{echo}{path}")
        assert (reply.status_code, reply.text) == (503, "always 503\n"), path
        assert (reply.headers["x-app-name"], reply.headers["x-app-version"]) == ("http-echo", "1.0.0")
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert httpx.post(f"{echo}/anything").status_code == 503
    health = httpx.get(f"{echo}/health")
    assert (health.status_code, health.text, health.headers["x-app-name"]) == (200, '{"status":"ok"}\n', "http-echo")
    default = httpx.get(echo_server([]))  # the image's ECHO_TEXT, status 200
    assert (default.status_code, default.text) == (200, "hello-world\n")


def test_http_echo_runs_as_a_local_app_with_the_containers_args(apps: Apps) -> None:
    """The pod's process: `python -m conformance.targets.local.apps http-echo --arg=...`, one --arg per
    container arg (pods.py), listening where the local mesh says."""
    echo = apps.start("http-echo", "echo-a", "--arg=-listen=:8080", "--arg=-status-code=503", "--arg=-text=always 503")
    reply = httpx.get(f"{echo}/anything")
    assert (reply.status_code, reply.text, reply.headers["x-app-name"]) == (503, "always 503\n", "http-echo")


@pytest.mark.parametrize(("args", "options"), [
    ([], EchoOptions(":5678", "hello-world", 200)),
    (["-listen=:8080", "-status-code=503", "-text=always 503"], EchoOptions(":8080", "always 503", 503)),
    (["--listen", "0.0.0.0:8080", "--status-code", "0x1f7", "-text", "x"], EchoOptions("0.0.0.0:8080", "x", 503)),
    (["-text=", "-version=false", "-status-code=418"], EchoOptions(":5678", "hello-world", 418)),
    (["-text=a", "--", "-text=b"], None),
])
def test_http_echo_reads_its_flags_as_go_does(args: list[str], options: EchoOptions | None) -> None:
    if options is None:
        with pytest.raises(ValueError, match="^Too many arguments!$"):
            parse_echo_args(args)
    else:
        assert parse_echo_args(args) == options


ECHO_IMAGE = "docker.io/hashicorp/http-echo:1.0.0"


def echo_container(args: list[str], port: int = 8080, **fields: object) -> dict:
    return {"name": "echo", "image": ECHO_IMAGE, "args": args, "ports": [{"containerPort": port}], **fields}


def test_http_echo_containers_run_with_their_args() -> None:
    spec = resolve_container(echo_container(["-listen=:8080", "-status-code=503", "-text=always 503"]), "here")
    assert spec == AppSpec("http-echo", args=("-listen=:8080", "-status-code=503", "-text=always 503"))
    with pytest.raises(UnsupportedResource, match="reads its container's args"):
        resolve(ECHO_IMAGE, "here")


@pytest.mark.parametrize(("container", "error", "message"), [
    (echo_container(["-version"]), UnsupportedResource, "not implemented by the local mesh: -version: http-echo would "
                                                        "print its version and exit"),
    (echo_container(["-h"]), UnsupportedResource, "-h: http-echo would print its usage and exit"),
    (echo_container(["-status-code=101", "-listen=:8080"]), UnsupportedResource, "only status codes 200-599"),
    (echo_container(["-listen=127.0.0.1:8080"]), UnsupportedResource, "only every interface and a port number"),
    (echo_container(["-listen=:9090"]), UnsupportedResource, "listens on port 9090 .* first containerPort, 8080"),
    (echo_container([], port=8080), UnsupportedResource, r"listens on port 5678 \(-listen=:5678\)"),
    (echo_container(["-listen=:8080"], command=["/http-echo"]), UnsupportedResource, "field command"),
    (echo_container(["-listen=:8080", "-x"]), ManifestError, "would exit at start: flag provided but not defined: -x"),
    (echo_container(["-status-code=abc"]), ManifestError, 'invalid value "abc" for flag -status-code: parse error'),
    (echo_container(["-text"]), ManifestError, "flag needs an argument: -text"),
    (echo_container(["-listen=:8080", "extra"]), ManifestError, "Too many arguments!"),
])
def test_http_echo_containers_refuse_what_they_do_not_implement(container: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        resolve_container(container, "Deployment ns/echo")
