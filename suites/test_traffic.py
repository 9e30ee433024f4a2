"""MESH-TRAFFIC: routing, splitting, faults and timeouts, decided on observed replies."""

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import pytest

from conformance.checks import Split, attach_split_chart, check_split, converge, decide, measure, measure_split
from conformance.settings import RunSettings
from conformance.probes import envoy_stats
from conformance.targets.base import Batch, Client, Target
from conformance.verdicts.replies import ENVOY_TIMER_EARLY
from conformance.verdicts import SplitVerdict, Verdict, all_status, only_version, plan_split, run_split
from conformance.fixtures.mesh import PRODUCT_REVIEWS, PRODUCTPAGE, RATINGS, REVIEWS, Apply, Bookinfo, Evidence

HTTPBIN = "http://httpbin:8000"
JASON = {"end-user": "jason"}
RATINGS_DOWN = "Ratings service is currently unavailable"
# Without a route, reviews is spread over its three pods: the state every test starts from.
ROUND_ROBIN = {"v1": 1 / 3, "v2": 1 / 3, "v3": 1 / 3}


def reviews_split(docs: list[dict[str, Any]]) -> dict[str, float]:
    """The reviews weights a manifest declares: VirtualService subsets or HTTPRoute backends."""
    for doc in docs:
        if doc["metadata"]["name"] != "reviews":
            continue
        if doc["kind"] == "VirtualService":
            route = doc["spec"]["http"][-1]["route"]
            return {d["destination"]["subset"]: d.get("weight", 100) for d in route}
        if doc["kind"] == "HTTPRoute":
            refs = doc["spec"]["rules"][-1]["backendRefs"]
            return {r["name"].removeprefix("reviews-"): r.get("weight", 1) for r in refs}
    raise AssertionError("no reviews route in these manifests")


def split(client: Client, name: str, weights: Mapping[str, float], previous: Mapping[str, float]) -> Split:
    return Split(name=name, client=client, url=REVIEWS, weights=weights, previous=previous)


@pytest.mark.feature("RouteToVersion")
def test_route_to_version(applied: Apply, bookinfo: Bookinfo, run_settings: RunSettings, evidence: Evidence) -> None:
    applied("istio/traffic/destination-rule-all.yaml")
    v1 = reviews_split(applied("istio/traffic/virtual-service-all-v1.yaml"))
    first = check_split(split(bookinfo.client, "reviews -> v1", v1, ROUND_ROBIN), run_settings)
    v3 = reviews_split(applied("istio/traffic/virtual-service-reviews-v3.yaml"))
    second = check_split(split(bookinfo.client, "reviews -> v3", v3, v1), run_settings)
    evidence(f"{first.message}; {second.message}")


def check_progression(applied: Apply, client: Client, steps: Sequence[tuple[str, str]], settings: RunSettings,
                      title: str) -> list[str]:
    """Apply each step's manifest, converge, decide; one chart for all steps, drawn before any verdict."""
    previous: Mapping[str, float] = ROUND_ROBIN
    results: list[tuple[str, SplitVerdict]] = []
    for label, manifest in steps:
        weights = reviews_split(applied(manifest))
        verdict = measure_split(split(client, label, weights, previous), settings)
        results.append((label, verdict))
        previous = weights
        if not verdict.ok:
            break
    attach_split_chart(results, title)
    return [decide(verdict) for _, verdict in results]


@pytest.mark.feature("WeightedSplit")
def test_weighted_split(applied: Apply, bookinfo: Bookinfo, run_settings: RunSettings, evidence: Evidence) -> None:
    applied("istio/traffic/destination-rule-all.yaml")
    steps = [(name, f"istio/traffic/virtual-service-reviews-{name}.yaml")
             for name in ("80-20", "50-v3", "three-way")]
    evidence("; ".join(check_progression(applied, bookinfo.client, steps, run_settings, "weighted splits")))


@pytest.mark.feature("CanaryProgression")
def test_canary_progression(applied: Apply, bookinfo: Bookinfo, run_settings: RunSettings, evidence: Evidence) -> None:
    applied("istio/traffic/destination-rule-all.yaml")
    steps = [(f"v1/v3 {step}", f"istio/traffic/virtual-service-reviews-canary-{step}.yaml")
             for step in ("100-0", "90-10", "50-50", "0-100")]
    evidence("; ".join(check_progression(applied, bookinfo.client, steps, run_settings, "canary v1 -> v3")))


