"""A stand-in for the Prometheus pod of Istio's samples/addons: its HTTP API (/api/v1/query) over
what it scraped last, evaluating the PromQL the suites send (instant vector selectors, comparisons
with a number, timestamp(), `and`, vector(time())) as Prometheus does, refusing anything else with
400 bad_data. It keeps its own clock, minutes off this machine's, and when it scraped each pod, so
a test can play its scrapes."""

import hashlib
import json
import operator
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any



# Prometheus's clock against this machine's: a cluster's nodes may be minutes off the test host.
CLOCK_SKEW = -7 * 60.0
# How far back an instant query looks for a series' latest sample (prometheus docs/querying/basics.md,
# "Staleness": --query.lookback-delta, 5m).
LOOKBACK = 300.0


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]  # __name__ among them
    value: float
    scraped: float | None = None  # its timestamp by Prometheus's clock; None: its pod's last scrape



_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_SELECTOR = re.compile(rf"\s*({_NAME})?\s*(?:\{{(.*)\}})?\s*")
_TIME = re.compile(r"\s*vector\s*\(\s*time\s*\(\s*\)\s*\)\s*")
_TIMESTAMP = re.compile(r"\s*timestamp\s*\((_*)\)\s*")  # on the masked query: one call around it all
_AND = re.compile(r"\sand\s")
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)")
_NUMBER = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*")
_COMPARE = {"==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt,
            "<": operator.lt}
UNSUPPORTED = ("unsupported or malformed expression (the stand-in knows instant vector selectors, a comparison "
               "of one with a number, timestamp(), `and` and vector(time()))")

# An expression the stand-in evaluates: ("selector", matchers), ("timestamp", expr),
# ("compare", operator, number, expr) or ("and", left, right).
Expr = tuple[Any, ...]
# An instant vector as evaluated: (labels, value, the sample's own time).
Element = tuple[dict[str, str], float, float]


def _selector(query: str) -> list[tuple[str, str, str]] | str:
    """An instant vector selector's matchers (the metric name as __name__), or why it does not parse."""
    whole = _SELECTOR.fullmatch(query)
    if not query.strip() or whole is None:
        return UNSUPPORTED
    name, body = whole.groups()
    matchers = [("__name__", "=", name)] if name else []
    rest = body or ""
    while rest.strip():
        m = _MATCHER.match(rest)
        if m is None:
            return f"unexpected {rest.strip()[:20]!r} in label matching"
        matchers.append((m[1], m[2], m[3].replace('\\"', '"').replace("\\\\", "\\")))
        rest = rest[m.end():]
    return matchers if matchers else "vector selector must contain at least one non-empty matcher"


def _masked(query: str) -> str:
    """`query` with its quoted strings and whatever is inside brackets blanked to "_": what is
    left is its top level, where its operators are."""
    out, depth, quoted, escaped = [], 0, False, False
    for ch in query:
        if quoted:
            out.append("_")
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
            out.append("_")
        elif ch in "({[":
            depth += 1
            out.append(ch if depth == 1 else "_")
        elif ch in ")}]":
            depth -= 1
            out.append(ch if depth == 0 else "_")
        else:
            out.append(ch if depth == 0 else "_")
    return "".join(out)


def _parse(query: str) -> Expr | str:
    """The expression, or why the stand-in cannot evaluate it (as Prometheus's parser says it)."""
    masked = _masked(query)
    if (found := _AND.search(masked)) is not None:
        left, right = _parse(query[:found.start()]), _parse(query[found.end():])
        return left if isinstance(left, str) else right if isinstance(right, str) else ("and", left, right)
    if (found := _COMPARISON.search(masked)) is not None:
        number, inner = _NUMBER.fullmatch(query[found.end():]), _parse(query[:found.start()])
        if number is None:  # `bool`, or a vector on the right
            return UNSUPPORTED
        return inner if isinstance(inner, str) else ("compare", found[1], float(number[1]), inner)
    if (found := _TIMESTAMP.fullmatch(masked)) is not None:
        inner = _parse(query[found.start(1):found.end(1)])
        return inner if isinstance(inner, str) else ("timestamp", inner)
    matchers = _selector(query)
    return matchers if isinstance(matchers, str) else ("selector", matchers)


