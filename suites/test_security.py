"""MESH-SECURITY: mutual TLS with workload identities, enforced as PeerAuthentication and
DestinationRule say, and authorization decided per request; judged on what the clients got, what
the server saw (httpbin echoes X-Forwarded-Client-Cert) and the server proxy's counters."""

from functools import partial

import pytest

from conformance.checks import converge, decide, measure
from conformance.load import ContinuousLoad
from conformance.names import spiffe_id
from conformance.probes import envoy_stats
from conformance.settings import RunSettings
from conformance.targets.base import Batch, Client, Target
from conformance.verdicts import all_status
from conformance.verdicts.security import (CounterChange, counters, denied, identity, plaintext_seen, refused)
from conformance.waiting import Verdict
from conformance.fixtures.mesh import Apply, Bookinfo, Evidence

COUNT = 10  # requests per client per check: every one is decided
# The server's proxy counters for TLS: a handshake per connection its sidecar clients open (a
# client proxy keeps its connections, so only the total says TLS was used), a connection without
# a matching filter chain per plaintext attempt on a STRICT port (each a new connection).
HANDSHAKES = r"listener\..*\.ssl\.handshake"
NO_CHAIN = r"listener\..*\.no_filter_chain_match"


def headers_url(bookinfo: Bookinfo, path: str = "/headers") -> str:
    return f"http://httpbin.{bookinfo.namespace}:8000{path}"


def server_counts(target: Target, bookinfo: Bookinfo) -> dict[str, int]:
    stats = envoy_stats.parse(target.proxy_stats("httpbin", bookinfo.namespace))
    return {"ssl.handshake": envoy_stats.total(stats, HANDSHAKES),
            "no_filter_chain_match": envoy_stats.total(stats, NO_CHAIN)}


def strict_holds(bookinfo: Bookinfo, target: Target, settings: RunSettings, scope: str) -> str:
    """Under STRICT: the legacy client gets no answer, the injected one 200 with its identity
    seen by the server, and the server's proxy counted both."""
    url, ns = headers_url(bookinfo), bookinfo.namespace
    converge(partial(bookinfo.legacy.send, url, 1), refused, settings.timeouts, f"{scope} STRICT refuses plaintext")
    client_id, server_id = spiffe_id(ns, "curl"), spiffe_id(ns, "httpbin")
    converge(partial(bookinfo.client.send, url, 1), lambda b: identity(b, client_id, server_id), settings.timeouts,
             f"{scope} STRICT: the injected client is answered, its identity seen")
    before = server_counts(target, bookinfo)
    legacy = measure(partial(bookinfo.legacy.send, url, COUNT), f"{COUNT} x GET {url} from the legacy client")
    injected = measure(partial(bookinfo.client.send, url, COUNT), f"{COUNT} x GET {url} from the injected client")
    after = server_counts(target, bookinfo)
    verdicts = [
        decide(refused(legacy)),
        decide(identity(injected, client_id, server_id)),
        decide(counters([CounterChange("ssl.handshake since the proxy started", 0, after["ssl.handshake"], 1),
                         CounterChange("no_filter_chain_match", before["no_filter_chain_match"],
                                       after["no_filter_chain_match"], COUNT)], "httpbin's proxy")),
    ]
    return f"{scope}: " + "; ".join(verdicts)


@pytest.mark.feature("MutualTLSStrict")
def test_mutual_tls_strict(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                           evidence: Evidence) -> None:
    proofs = []
    for manifest, scope in (("security/pa-strict.yaml", "namespace"), ("security/pa-mesh-strict.yaml", "mesh-wide")):
        docs = applied(manifest)
        proofs.append(strict_holds(bookinfo, target, run_settings, scope))
        target.delete(docs, bookinfo.namespace)  # one scope at a time
    evidence(" | ".join(proofs))