@pytest.mark.feature("MeshHTTPRouteWeights")
def test_mesh_httproute_weights(applied: Apply, bookinfo: Bookinfo, run_settings: RunSettings,
                                evidence: Evidence) -> None:
    applied("bookinfo/bookinfo-versions.yaml")
    weights = reviews_split(applied("gateway-api/traffic/httproute-reviews-80-20.yaml"))
    verdict = check_split(split(bookinfo.client, "HTTPRoute reviews 80/20", weights, ROUND_ROBIN), run_settings)
    evidence(verdict.message)


def login(client: Client, user: str) -> dict[str, str]:
    """productpage's real login; returns the session cookie as a request header."""
    reply = client.send("http://productpage:9080/login", method="POST", body=f"username={user}&passwd=password",
                        headers={"content-type": "application/x-www-form-urlencoded"}).replies[0]
    cookie = reply.headers.get("set-cookie", "")
    assert reply.status == 302 and cookie.startswith("session="), f"login as {user} failed: {reply}"
    return {"cookie": cookie.split(";", 1)[0]}


@pytest.mark.feature("HeaderMatchRouting")
def test_header_match_routing(applied: Apply, bookinfo: Bookinfo, run_settings: RunSettings,
                              evidence: Evidence) -> None:
    client = bookinfo.client
    applied("istio/traffic/destination-rule-all.yaml", "istio/traffic/virtual-service-all-v1.yaml",
            "istio/traffic/virtual-service-reviews-test-v2.yaml")
    n = plan_split({"v2": 100}).max_requests
    jason = partial(client.send, REVIEWS, n, 4, JASON)
    anyone = partial(client.send, REVIEWS, n, 4)
    converge(lambda: client.send(REVIEWS, 10, 1, JASON), lambda b: only_version(b, "v2"), run_settings.timeouts,
             "end-user: jason answered by v2")
    converge(lambda: client.send(REVIEWS, 10), lambda b: only_version(b, "v1"), run_settings.timeouts,
             "no end-user answered by v1")
    direct_jason = decide(only_version(measure(jason, f"{n} x reviews with end-user: jason"), "v2"))
    direct_other = decide(only_version(measure(anyone, f"{n} x reviews without end-user"), "v1"))
    cookie = login(client, "jason")
    page = partial(client.send, PRODUCTPAGE, n, 4, cookie)
    via_page = decide(only_version(measure(page, f"{n} x /productpage logged in as jason"), "v2"))
    anonymous = decide(only_version(measure(partial(client.send, PRODUCTPAGE, n, 4), f"{n} x /productpage anonymous"),
                                    "v1"))
    evidence(f"direct jason: {direct_jason}; direct others: {direct_other}; "
             f"productpage jason: {via_page}; productpage anonymous: {anonymous}")


def ratings_unavailable(batch: Batch) -> Verdict:
    """Every reviews reply (through productpage) says ratings could not be reached."""
    bad = [r for r in batch if r.status != 200 or RATINGS_DOWN not in r.body]
    if batch.replies and not bad:
        return Verdict(True, f"all {len(batch)} reviews replies report '{RATINGS_DOWN}'")
    return Verdict(False, f"expected '{RATINGS_DOWN}' in all {len(batch)} reviews replies, {len(bad)} lacked it; "
                          f"first: status {bad[0].status} {bad[0].body[:160]!r}")


@pytest.mark.feature("FaultInjection")
def test_fault_injection(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                         evidence: Evidence) -> None:
    client = bookinfo.client
    timeouts = run_settings.timeouts
    applied("istio/traffic/destination-rule-all.yaml", "istio/traffic/virtual-service-all-v1.yaml",
            "istio/traffic/virtual-service-reviews-test-v2.yaml", "istio/traffic/virtual-service-ratings-test-abort.yaml")
    n = plan_split({"aborted": 100}).max_requests
    aborted = partial(all_status, status=500, body_contains="fault filter abort")
    converge(lambda: client.send(RATINGS, 10, 1, JASON), aborted, timeouts, "ratings aborts for jason")
    abort = decide(aborted(measure(partial(client.send, RATINGS, n, 4, JASON), f"{n} x ratings as jason")))
    others = decide(all_status(measure(partial(client.send, RATINGS, n, 4), f"{n} x ratings as anyone"), 200))
    cookie = login(client, "jason")
    page = decide(ratings_unavailable(measure(partial(client.send, PRODUCT_REVIEWS, n, 4, cookie),
                                              f"{n} x productpage reviews API as jason")))
    delay = check_delay(applied, target, client, run_settings)
    evidence(f"abort for jason: {abort}; others: {others}; productpage: {page}; delay: {delay}")


