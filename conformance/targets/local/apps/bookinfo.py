"""Bookinfo: productpage, details, ratings and reviews, with the upstream Istio sample's API shapes.

Behaviour that the Istio tasks depend on is kept as upstream has it: productpage gives
reviews 3 s and one retry, details and ratings 3 s; reviews v2 gives ratings 10 s, v3 2.5 s.
"""

import html
import json
from urllib.parse import parse_qs, quote, unquote

from conformance.targets.local.apps.outbound import Outbound
from conformance.targets.local.apps.server import App, AppReply, Request, json_reply, not_found, text_reply

# The tracing headers every Bookinfo app copies from its request to its outbound calls.
PROPAGATED = (
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "traceparent",
    "tracestate",
)

BAD_ID = {"error": "please provide numeric product ID"}
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"
DETAILS_UNAVAILABLE = "Sorry, product details are currently unavailable for this book."
REVIEWS_UNAVAILABLE = "Sorry, product reviews are currently unavailable for this book."
RATINGS_API_UNAVAILABLE = "Sorry, product ratings are currently unavailable for this book."

REVIEWS = (
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
)
STAR_COLOR = {"v2": "black", "v3": "red"}
RATINGS_TIMEOUT = {"v2": 10.0, "v3": 2.5}
PRODUCTPAGE_TIMEOUT = 3.0
REVIEWS_ATTEMPTS = 2  # upstream keeps this retry on purpose, for the fault-injection task

PRODUCTS = [
    {
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": (
            '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: '
            "The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest "
            "and one of his most farcical comedies, with a major part of the humour coming from slapstick "
            "and mistaken identity, in addition to puns and word play."
        ),
    }
]