@pytest.mark.feature("MutualTLSPermissive")
def test_mutual_tls_permissive(applied: Apply, bookinfo: Bookinfo, run_settings: RunSettings,
                               evidence: Evidence) -> None:
    applied("security/pa-permissive.yaml")
    url, ns = headers_url(bookinfo), bookinfo.namespace
    client_id, server_id = spiffe_id(ns, "curl"), spiffe_id(ns, "httpbin")
    converge(partial(bookinfo.legacy.send, url, 1), plaintext_seen, run_settings.timeouts,
             "PERMISSIVE answers plaintext")
    converge(partial(bookinfo.client.send, url, 1), lambda b: identity(b, client_id, server_id),
             run_settings.timeouts, "PERMISSIVE: the injected client's identity is seen")
    legacy = measure(partial(bookinfo.legacy.send, url, COUNT), f"{COUNT} x GET {url} from the legacy client")
    injected = measure(partial(bookinfo.client.send, url, COUNT), f"{COUNT} x GET {url} from the injected client")
    evidence("; ".join([decide(plaintext_seen(legacy)), decide(identity(injected, client_id, server_id))]))


def none_failed(batches: list[Batch], what: str) -> Verdict:
    replies = [r for b in batches for r in b]
    failed = [r for r in replies if r.status != 200]
    if replies and not failed:
        return Verdict(True, f"all {len(replies)} requests {what} answered 200")
    first = f"; first: status {failed[0].status} {failed[0].error or failed[0].body[:100]!r}" if failed else ""
    return Verdict(False, f"{len(failed)} of {len(replies)} requests {what} failed{first}")


@pytest.mark.feature("MutualTLSMigration")
def test_mutual_tls_migration(applied: Apply, bookinfo: Bookinfo, run_settings: RunSettings,
                              evidence: Evidence) -> None:
    url = headers_url(bookinfo)
    applied("security/pa-permissive.yaml")
    converge(partial(bookinfo.legacy.send, url, 1), plaintext_seen, run_settings.timeouts,
             "PERMISSIVE answers plaintext")
    with ContinuousLoad(partial(bookinfo.client.send, url, 5)) as load:
        load.wait_for_batches(2)
        applied("security/pa-strict.yaml")
        converge(partial(bookinfo.legacy.send, url, 1), refused, run_settings.timeouts,
                 "STRICT refuses plaintext")
        load.wait_for_batches(2)
    during = decide(none_failed(load.batches, "from the injected client while PERMISSIVE became STRICT"))
    legacy = measure(partial(bookinfo.legacy.send, url, COUNT), f"{COUNT} x GET {url} from the legacy client")
    evidence(f"{during}; then {decide(refused(legacy))}")


@pytest.mark.feature("PortLevelMTLS")
def test_port_level_mtls(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                         evidence: Evidence) -> None:
    url = headers_url(bookinfo)
    proofs = []
    # STRICT namespace, httpbin's port 8080 DISABLE: plaintext reaches httpbin, no identity is seen.
    strict = applied("security/pa-strict.yaml", "security/pa-httpbin-port-disable.yaml")
    converge(partial(bookinfo.legacy.send, url, 1), plaintext_seen, run_settings.timeouts,
             "port 8080 DISABLE under a STRICT namespace answers plaintext")
    proofs.append("STRICT namespace, port 8080 DISABLE: " + decide(plaintext_seen(
        measure(partial(bookinfo.legacy.send, url, COUNT), f"{COUNT} x GET {url} from the legacy client"))))
    target.delete(strict, bookinfo.namespace)
    # The reverse: PERMISSIVE namespace, httpbin's port 8080 STRICT.
    applied("security/pa-permissive.yaml", "security/pa-httpbin-port-strict.yaml")
    converge(partial(bookinfo.legacy.send, url, 1), refused, run_settings.timeouts,
             "port 8080 STRICT under a PERMISSIVE namespace refuses plaintext")
    proofs.append("PERMISSIVE namespace, port 8080 STRICT: " + decide(refused(
        measure(partial(bookinfo.legacy.send, url, COUNT), f"{COUNT} x GET {url} from the legacy client"))))
    evidence(" | ".join(proofs))