def _without_name(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != "__name__"}


def _matches(labels: Mapping[str, str], matchers: Sequence[tuple[str, str, str]]) -> bool:
    def one(label: str, op: str, value: str) -> bool:
        have = labels.get(label, "")  # an absent label matches as the empty string
        if op in ("=", "!="):
            return (have == value) == (op == "=")
        return bool(re.fullmatch(value, have)) == (op == "=~")  # anchored, as in PromQL
    return all(one(*m) for m in matchers)


def _pod_of(labels: Mapping[str, str]) -> tuple[str, str] | None:
    return (labels["namespace"], labels["pod"]) if "namespace" in labels and "pod" in labels else None


def _vector(result: list[dict[str, Any]]) -> tuple[int, Any]:
    return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


@dataclass
class Prometheus:
    """Prometheus `major` (2 or 3) answering /api/v1/query at its `clock` over what it scraped last
    (`samples`, and `up` of each pod stamped with its last scrape: `scrapes`, else when the stand-in
    started) in its HTTP API's shape (prometheus docs/querying/api.md): {"status": "success", "data":
    {"resultType": "vector", "result": [{"metric": {...}, "value": [time, "number"]}]}}. It evaluates
    instant vector selectors; a comparison of one with a number (a filter keeping the metric name);
    timestamp(), the metric name dropped, of a selector each sample's own time and of anything else
    the evaluation time, as PromQL does (promql/engine.go keeps sample times for a VectorSelector
    only); `a and b` (a's samples whose labels but the name are b's) and vector(time()); anything
    else is 400 bad_data; `refusal` (status, errorType, error) refuses every query. A failed scrape
    (`scrape(ok=False)`) sets the pod's `up` to 0 and marks its series stale: no query returns them
    until a scrape succeeds. 3.x stores a histogram's `le` normalized as a float, "1" becoming
    "1.0" (prometheus/prometheus docs/migration.md, "le and quantile label values"); 2.x as scraped."""

    major: int = 3
    samples: list[Sample] = field(default_factory=list)
    refusal: tuple[int, str, str] | None = None
    asked: list[str] = field(default_factory=list)
    # Seconds since the epoch; it moves only by advance(), as a test plays it.
    clock: float = field(default_factory=lambda: float(int(time.time() + CLOCK_SKEW)))
    scrapes: dict[tuple[str, str], float] = field(default_factory=dict)  # (namespace, pod): last scrape
    failed: set[tuple[str, str]] = field(default_factory=set)  # pods whose last scrape failed
    # Called with each query before it is answered: where a test plays what Prometheus does meanwhile.
    on_query: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        self.started = self.clock
        self._lock = threading.Lock()  # the server answers on its own threads

    def advance(self, seconds: float) -> float:
        with self._lock:
            self.clock += seconds
            return self.clock

    def scrape(self, ns: str, pod: str, samples: Sequence[Sample] | None = None, at: float | None = None,
               ok: bool = True) -> None:
        """Prometheus scrapes `pod` of `ns` at `at` (its clock's now): the pod's series become those
        of `samples` that carry its namespace and pod labels, when given; or the scrape fails."""
        with self._lock:
            self.scrapes[(ns, pod)] = self.clock if at is None else at
            (self.failed.discard if ok else self.failed.add)((ns, pod))
            if samples is not None:
                self.samples = [*(s for s in self.samples if _pod_of(s.labels) != (ns, pod)),
                                *(s for s in samples if _pod_of(s.labels) == (ns, pod))]

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if path != "/api/v1/query":
            return 404, b"404 page not found\n"
        promql = (query.get("query") or [""])[0]
        self.asked.append(promql)
        if self.on_query is not None:
            self.on_query(promql)
        if self.refusal is not None:
            status, kind, error = self.refusal
            return status, {"status": "error", "errorType": kind, "error": error}
        with self._lock:
            return self._evaluate(promql)

    def _evaluate(self, promql: str) -> tuple[int, Any]:
        at = self.clock
        if _TIME.fullmatch(promql):
            return _vector([{"metric": {}, "value": [_seconds(at), _number(at)]}])
        expr = _parse(promql)
        if isinstance(expr, str):
            return 400, {"status": "error", "errorType": "bad_data",
                         "error": f'invalid parameter "query": 1:1: parse error: {expr}'}
        result = [{"metric": labels, "value": [_seconds(at), _number(value)]} for labels, value, _ in self._vector(expr)]
        if len({json.dumps(r["metric"], sort_keys=True) for r in result}) < len(result):
            return 422, {"status": "error", "errorType": "execution",
                         "error": "vector cannot contain metrics with the same labelset"}
        return _vector(result)

    def _vector(self, expr: Expr) -> list[Element]:
        at, kind = self.clock, expr[0]
        if kind == "selector":  # the latest sample of each series within the lookback window
            return [(labels, value, t) for labels, value, t in self._held()
                    if _matches(labels, expr[1]) and at - LOOKBACK < t <= at]
        if kind == "timestamp":
            own_times = expr[1][0] == "selector"
            return [(_without_name(labels), t if own_times else at, at) for labels, _, t in self._vector(expr[1])]
        if kind == "compare":
            _, op, number, inner = expr
            return [e for e in self._vector(inner) if _COMPARE[op](e[1], number)]
        right = {json.dumps(_without_name(labels), sort_keys=True) for labels, _, _ in self._vector(expr[2])}
        return [e for e in self._vector(expr[1]) if json.dumps(_without_name(e[0]), sort_keys=True) in right]

    def _held(self) -> list[Element]:
        """(labels as stored, value, timestamp) of every series: `samples` (but a pod's whose last
        scrape failed: stale), and `up` of each pod scraped."""
        pods = {pod: self.started for s in self.samples if (pod := _pod_of(s.labels)) is not None}
        pods.update(self.scrapes)
        def stamp(s: Sample) -> float:
            return pods.get(_pod_of(s.labels) or ("", ""), self.started) if s.scraped is None else s.scraped
        held = [(self._stored(s.labels), s.value, stamp(s)) for s in self.samples if _pod_of(s.labels) not in self.failed]
        return held + [({"__name__": "up", **target_labels(ns, pod)}, 0.0 if (ns, pod) in self.failed else 1.0, t)
                       for (ns, pod), t in pods.items()]

    def _stored(self, labels: Mapping[str, str]) -> dict[str, str]:
        le = labels.get("le")
        if self.major < 3 or le is None or le == "+Inf" or "e" in le or "." in le:
            return dict(labels)
        return {**labels, "le": f"{le}.0"}