def _segments(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def _product_id(raw: str) -> int | None:
    try:
        return int(raw)
    except ValueError:
        return None


def _health(name: str) -> AppReply:
    return json_reply({"status": f"{name} is healthy"})


def propagated_headers(request: Request, extra: tuple[str, ...] = ()) -> dict[str, str]:
    headers = {}
    for name in PROPAGATED + extra:
        value = request.header(name)
        if value is not None:
            headers[name] = value
    return headers


# --- details ----------------------------------------------------------------------------------


def book_details(product_id: int) -> dict[str, object]:
    return {
        "id": product_id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }


def details_app() -> App:
    def app(request: Request) -> AppReply:
        parts = _segments(request.path)
        if parts == ["health"]:
            return _health("Details")
        if len(parts) == 2 and parts[0] == "details":
            product_id = _product_id(parts[1])
            return json_reply(BAD_ID, 400) if product_id is None else json_reply(book_details(product_id))
        return not_found()

    return app


# --- ratings ----------------------------------------------------------------------------------


def ratings_app() -> App:
    def app(request: Request) -> AppReply:
        parts = _segments(request.path)
        if parts == ["health"]:
            return _health("Ratings")
        if len(parts) == 2 and parts[0] == "ratings":
            product_id = _product_id(parts[1])
            if product_id is None:
                return json_reply(BAD_ID, 400)
            return json_reply({"id": product_id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
        return not_found()

    return app


# --- reviews ----------------------------------------------------------------------------------


def _fetch_ratings(outbound: Outbound, product_id: int, headers: dict[str, str], timeout: float) -> dict | None:
    """The reviewer -> stars map, or None when ratings could not be had (any failure, as upstream)."""
    try:
        response = outbound.fetch(f"http://ratings:9080/ratings/{product_id}", headers, timeout=timeout)
        if response.status != 200:
            return None
        ratings = json.loads(response.body).get("ratings")
    except Exception:  # connection errors, timeouts, and bodies that are not ratings JSON alike
        return None
    return ratings if isinstance(ratings, dict) else None


def _rating(ratings: dict | None, reviewer: str, color: str) -> dict[str, object]:
    stars = ratings.get(reviewer) if ratings else None
    if not isinstance(stars, int):
        return {"error": RATINGS_UNAVAILABLE}
    return {"stars": stars, "color": color}


def reviews_app(pod: str, version: str, outbound: Outbound) -> App:
    color = STAR_COLOR.get(version)

    def app(request: Request) -> AppReply:
        parts = _segments(request.path)
        if parts == ["health"]:
            return _health("Reviews")
        if len(parts) != 2 or parts[0] != "reviews":
            return not_found()
        product_id = _product_id(parts[1])
        if product_id is None:  # upstream's JAX-RS route only matches an int
            return not_found()
        reviews: list[dict[str, object]] = [{"reviewer": name, "text": text} for name, text in REVIEWS]
        if color is not None:
            headers = propagated_headers(request, extra=("end-user",))
            ratings = _fetch_ratings(outbound, product_id, headers, RATINGS_TIMEOUT[version])
            for review in reviews:
                review["rating"] = _rating(ratings, str(review["reviewer"]), color)
        return json_reply({"id": str(product_id), "podname": pod, "clustername": "null", "reviews": reviews})

    return app


# --- productpage ------------------------------------------------------------------------------


def session_user(request: Request) -> str | None:
    for cookie_header in request.headers.get_all("Cookie") or []:
        for part in cookie_header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == "session" and value:
                return unquote(value)
    return None


def _forward_headers(request: Request) -> dict[str, str]:
    # The incoming end-user is deliberately dropped: only the session decides who the user is.
    headers = propagated_headers(request)
    user = session_user(request)
    if user:
        headers["end-user"] = user
    return headers


def _get_json(outbound: Outbound, url: str, headers: dict[str, str], attempts: int = 1) -> tuple[int, object | None]:
    """(200, body) on success, else (the last status or 500, None), like upstream's requests calls."""
    status = 500
    for _ in range(attempts):
        try:
            response = outbound.fetch(url, headers, timeout=PRODUCTPAGE_TIMEOUT)
        except Exception:
            status = 500
            continue
        status = response.status
        if status == 200:
            try:
                return 200, json.loads(response.body)
            except ValueError:
                status = 500
    return status, None


def get_details(outbound: Outbound, product_id: str, headers: dict[str, str]) -> tuple[int, object]:
    status, body = _get_json(outbound, f"http://details:9080/details/{product_id}", headers)
    return (status, body) if body is not None else (status, {"error": DETAILS_UNAVAILABLE})


def get_reviews(outbound: Outbound, product_id: str, headers: dict[str, str]) -> tuple[int, object]:
    url = f"http://reviews:9080/reviews/{product_id}"
    status, body = _get_json(outbound, url, headers, attempts=REVIEWS_ATTEMPTS)
    return (status, body) if body is not None else (status, {"error": REVIEWS_UNAVAILABLE})


def get_ratings(outbound: Outbound, product_id: str, headers: dict[str, str]) -> tuple[int, object]:
    status, body = _get_json(outbound, f"http://ratings:9080/ratings/{product_id}", headers)
    return (status, body) if body is not None else (status, {"error": RATINGS_API_UNAVAILABLE})


def _stars_html(rating: object) -> str:
    if not isinstance(rating, dict):
        return ""
    stars = rating.get("stars")
    if isinstance(stars, int):
        full = '<span class="glyphicon glyphicon-star"></span>\n' * max(0, min(stars, 5))
        empty = '<span class="glyphicon glyphicon-star-empty"></span>\n' * max(0, 5 - stars)
        return f'<font color="{html.escape(str(rating.get("color", "")))}">\n{full}{empty}</font>\n'
    if rating.get("error"):
        return f"<p><i>{html.escape(str(rating['error']))}</i></p>\n"
    return ""


def _details_html(status: int, details: object) -> str:
    if status != 200 or not isinstance(details, dict):
        error = details.get("error", DETAILS_UNAVAILABLE) if isinstance(details, dict) else DETAILS_UNAVAILABLE
        return f"<h4>Error fetching product details!</h4>\n<p>{html.escape(str(error))}</p>\n"
    rows = "".join(
        f"<dt>{label}:</dt>{html.escape(str(details.get(key, '')))}\n"
        for label, key in (
            ("Type", "type"),
            ("Pages", "pages"),
            ("Publisher", "publisher"),
            ("Language", "language"),
            ("ISBN-10", "ISBN-10"),
            ("ISBN-13", "ISBN-13"),
        )
    )
    return f"<h4>Book Details</h4>\n<dl>\n{rows}</dl>\n"


def _reviews_html(status: int, reviews: object) -> str:
    if status != 200 or not isinstance(reviews, dict) or not isinstance(reviews.get("reviews"), list):
        error = reviews.get("error", REVIEWS_UNAVAILABLE) if isinstance(reviews, dict) else REVIEWS_UNAVAILABLE
        return f"<h4>Error fetching product reviews!</h4>\n<p>{html.escape(str(error))}</p>\n"
    quotes = "".join(
        "<blockquote>\n"
        f"<p>{html.escape(str(review.get('text', '')))}</p>\n"
        f"<small>{html.escape(str(review.get('reviewer', '')))}</small>\n"
        f"{_stars_html(review.get('rating'))}"
        "</blockquote>\n"
        for review in reviews["reviews"]
        if isinstance(review, dict)
    )
    # The classifier reads the pod after "Reviews served by:" (markup in between is skipped).
    served_by = f"<dl>\n<dt>Reviews served by:</dt>\n<u>{html.escape(str(reviews.get('podname', '')))}</u>\n</dl>\n"
    return f"<h4>Book Reviews</h4>\n{quotes}{served_by}"


def productpage_html(user: str | None, details: tuple[int, object], reviews: tuple[int, object]) -> str:
    product = PRODUCTS[0]
    if user:
        account = f'<p>Signed in as <b>{html.escape(user)}</b> <a href="logout">Sign out</a></p>'
    else:
        account = (
            '<form method="post" action="login"><input name="username"> <input name="passwd" type="password"> '
            '<button type="submit">Sign in</button></form>'
        )
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>Simple Bookstore App</title>\n</head>\n"
        f"<body>\n<nav>BookInfo Sample {account}</nav>\n"
        f"<h3>{html.escape(str(product['title']))}</h3>\n<p>{product['descriptionHtml']}</p>\n"
        f"{_details_html(*details)}{_reviews_html(*reviews)}</body>\n</html>\n"
    )


def _redirect(location: str, cookie: str) -> AppReply:
    return AppReply(302, b"", "text/html; charset=utf-8", (("Location", location), ("Set-Cookie", cookie)))


def _login(request: Request) -> AppReply:
    form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    username = (form.get("username") or request.query.get("username") or [""])[0]
    if not username:
        return _redirect("/productpage", "session=; Path=/; Max-Age=0")
    # It becomes an end-user header value: refuse what cannot travel in one.
    if not (username.isascii() and username.isprintable()):
        return text_reply("username must be printable ASCII\n", 400)
    return _redirect("/productpage", f"session={quote(username, safe='')}; Path=/")


INDEX_HTML = (
    "<!DOCTYPE html>\n<html>\n<head>\n<title>Simple Bookstore App</title>\n</head>\n<body>\n"
    '<p><a href="productpage?u=normal">Normal user</a> <a href="productpage?u=test">Test user</a></p>\n'
    "</body>\n</html>\n"
)


def productpage_app(outbound: Outbound) -> App:
    def api(parts: list[str], request: Request) -> AppReply:
        if parts == []:
            return json_reply(PRODUCTS)
        headers = _forward_headers(request)
        product_id = quote(parts[0], safe="")
        if len(parts) == 1:
            status, body = get_details(outbound, product_id, headers)
        elif parts[1:] == ["reviews"]:
            status, body = get_reviews(outbound, product_id, headers)
        elif parts[1:] == ["ratings"]:
            status, body = get_ratings(outbound, product_id, headers)
        else:
            return not_found()
        return json_reply(body, status)

    def app(request: Request) -> AppReply:
        parts = _segments(request.path)
        if parts in ([], ["index.html"]):
            return text_reply(INDEX_HTML, content_type="text/html; charset=utf-8")
        if parts == ["health"]:
            return _health("Productpage")
        if parts == ["login"]:
            return _login(request) if request.method == "POST" else text_reply("method not allowed\n", 405)
        if parts == ["logout"]:
            return _redirect("/productpage", "session=; Path=/; Max-Age=0")
        if parts == ["productpage"]:
            headers = _forward_headers(request)
            details = get_details(outbound, "0", headers)
            reviews = get_reviews(outbound, "0", headers)
            page = productpage_html(session_user(request), details, reviews)
            return text_reply(page, content_type="text/html; charset=utf-8")
        if parts[:1] == ["static"]:
            return text_reply("/* static asset */\n")
        if parts[:3] == ["api", "v1", "products"]:
            return api(parts[3:], request)
        return not_found()

    return app
