"""The local mesh's workload processes, run for real on loopback ports."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conformance.errors import ManifestError, UnsupportedResource
from conformance.targets.local.apps.http_echo import EchoOptions, http_echo_app, parse_echo_args
from conformance.targets.local.apps.server import AppServer
from conformance.targets.local.images import AppSpec, resolve, resolve_container

NS = "bookinfo"
SERVED_BY = re.compile(r"Reviews served by:\s*(?:<[^>]*>\s*)*([A-Za-z0-9.-]+)")
STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.005)
    raise TimeoutError(f"nothing listening on port {port}")


@dataclass
class Recorded:
    target: str
    headers: dict[str, str]
    peer_port: int


class Recorder:
    """A stand-in upstream in the test process: records what reaches it, answers with a fixed JSON."""

    def __init__(self, reply: object) -> None:
        self.seen: list[Recorded] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                headers = {name.lower(): value for name, value in self.headers.items()}
                recorder.seen.append(Recorded(self.path, headers, self.client_address[1]))
                body = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Mesh:
    tmp: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    recorders: list[Recorder] = field(default_factory=list)
    services: dict[str, list[str]] = field(default_factory=dict)

    @property
    def registry(self) -> Path:
        return self.tmp / "registry.json"

    def start(self, app: str, pod: str, *args: str, namespace: str = NS) -> str:
        """Start one app process; return its base URL once it listens."""
        port = free_port()
        cmd = [sys.executable, "-m", "conformance.targets.local.apps", app, "--listen", f"127.0.0.1:{port}"]
        cmd += ["--pod", pod, "--namespace", namespace, "--registry", str(self.registry), *args]
        log = open(self.tmp / f"{pod}.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
        log.close()
        self.procs.append(proc)
        wait_listening(proc, port)
        return f"http://127.0.0.1:{port}"

    def recorder(self, reply: object) -> Recorder:
        recorder = Recorder(reply)
        self.recorders.append(recorder)
        return recorder

    def register(self, name: str, *endpoints: str, port: int = 9080, namespace: str = NS) -> None:
        """Point name.namespace:port at endpoints (base URLs or IP:PORT); written atomically."""
        addresses = [endpoint.removeprefix("http://") for endpoint in endpoints]
        self.services[f"{name}.{namespace}.svc.cluster.local:{port}"] = addresses
        partial = self.tmp / "registry.json.tmp"
        partial.write_text(json.dumps(self.services))
        os.replace(partial, self.registry)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for recorder in self.recorders:
            recorder.close()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path)
    mesh.register("placeholder")  # the registry file exists from the start
    try:
        yield mesh
    finally:
        mesh.stop()


def dead_endpoint() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused


# --- details, ratings, reviews ----------------------------------------------------------------


def test_details_and_ratings_shapes(mesh: Mesh) -> None:
    details = mesh.start("details", "details-v1-a")
    ratings = mesh.start("ratings", "ratings-v1-a")

    assert httpx.get(f"{details}/details/0").json() == {
        "id": 0,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }
    assert httpx.get(f"{ratings}/ratings/7").json() == {"id": 7, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
    assert httpx.get(f"{details}/details/abc").status_code == 400
    assert httpx.get(f"{details}/health").json() == {"status": "Details is healthy"}
    assert httpx.get(f"{ratings}/health").json() == {"status": "Ratings is healthy"}
    assert httpx.get(f"{ratings}/nope").status_code == 404


def test_reviews_versions(mesh: Mesh) -> None:
    mesh.register("ratings", mesh.start("ratings", "ratings-v1-a"))
    v1 = mesh.start("reviews", "reviews-v1-a", "--version", "v1")
    v2 = mesh.start("reviews", "reviews-v2-b", "--version", "v2")
    v3 = mesh.start("reviews", "reviews-v3-c", "--version", "v3")

    body = httpx.get(f"{v1}/reviews/0").json()
    assert body["id"] == "0" and body["podname"] == "reviews-v1-a" and body["clustername"] == "null"
    assert [review["reviewer"] for review in body["reviews"]] == ["Reviewer1", "Reviewer2"]
    assert body["reviews"][0]["text"].startswith("An extremely entertaining play")
    assert all("rating" not in review for review in body["reviews"])

    v2_reviews = httpx.get(f"{v2}/reviews/0").json()["reviews"]
    assert [review["rating"] for review in v2_reviews] == [
        {"stars": 5, "color": "black"},
        {"stars": 4, "color": "black"},
    ]
    v3_reviews = httpx.get(f"{v3}/reviews/0").json()["reviews"]
    assert [review["rating"]["color"] for review in v3_reviews] == ["red", "red"]
    assert httpx.get(f"{v3}/health").json() == {"status": "Reviews is healthy"}


@pytest.mark.parametrize("ratings", ["unregistered", "refused"])
def test_reviews_when_ratings_is_down(mesh: Mesh, ratings: str) -> None:
    if ratings == "refused":
        mesh.register("ratings", dead_endpoint())
    v2 = mesh.start("reviews", "reviews-v2-b", "--version", "v2")

    response = httpx.get(f"{v2}/reviews/0")

    assert response.status_code == 200
    assert [review["rating"] for review in response.json()["reviews"]] == [
        {"error": "Ratings service is currently unavailable"}
    ] * 2


def test_reviews_propagates_tracing_and_end_user_to_ratings(mesh: Mesh) -> None:
    ratings = mesh.recorder({"id": 0, "ratings": {"Reviewer1": 1, "Reviewer2": 2}})
    mesh.register("ratings", f"127.0.0.1:{ratings.port}")
    v2 = mesh.start("reviews", "reviews-v2-b", "--version", "v2")

    incoming = {"x-request-id": "req-1", "x-b3-traceid": "abc", "traceparent": "00-1-2-01", "end-user": "jason"}
    stars = [review["rating"]["stars"] for review in httpx.get(f"{v2}/reviews/0", headers=incoming).json()["reviews"]]

    assert stars == [1, 2]
    (seen,) = ratings.seen
    assert seen.target == "/ratings/0"
    assert seen.headers["host"] == "ratings:9080"
    assert {name: seen.headers.get(name) for name in incoming} == incoming


# --- productpage ------------------------------------------------------------------------------


def start_bookinfo(mesh: Mesh, reviews_version: str = "v2") -> str:
    mesh.register("details", mesh.start("details", "details-v1-a"))
    mesh.register("ratings", mesh.start("ratings", "ratings-v1-a"))
    pod = f"reviews-{reviews_version}-5d8f"
    mesh.register("reviews", mesh.start("reviews", pod, "--version", reviews_version))
    return mesh.start("productpage", "productpage-v1-a")


def test_productpage_html_and_api(mesh: Mesh) -> None:
    productpage = start_bookinfo(mesh)

    page = httpx.get(f"{productpage}/productpage")
    assert page.status_code == 200
    assert "<title>Simple Bookstore App</title>" in page.text
    assert SERVED_BY.search(page.text).group(1) == "reviews-v2-5d8f"
    assert "PublisherA" in page.text and "An extremely entertaining play" in page.text
    assert page.text.count("glyphicon-star") == 10 and 'color="black"' in page.text

    reviews = httpx.get(f"{productpage}/api/v1/products/0/reviews")
    assert reviews.status_code == 200 and reviews.json()["podname"] == "reviews-v2-5d8f"
    assert httpx.get(f"{productpage}/api/v1/products").json()[0]["title"] == "The Comedy of Errors"
    assert httpx.get(f"{productpage}/api/v1/products/0").json()["ISBN-10"] == "1234567890"
    assert httpx.get(f"{productpage}/api/v1/products/0/ratings").json()["ratings"]["Reviewer1"] == 5
    assert httpx.get(f"{productpage}/health").json() == {"status": "Productpage is healthy"}
    assert httpx.get(f"{productpage}/static/bootstrap.css").status_code == 200


def test_productpage_when_backends_are_down(mesh: Mesh) -> None:
    mesh.register("details", dead_endpoint())
    mesh.register("reviews", dead_endpoint())
    productpage = mesh.start("productpage", "productpage-v1-a")

    page = httpx.get(f"{productpage}/productpage")

    assert page.status_code == 200
    assert "Sorry, product reviews are currently unavailable for this book." in page.text
    assert "Sorry, product details are currently unavailable for this book." in page.text
    assert not SERVED_BY.search(page.text)
    api = httpx.get(f"{productpage}/api/v1/products/0/reviews")
    assert api.status_code == 500
    assert api.json() == {"error": "Sorry, product reviews are currently unavailable for this book."}


def test_productpage_shows_ratings_errors(mesh: Mesh) -> None:
    mesh.register("details", mesh.start("details", "details-v1-a"))
    mesh.register("reviews", mesh.start("reviews", "reviews-v3-a", "--version", "v3"))
    productpage = mesh.start("productpage", "productpage-v1-a")

    page = httpx.get(f"{productpage}/productpage").text

    assert page.count("Ratings service is currently unavailable") == 2
    assert "glyphicon-star" not in page


def test_login_sends_end_user_and_propagates_tracing(mesh: Mesh) -> None:
    reviews = mesh.recorder({"id": "0", "podname": "stand-in", "clustername": "null", "reviews": []})
    mesh.register("reviews", f"127.0.0.1:{reviews.port}")
    mesh.register("details", mesh.start("details", "details-v1-a"))
    productpage = mesh.start("productpage", "productpage-v1-a")

    with httpx.Client(base_url=productpage) as browser:
        # An end-user header from outside is not trusted; only the session sets it.
        browser.get("/productpage", headers={"end-user": "mallory", "x-request-id": "req-1"})
        login = browser.post("/login", data={"username": "jason", "passwd": "password"})
        assert login.status_code == 302 and login.headers["location"] == "/productpage"
        assert "session=jason" in login.headers["set-cookie"]
        page = browser.get("/productpage", headers={"x-b3-traceid": "t1"})
        assert SERVED_BY.search(page.text).group(1) == "stand-in"
        assert "jason" in page.text
        logout = browser.get("/logout")
        assert logout.status_code == 302
        browser.get("/productpage")

    anonymous, logged_in, logged_out = reviews.seen
    assert "end-user" not in anonymous.headers and anonymous.headers["x-request-id"] == "req-1"
    assert logged_in.headers["end-user"] == "jason" and logged_in.headers["x-b3-traceid"] == "t1"
    assert logged_in.headers["host"] == "reviews:9080" and logged_in.target == "/reviews/0"
    assert "end-user" not in logged_out.headers


# --- httpbin ----------------------------------------------------------------------------------


def test_httpbin(mesh: Mesh) -> None:
    httpbin = mesh.start("httpbin", "httpbin-a")

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


def test_httpbin_unstable_fails_its_share_with_500_as_go_httpbin(mesh: Mesh) -> None:
    """go-httpbin v2.15.0 handlers.go Unstable: 500 with probability failure_rate (default 0.5),
    else 200, empty text replies; a seed fixes a request's outcome; bad input is a 400 in go-httpbin's
    words, Go's %d of a nil error included."""
    httpbin = mesh.start("httpbin", "httpbin-a")
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