def upstream_failed(batch: Batch) -> Verdict:
    """No 2xx: the server refused the client proxy's plaintext (Envoy answers 503 for a reset
    upstream connection)."""
    ok = [r for r in batch if 200 <= r.status < 300]
    seen = sorted({r.status for r in batch})
    if batch.replies and not ok:
        return Verdict(True, f"all {len(batch)} requests from {batch.client} failed (statuses {seen}: "
                             f"{batch.replies[0].body[:80]!r})")
    return Verdict(False, f"expected every request to fail, {len(ok)} of {len(batch)} were answered 2xx")


@pytest.mark.feature("DestinationRuleTLS")
def test_destination_rule_tls(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                              evidence: Evidence) -> None:
    url, ns = headers_url(bookinfo), bookinfo.namespace
    applied("security/pa-strict.yaml")
    disable = applied("security/dr-httpbin-tls-disable.yaml")
    converge(partial(bookinfo.client.send, url, 1), upstream_failed, run_settings.timeouts,
             "tls DISABLE toward a STRICT server fails")
    proofs = ["DISABLE: " + decide(upstream_failed(measure(partial(bookinfo.client.send, url, COUNT),
                                                           f"{COUNT} x GET {url}, tls DISABLE")))]
    target.delete(disable, ns)
    applied("security/dr-httpbin-istio-mutual.yaml")
    converge(partial(bookinfo.client.send, url, 1), lambda b: all_status(b, 200), run_settings.timeouts,
             "tls ISTIO_MUTUAL toward a STRICT server succeeds")
    proofs.append("ISTIO_MUTUAL: " + decide(identity(measure(partial(bookinfo.client.send, url, COUNT),
                                                             f"{COUNT} x GET {url}, tls ISTIO_MUTUAL"),
                                                     spiffe_id(ns, "curl"), spiffe_id(ns, "httpbin"))))
    evidence(" | ".join(proofs))


@pytest.mark.feature("AuthorizationPolicy")
def test_authorization_policy(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                              evidence: Evidence) -> None:
    ns = bookinfo.namespace
    applied("security/curl-intruder.yaml")
    target.wait_ready(ns)
    intruder = target.client("curl-intruder", ns)
    headers, ip, status = headers_url(bookinfo), headers_url(bookinfo, "/ip"), headers_url(bookinfo, "/status/200")
    proofs = []

    def phase(manifests: tuple[str, ...], checks: list[tuple[Client, str, bool]], name: str) -> None:
        docs = applied(*manifests)
        first_client, first_url, first_allowed = next(c for c in checks if not c[2])
        converge(partial(first_client.send, first_url, 1), denied, run_settings.timeouts, f"{name} takes effect")
        results = []
        for client, url, allowed in checks:
            batch = measure(partial(client.send, url, COUNT), f"{COUNT} x GET {url} from {client.name}")
            verdict = decide(all_status(batch, 200) if allowed else denied(batch))
            results.append(f"{client.name} GET {url.split(':8000', 1)[-1].split(':9080', 1)[-1]}: {verdict}")
        proofs.append(f"{name}: " + "; ".join(results))
        target.delete(docs, ns)

    # Only the curl service account may GET /headers: other paths, other identities and no
    # identity (the legacy client, in plaintext: the namespace is PERMISSIVE) are denied.
    phase(("security/authz-allow-curl-headers.yaml",),
          [(bookinfo.client, headers, True), (bookinfo.client, ip, False), (intruder, headers, False),
           (bookinfo.legacy, headers, False)], "ALLOW by principal")
    phase(("security/authz-deny-status.yaml",),
          [(bookinfo.client, status, False), (intruder, status, False), (bookinfo.client, headers, True)],
          "DENY by path")
    productpage = f"http://productpage.{ns}:9080/productpage"
    for manifest, name in (("security/authz-deny-all.yaml", "namespace-wide deny-all"),
                           ("security/authz-allow-nothing.yaml", "allow-nothing")):
        phase((manifest,), [(bookinfo.client, headers, False), (bookinfo.client, productpage, False),
                            (intruder, headers, False)], name)
    evidence(" | ".join(proofs))
