"""MESH-SECURITY's verdicts on replies shaped as the targets return them (curl's exit codes from a
cluster pod, go-httpbin's /headers echo), on both sides; and the continuous load behind
MutualTLSMigration."""

import json

import pytest

from conformance.errors import ConformanceError
from conformance.load import ContinuousLoad
from conformance.probes import curl_batch
from conformance.targets.base import Batch, Reply
from conformance.verdicts.security import (CounterChange, counters, denied, identity, none_failed, parse_xfcc,
                                           plaintext_seen, refused, upstream_failed)

CLIENT = "spiffe://cluster.local/ns/bookinfo/sa/curl"
SERVER = "spiffe://cluster.local/ns/bookinfo/sa/httpbin"
URL = "http://httpbin.bookinfo:8000/headers"


def echo(xfcc: str | None) -> str:
    """go-httpbin's /headers body: canonical header names, each a list of values."""
    headers = {"Host": ["httpbin.bookinfo:8000"]}
    if xfcc is not None:
        headers["X-Forwarded-Client-Cert"] = [xfcc]
    return json.dumps({"headers": headers})


def batch(*replies: Reply) -> Batch:
    return Batch(URL, "bookinfo/curl", tuple(replies))


def ok(body: str) -> Reply:
    return Reply(200, {}, body)


ISTIO_XFCC = f'By={SERVER};Hash=5e0f2b;Subject="";URI={CLIENT}'


def test_xfcc_elements_and_quoted_values() -> None:
    assert parse_xfcc(ISTIO_XFCC) == [{"By": SERVER, "Hash": "5e0f2b", "Subject": "", "URI": CLIENT}]
    two = f'By=spiffe://a;URI=spiffe://b,By={SERVER};Subject="CN=x,O=y;z";URI={CLIENT}'
    assert [e["URI"] for e in parse_xfcc(two)] == ["spiffe://b", CLIENT]
    assert parse_xfcc(two)[1]["Subject"] == "CN=x,O=y;z"


def test_a_reset_seen_by_curl_in_a_cluster_pod_is_a_refusal() -> None:
    output = "".join(
        f"@@meshconf {i} 56 000 0.004\n@@body\n\n@@error curl: (56) Recv failure: Connection reset by peer \n@@end\n"
        for i in (1, 2))
    verdict = refused(batch(*curl_batch.parse(output)))
    assert verdict.ok and "2 x curl exit 56: curl: (56) Recv failure: Connection reset by peer" in verdict.message
    answered = refused(batch(Reply(0, {}, "", error="reset"), ok(echo(None))))
    assert not answered.ok and "1 were answered" in answered.message
    assert not refused(batch()).ok


def test_identity_needs_the_clients_uri_and_the_servers_by_on_every_reply() -> None:
    assert identity(batch(ok(echo(ISTIO_XFCC)), ok(echo(ISTIO_XFCC))), CLIENT, SERVER).ok
    # Another client's identity, a missing header, and no answer: each counted.
    intruder = ISTIO_XFCC.replace("/sa/curl", "/sa/intruder")
    verdict = identity(batch(ok(echo(intruder)), ok(echo(None)), Reply(503, {}, "upstream connect error")),
                       CLIENT, SERVER)
    assert not verdict.ok and verdict.message.count("1 x") == 3
    assert "absent" in verdict.message and "sa/intruder" in verdict.message and "status 503" in verdict.message
    # The element the server's proxy appended is the last one.
    forwarded = f"By=spiffe://elsewhere;URI=spiffe://x,{ISTIO_XFCC}"
    assert identity(batch(ok(echo(forwarded))), CLIENT, SERVER).ok


def test_plaintext_means_no_client_certificate_reached_the_server() -> None:
    assert plaintext_seen(batch(ok(echo(None)), ok(echo(None)))).ok
    seen = plaintext_seen(batch(ok(echo(None)), ok(echo(ISTIO_XFCC))))
    assert not seen.ok and "1 were not" in seen.message


def test_denied_means_403_with_envoys_rbac_body() -> None:
    rbac = Reply(403, {}, "RBAC: access denied")
    assert denied(batch(rbac, rbac)).ok
    assert not denied(batch(rbac, ok(echo(None)))).ok
    assert not denied(batch(Reply(403, {}, "Forbidden"))).ok  # a 403 from the app is not Envoy's RBAC


def test_counters_must_reach_what_the_traffic_implies() -> None:
    assert counters([CounterChange("no_filter_chain_match", 4, 14, 10)], "httpbin's proxy").ok
    short = counters([CounterChange("no_filter_chain_match", 4, 9, 10)], "httpbin's proxy")
    assert not short.ok and "no_filter_chain_match +5 (at least 10)" in short.message


def test_continuous_load_keeps_every_batch_until_the_block_ends() -> None:
    calls: list[int] = []

    def send() -> Batch:
        calls.append(1)
        return batch(ok(echo(None)))

    with ContinuousLoad(send) as load:
        load.wait_for_batches(3)
    # The thread has ended: every batch it sent is kept, and it sends no more.
    assert len(load.batches) == len(calls) >= 3


def test_a_load_that_cannot_send_fails_the_block() -> None:
    def broken() -> Batch:
        raise ConformanceError("client pod gone")

    with pytest.raises(ConformanceError, match="the continuous load stopped: ConformanceError: client pod gone"):
        with ContinuousLoad(broken) as load:
            load.wait_for_batches(1)


def test_none_failed_counts_every_reply_of_every_batch() -> None:
    assert none_failed([batch(ok(""), ok("")), batch(ok(""))], "during the change").ok
    failed = none_failed([batch(ok("")), batch(Reply(503, {}, "upstream connect error"), ok(""))], "during it")
    assert not failed.ok and failed.message.startswith("1 of 3 requests during it failed; first: status 503")
    assert not none_failed([], "during it").ok


def test_upstream_failed_means_no_2xx_at_all() -> None:
    reset = Reply(503, {}, "upstream connect error or disconnect/reset before headers. reset reason: connection termination")
    verdict = upstream_failed(batch(reset, reset))
    assert verdict.ok and "connection termination" in verdict.message  # Envoy's whole reason, not cut
    assert not upstream_failed(batch(reset, ok(""))).ok
    assert not upstream_failed(batch()).ok