def _number(value: float) -> str:
    """A sample's value as the API writes it (Go's strconv 'f' format, shortest: "20", "0.5")."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _seconds(at: float) -> float | int:
    """An evaluation time as the API writes it: seconds, to the millisecond, no fraction when whole."""
    return int(at) if float(at).is_integer() else round(at, 3)


def pod_name(workload: str) -> str:
    """The pod of a workload's one replica, as a Deployment names it (<name>-<template hash>-<suffix>)."""
    return f"{workload}-6c8f7d9b5-x2q4z"


def app_version(workload: str) -> tuple[str, str]:
    """A Bookinfo workload's app and version labels ("reviews-v2"); curl has no version label."""
    app, _, version = workload.rpartition("-")
    return (app, version) if re.fullmatch(r"v\d+", version) else (workload, "unknown")


def target_labels(ns: str, pod: str) -> dict[str, str]:
    """What Istio's Prometheus adds to each series of a pod it scrapes, `up` among them (istio/istio
    samples/addons/prometheus.yaml, job kubernetes-pods: the pod's labels, namespace, pod, node), and
    the target's instance: the pod's IP and the status port injection points it at (15020)."""
    app, version = app_version(pod.rsplit("-", 2)[0])
    ip = int(node_id(ns, pod)[:4], 16)
    labels = {"app": app, "namespace": ns, "pod": pod, "node": "kind-worker", "job": "kubernetes-pods",
              "instance": f"10.244.{(ip >> 8) % 4}.{ip % 250 + 2}:15020", "pod_template_hash": "6c8f7d9b5",
              "security_istio_io_tlsMode": "istio", "service_istio_io_canonical_name": app,
              "service_istio_io_canonical_revision": version if version != "unknown" else "latest"}
    if version != "unknown":
        labels["version"] = version
    return labels


def node_id(*parts: str) -> str:
    return hashlib.md5("|".join(parts).encode()).hexdigest()