def check_delay(applied: Apply, target: Target, client: Client, run_settings: RunSettings) -> str:
    """The delayed share is decided on the client proxy's own count of injected delays,
    and the delay itself is measured: as many replies as it delayed took at least the delay."""
    doc = applied("istio/traffic/virtual-service-httpbin-delay.yaml")[0]
    fault = doc["spec"]["http"][0]["fault"]["delay"]
    share = fault["percentage"]["value"] / 100
    delay = float(fault["fixedDelay"].removesuffix("ms")) / 1000
    early, margin = ENVOY_TIMER_EARLY, 0.1
    url = f"{HTTPBIN}/get"

    def delays_so_far() -> int:
        return envoy_stats.total(envoy_stats.parse(target.proxy_stats(client.name, client.namespace)),
                                 envoy_stats.OUTBOUND_DELAYS)

    def probe() -> Batch:
        return client.send(url, 40, 40)

    before = delays_so_far()
    converge(probe, lambda b: Verdict(delays_so_far() > before and all_status(b, 200).ok,
                                      f"{delays_so_far() - before} delays injected so far"),
             run_settings.timeouts, f"{share:.0%} of httpbin delayed")
    batches: list[tuple[Batch, int]] = []

    def send(count: int) -> dict[str, int]:
        start = delays_so_far()
        batch = client.send(url, count, count)
        delayed = delays_so_far() - start
        batches.append((batch, delayed))
        ok = sum(1 for r in batch if r.status == 200)
        return {"delayed": delayed, "not delayed": ok - delayed, "<error>": len(batch) - ok}

    verdict = run_split(send, plan_split({"delayed": share, "not delayed": 1 - share}))
    decide(verdict)
    slow = [r.elapsed for batch, delayed in batches
            for r in sorted(batch, key=lambda r: r.elapsed, reverse=True)[:delayed]]
    shortest, median = min(slow), sorted(slow)[len(slow) // 2]
    decide(Verdict(shortest >= delay - early and median <= delay + margin,
                   f"the {len(slow)} replies the proxy delayed took {shortest * 1000:.0f}-{max(slow) * 1000:.0f} ms, "
                   f"median {median * 1000:.0f} ms (configured {delay * 1000:.0f} ms; accepted "
                   f"{(delay - early) * 1000:.0f} ms or more, median up to {(delay + margin) * 1000:.0f} ms)"))
    return f"{verdict.message}; delayed replies {shortest * 1000:.0f}-{max(slow) * 1000:.0f} ms, median {median * 1000:.0f} ms"


@pytest.mark.feature("RequestTimeout")
def test_request_timeout(applied: Apply, bookinfo: Bookinfo, run_settings: RunSettings, evidence: Evidence) -> None:
    doc = applied("istio/traffic/virtual-service-httpbin-timeout.yaml")[0]
    timeout = float(doc["spec"]["http"][0]["timeout"].removesuffix("s"))
    upstream_delay = 4 * timeout
    early, margin = ENVOY_TIMER_EARLY, 0.25
    url = f"{HTTPBIN}/delay/{upstream_delay:g}"

    def timed_out(batch: Batch) -> Verdict:
        late = [r for r in batch if not timeout - early <= r.elapsed <= timeout + margin]
        status = all_status(batch, 504, "upstream request timeout")
        if status.ok and not late:
            slowest = max(r.elapsed for r in batch)
            return Verdict(True, f"all {len(batch)} replies 504 after at most {slowest:.3f}s "
                                 f"(timeout {timeout:g}s, upstream delay {upstream_delay:g}s)")
        times = ", ".join(f"{r.status} in {r.elapsed:.3f}s" for r in list(batch)[:5])
        return Verdict(False, f"expected 504 within {timeout - early:g}-{timeout + margin:g}s for a {upstream_delay:g}s "
                              f"upstream delay; got {times}")

    converge(lambda: bookinfo.client.send(url, 1), timed_out, run_settings.timeouts, "route timeout in force")
    verdict = decide(timed_out(measure(partial(bookinfo.client.send, url, 10, 10), f"10 x GET {url}")))
    evidence(verdict)
