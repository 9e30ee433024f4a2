"""Mutual TLS and authorization decided on what clients saw: refusals with what the client got,
the identities the server saw (httpbin's echo of X-Forwarded-Client-Cert), the server proxy's
TLS counters, and 403s with Envoy's RBAC body on exactly the requests a policy denies."""

import json
from collections import Counter
from dataclasses import dataclass

from conformance.targets.base import Batch, Reply
from conformance.verdicts.replies import describe
from conformance.waiting import Verdict

XFCC = "X-Forwarded-Client-Cert"
# A server proxy's refusals of plaintext on a STRICT port: a connection no filter chain matches
# (Envoy's listener stat; on Istio the virtual inbound listener's, listener.0.0.0.0_15006.*).
NO_CHAIN = r"listener\..*\.no_filter_chain_match"
# Envoy's RBAC filter's body for a denied request (envoyproxy/envoy
# source/extensions/filters/http/rbac/rbac_filter.cc).
RBAC_DENIED = "RBAC: access denied"
def parse_xfcc(value: str) -> list[dict[str, str]]:
    """X-Forwarded-Client-Cert: elements separated by ",", each `Key=value` pairs separated by ";",
    a value in double quotes when it holds those separators (envoyproxy/envoy docs
    configuration/http/http_conn_man/headers.rst, x-forwarded-client-cert)."""
    elements, pairs, key, token, quoted = [], {}, None, "", False
    for char in value + ",":
        if char == '"':
            quoted = not quoted
        elif char == "=" and not quoted and key is None:
            key, token = token.strip(), ""
        elif char in ";," and not quoted:
            if key is not None:
                pairs[key] = token
            key, token = None, ""
            if char == ",":
                if pairs:
                    elements.append(pairs)
                pairs = {}
        else:
            token += char
    return elements


def seen_xfcc(reply: Reply) -> str | None:
    """The XFCC header httpbin's /headers echoes back (its value list joined), None when absent."""
    try:
        headers = json.loads(reply.body).get("headers", {})
    except (ValueError, AttributeError):
        return None
    values = headers.get(XFCC) or headers.get(XFCC.lower())
    if values is None:
        return None
    return ",".join(values) if isinstance(values, list) else str(values)


def refused(batch: Batch) -> Verdict:
    """No reply is an HTTP answer (a reset, a closed connection, a TLS failure): what each got."""
    answered = [r for r in batch if r.status != 0]
    got = Counter(r.error or "no error text" for r in batch if r.status == 0)
    shown = "; ".join(f"{n} x {e[:120]}" for e, n in got.most_common(3))
    if len(batch) > 0 and not answered:
        return Verdict(True, f"all {len(batch)} requests from {batch.client} got no HTTP answer ({shown})")
    return Verdict(False, f"expected no HTTP answer to any of {len(batch)} requests from {batch.client}, "
                          f"{len(answered)} were answered; {describe(batch)}")


def identity(batch: Batch, client: str, server: str) -> Verdict:
    """Every reply 200, and the server saw the client's certificate: XFCC's last element (the one
    the server's proxy appended) says URI=<client> and By=<server>."""
    wrong: Counter[str] = Counter()
    for reply in batch:
        value = seen_xfcc(reply) if reply.status == 200 else None
        last = parse_xfcc(value)[-1] if value else {}
        if reply.status != 200:
            wrong[f"status {reply.status} {reply.error or ''}".strip()] += 1
        elif (last.get("URI"), last.get("By")) != (client, server):
            wrong[f"{XFCC}: {value or 'absent'}"] += 1
    if len(batch) > 0 and not wrong:
        return Verdict(True, f"all {len(batch)} replies 200 from {batch.client}, the server saw URI={client} "
                             f"By={server}")
    shown = "; ".join(f"{n} x {w[:200]}" for w, n in wrong.most_common(3))
    return Verdict(False, f"expected {len(batch)} replies 200 whose {XFCC} says URI={client} By={server}; "
                          f"{sum(wrong.values())} did not: {shown}")


def plaintext_seen(batch: Batch) -> Verdict:
    """Every reply 200 and no client certificate reached the server (no XFCC)."""
    bad = [r for r in batch if r.status != 200 or seen_xfcc(r) is not None]
    if len(batch) > 0 and not bad:
        return Verdict(True, f"all {len(batch)} replies 200 from {batch.client}, without {XFCC}")
    example = bad[0] if bad else None
    detail = f"; first: status {example.status}, {XFCC} {seen_xfcc(example)}" if example else ""
    return Verdict(False, f"expected {len(batch)} replies 200 without {XFCC}, {len(bad)} were not{detail}")


def none_failed(batches: list[Batch], what: str) -> Verdict:
    """Every request of a continuous load answered 200."""
    replies = [r for b in batches for r in b]
    failed = [r for r in replies if r.status != 200]
    if replies and not failed:
        return Verdict(True, f"all {len(replies)} requests {what} answered 200")
    first = f"; first: status {failed[0].status} {failed[0].error or failed[0].body!r}" if failed else ""
    return Verdict(False, f"{len(failed)} of {len(replies)} requests {what} failed{first}")


def upstream_failed(batch: Batch) -> Verdict:
    """No reply 2xx: the server refused what the client's proxy sent (Envoy answers 503 for a reset
    upstream connection)."""
    ok = [r for r in batch if 200 <= r.status < 300]
    seen = sorted({r.status for r in batch})
    if batch.replies and not ok:
        return Verdict(True, f"all {len(batch)} requests from {batch.client} failed (statuses {seen}: "
                             f"{batch.replies[0].body!r})")
    return Verdict(False, f"expected every request to fail, {len(ok)} of {len(batch)} were answered 2xx")


def denied(batch: Batch) -> Verdict:
    """Every reply 403 with Envoy's RBAC body."""
    bad = [r for r in batch if r.status != 403 or RBAC_DENIED not in r.body]
    if len(batch) > 0 and not bad:
        return Verdict(True, f"all {len(batch)} requests from {batch.client} to {batch.url} denied: 403 {RBAC_DENIED!r}")
    return Verdict(False, f"expected all {len(batch)} requests from {batch.client} to {batch.url} denied with 403 "
                          f"{RBAC_DENIED!r}, {len(bad)} were not; {describe(batch)}")


@dataclass(frozen=True)
class CounterChange:
    """How a proxy counter moved over a check, and the least the traffic sent implies."""

    name: str
    before: int
    after: int
    at_least: int

    @property
    def increase(self) -> int:
        return self.after - self.before


def counters(changes: list[CounterChange], who: str) -> Verdict:
    """The server proxy's own counters agree with what the clients saw."""
    short = [c for c in changes if c.increase < c.at_least]
    text = ", ".join(f"{c.name} +{c.increase} (at least {c.at_least})" for c in changes)
    if short:
        return Verdict(False, f"{who}'s counters disagree with the clients: {text}")
    return Verdict(True, f"{who}'s counters agree: {text}")