def test_httpbin_delay_takes_go_durations_and_seconds_up_to_10s(mesh: Mesh) -> None:
    """go-httpbin handlers.go Delay (helpers.go parseBoundedDuration): a Go duration or a float of
    seconds, 0 to 10 s; beyond, a 400 naming the duration as Go prints it; the reply is
    RequestWithBody's, with a Server-Timing."""
    httpbin = mesh.start("httpbin", "httpbin-a")
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


def test_http_echo_runs_as_a_local_app_with_the_containers_args(mesh: Mesh) -> None:
    """The pod's process: `python -m conformance.targets.local.apps http-echo --arg=...`, one --arg per
    container arg (pods.py), listening where the local mesh says."""
    echo = mesh.start("http-echo", "echo-a", "--arg=-listen=:8080", "--arg=-status-code=503", "--arg=-text=always 503")
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


# --- client -----------------------------------------------------------------------------------


def batch(client: str, **spec: object) -> list[dict]:
    response = httpx.post(f"{client}/batch", json=spec, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["replies"]


def test_client_batch_through_registry(mesh: Mesh) -> None:
    mesh.register("reviews", mesh.start("reviews", "reviews-v1-a"), mesh.start("reviews", "reviews-v1-b"))
    client = mesh.start("client", "client-a")
    assert httpx.get(client).text == "client ready\n"

    replies = batch(client, url="http://reviews:9080/reviews/0", count=40, concurrency=8)

    assert len(replies) == 40 and {reply["status"] for reply in replies} == {200}
    assert all(reply["error"] is None and reply["elapsed"] > 0 for reply in replies)
    assert replies[0]["headers"]["content-type"] == "application/json"
    pods = {json.loads(reply["body"])["podname"] for reply in replies}
    assert pods <= {"reviews-v1-a", "reviews-v1-b"}
    # The other spellings of the name reach the same service.
    for url in ("http://reviews.bookinfo:9080/reviews/0", "http://reviews.bookinfo.svc.cluster.local:9080/reviews/0"):
        assert batch(client, url=url)[0]["status"] == 200


def test_client_batch_failures(mesh: Mesh) -> None:
    mesh.register("reviews", dead_endpoint())
    httpbin = mesh.start("httpbin", "httpbin-a")
    mesh.register("httpbin", httpbin, port=8000)
    client = mesh.start("client", "client-a")

    refused = batch(client, url="http://reviews:9080/reviews/0", count=5, concurrency=2)
    assert [(reply["status"], reply["error"]) for reply in refused] == [(0, "connection refused")] * 5
    unknown = batch(client, url="http://nosuch:9080/", count=1)
    assert unknown[0]["status"] == 0 and unknown[0]["error"] == "unknown host"
    timed_out = batch(client, url="http://httpbin:8000/delay/2", timeout=0.3)
    assert timed_out[0]["status"] == 0 and timed_out[0]["error"] == "timeout"
    teapots = batch(client, url="http://httpbin:8000/status/418", count=3, method="POST", body="x")
    assert [reply["status"] for reply in teapots] == [418] * 3


def test_client_batch_through_proxy_keeps_one_connection_per_worker(mesh: Mesh) -> None:
    proxy = mesh.recorder({"ok": True})
    client = mesh.start("client", "client-a", "--proxy", f"127.0.0.1:{proxy.port}")

    replies = batch(client, url="http://reviews:9080/reviews/0", count=6, headers={"end-user": "jason"})

    assert [reply["status"] for reply in replies] == [200] * 6
    assert {seen.target for seen in proxy.seen} == {"http://reviews:9080/reviews/0"}
    assert {seen.headers["host"] for seen in proxy.seen} == {"reviews:9080"}
    assert {seen.headers["end-user"] for seen in proxy.seen} == {"jason"}
    assert len({seen.peer_port for seen in proxy.seen}) == 1


@pytest.mark.parametrize(
    "spec",
    [
        {"count": 1},
        {"url": "http://reviews:9080/", "count": 0},
        {"url": "http://reviews:9080/", "count": True},
        {"url": "https://reviews:9080/"},
        {"url": "http://reviews:9080/", "concurrency": 1000},
        {"url": "http://reviews:9080/", "headers": {"bad name": "v"}},
        {"url": "http://reviews:9080/", "timeout": -1},
        {"url": "http://reviews:9080/", "retries": 3},
    ],
)
def test_client_rejects_bad_batches(mesh: Mesh, spec: dict) -> None:
    client = mesh.start("client", "client-a")
    response = httpx.post(f"{client}/batch", json=spec)
    assert response.status_code == 400 and response.json()["error"]
    assert httpx.post(f"{client}/batch", content=b"{not json").status_code == 400


# --- process behaviour ------------------------------------------------------------------------


def test_logs_requests_and_exits_on_sigterm(mesh: Mesh) -> None:
    started = time.perf_counter()
    ratings = mesh.start("ratings", "ratings-v1-a")
    startup = time.perf_counter() - started
    with httpx.Client() as session:  # two requests on one keep-alive connection
        session.get(f"{ratings}/ratings/0")
        session.get(f"{ratings}/health")

    proc = mesh.procs[-1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0

    lines = (mesh.tmp / "ratings-v1-a.log").read_text().splitlines()
    assert sum('"GET /ratings/0 HTTP/1.1" 200' in line for line in lines) == 1
    assert sum('"GET /health HTTP/1.1" 200' in line for line in lines) == 1
    print(f"ratings start-up to listening: {startup * 1000:.0f} ms")
    assert startup < 2.0  # generous: the target is ~0.15 s, CI machines vary
