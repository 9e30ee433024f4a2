"""The local mesh's Bookinfo apps and test client, run for real on loopback ports."""

import json
import re
import signal
import time

import httpx
import pytest

from tests.apps_builders import Apps, dead_endpoint

SERVED_BY = re.compile(r"Reviews served by:\s*(?:<[^>]*>\s*)*([A-Za-z0-9.-]+)")


# --- details, ratings, reviews ----------------------------------------------------------------


def test_details_and_ratings_shapes(apps: Apps) -> None:
    details = apps.start("details", "details-v1-a")
    ratings = apps.start("ratings", "ratings-v1-a")

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


def test_reviews_versions(apps: Apps) -> None:
    apps.register("ratings", apps.start("ratings", "ratings-v1-a"))
    v1 = apps.start("reviews", "reviews-v1-a", "--version", "v1")
    v2 = apps.start("reviews", "reviews-v2-b", "--version", "v2")
    v3 = apps.start("reviews", "reviews-v3-c", "--version", "v3")

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
def test_reviews_when_ratings_is_down(apps: Apps, ratings: str) -> None:
    if ratings == "refused":
        apps.register("ratings", dead_endpoint())
    v2 = apps.start("reviews", "reviews-v2-b", "--version", "v2")

    response = httpx.get(f"{v2}/reviews/0")

    assert response.status_code == 200
    assert [review["rating"] for review in response.json()["reviews"]] == [
        {"error": "Ratings service is currently unavailable"}
    ] * 2


def test_reviews_propagates_tracing_and_end_user_to_ratings(apps: Apps) -> None:
    ratings = apps.recorder({"id": 0, "ratings": {"Reviewer1": 1, "Reviewer2": 2}})
    apps.register("ratings", f"127.0.0.1:{ratings.port}")
    v2 = apps.start("reviews", "reviews-v2-b", "--version", "v2")

    incoming = {"x-request-id": "req-1", "x-b3-traceid": "abc", "traceparent": "00-1-2-01", "end-user": "jason"}
    stars = [review["rating"]["stars"] for review in httpx.get(f"{v2}/reviews/0", headers=incoming).json()["reviews"]]

    assert stars == [1, 2]
    (seen,) = ratings.seen
    assert seen.target == "/ratings/0"
    assert seen.headers["host"] == "ratings:9080"
    assert {name: seen.headers.get(name) for name in incoming} == incoming


# --- productpage ------------------------------------------------------------------------------


def start_bookinfo(apps: Apps, reviews_version: str = "v2") -> str:
    apps.register("details", apps.start("details", "details-v1-a"))
    apps.register("ratings", apps.start("ratings", "ratings-v1-a"))
    pod = f"reviews-{reviews_version}-5d8f"
    apps.register("reviews", apps.start("reviews", pod, "--version", reviews_version))
    return apps.start("productpage", "productpage-v1-a")


def test_productpage_html_and_api(apps: Apps) -> None:
    productpage = start_bookinfo(apps)

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


def test_productpage_when_backends_are_down(apps: Apps) -> None:
    apps.register("details", dead_endpoint())
    apps.register("reviews", dead_endpoint())
    productpage = apps.start("productpage", "productpage-v1-a")

    page = httpx.get(f"{productpage}/productpage")

    assert page.status_code == 200
    assert "Sorry, product reviews are currently unavailable for this book." in page.text
    assert "Sorry, product details are currently unavailable for this book." in page.text
    assert not SERVED_BY.search(page.text)
    api = httpx.get(f"{productpage}/api/v1/products/0/reviews")
    assert api.status_code == 500
    assert api.json() == {"error": "Sorry, product reviews are currently unavailable for this book."}


def test_productpage_shows_ratings_errors(apps: Apps) -> None:
    apps.register("details", apps.start("details", "details-v1-a"))
    apps.register("reviews", apps.start("reviews", "reviews-v3-a", "--version", "v3"))
    productpage = apps.start("productpage", "productpage-v1-a")

    page = httpx.get(f"{productpage}/productpage").text

    assert page.count("Ratings service is currently unavailable") == 2
    assert "glyphicon-star" not in page


def test_login_sends_end_user_and_propagates_tracing(apps: Apps) -> None:
    reviews = apps.recorder({"id": "0", "podname": "stand-in", "clustername": "null", "reviews": []})
    apps.register("reviews", f"127.0.0.1:{reviews.port}")
    apps.register("details", apps.start("details", "details-v1-a"))
    productpage = apps.start("productpage", "productpage-v1-a")

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


# --- client -----------------------------------------------------------------------------------


def batch(client: str, **spec: object) -> list[dict]:
    response = httpx.post(f"{client}/batch", json=spec, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["replies"]


def test_client_batch_through_registry(apps: Apps) -> None:
    apps.register("reviews", apps.start("reviews", "reviews-v1-a"), apps.start("reviews", "reviews-v1-b"))
    client = apps.start("client", "client-a")
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


def test_client_batch_failures(apps: Apps) -> None:
    apps.register("reviews", dead_endpoint())
    httpbin = apps.start("httpbin", "httpbin-a")
    apps.register("httpbin", httpbin, port=8000)
    client = apps.start("client", "client-a")

    refused = batch(client, url="http://reviews:9080/reviews/0", count=5, concurrency=2)
    assert [(reply["status"], reply["error"]) for reply in refused] == [(0, "connection refused")] * 5
    unknown = batch(client, url="http://nosuch:9080/", count=1)
    assert unknown[0]["status"] == 0 and unknown[0]["error"] == "unknown host"
    timed_out = batch(client, url="http://httpbin:8000/delay/2", timeout=0.3)
    assert timed_out[0]["status"] == 0 and timed_out[0]["error"] == "timeout"
    teapots = batch(client, url="http://httpbin:8000/status/418", count=3, method="POST", body="x")
    assert [reply["status"] for reply in teapots] == [418] * 3


def test_client_batch_through_proxy_keeps_one_connection_per_worker(apps: Apps) -> None:
    proxy = apps.recorder({"ok": True})
    client = apps.start("client", "client-a", "--proxy", f"127.0.0.1:{proxy.port}")

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
def test_client_rejects_bad_batches(apps: Apps, spec: dict) -> None:
    client = apps.start("client", "client-a")
    response = httpx.post(f"{client}/batch", json=spec)
    assert response.status_code == 400 and response.json()["error"]
    assert httpx.post(f"{client}/batch", content=b"{not json").status_code == 400


# --- process behaviour ------------------------------------------------------------------------


def test_logs_requests_and_exits_on_sigterm(apps: Apps) -> None:
    started = time.perf_counter()
    ratings = apps.start("ratings", "ratings-v1-a")
    startup = time.perf_counter() - started
    with httpx.Client() as session:  # two requests on one keep-alive connection
        session.get(f"{ratings}/ratings/0")
        session.get(f"{ratings}/health")

    proc = apps.procs[-1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0

    lines = (apps.tmp / "ratings-v1-a.log").read_text().splitlines()
    assert sum('"GET /ratings/0 HTTP/1.1" 200' in line for line in lines) == 1
    assert sum('"GET /health HTTP/1.1" 200' in line for line in lines) == 1
    print(f"ratings start-up to listening: {startup * 1000:.0f} ms")
    assert startup < 2.0  # generous: the target is ~0.15 s, CI machines vary
