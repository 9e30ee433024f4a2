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
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

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
