"""MESH-SECURITY: mutual TLS with workload identities, enforced as PeerAuthentication and
DestinationRule say, and authorization decided per request; judged on what the clients got, what
the server saw (httpbin echoes X-Forwarded-Client-Cert) and the server proxy's counters.

Each check converges on the new policy's effect before it measures, and after removing a policy
waits until its effect is gone, so that no check is satisfied by the previous one's policy."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from urllib.parse import urlsplit

import pytest

from conformance import manifests
from conformance.checks import converge, decide, measure
from conformance.load import ContinuousLoad
from conformance.names import RUN_ID_LABEL, spiffe_id
from conformance.probes import envoy_stats
from conformance.settings import RunSettings
from conformance.targets.base import Batch, Client, Target
from conformance.verdicts import Verdict, all_status
from conformance.verdicts.security import (NO_CHAIN, CounterChange, counters, denied, identity, none_failed,
                                           plaintext_seen, refused, upstream_failed)
from conformance.fixtures.mesh import Apply, Bookinfo, Evidence

COUNT = 10  # requests per client per check: every one is decided


def headers_url(bookinfo: Bookinfo, path: str = "/headers") -> str:
    return f"http://httpbin.{bookinfo.namespace}:8000{path}"


def identities(bookinfo: Bookinfo) -> tuple[str, str]:
    """The injected curl's identity and httpbin's, as SPIFFE ids."""
    return spiffe_id(bookinfo.namespace, "curl"), spiffe_id(bookinfo.namespace, "httpbin")


def refusals(target: Target, bookinfo: Bookinfo) -> int:
    """httpbin's proxy's count of connections no filter chain took (plaintext on a STRICT port)."""
    return envoy_stats.total(envoy_stats.parse(target.proxy_stats("httpbin", bookinfo.namespace)), NO_CHAIN)


def plaintext_answered(bookinfo: Bookinfo, settings: RunSettings, why: str) -> None:
    """Wait until the legacy client is answered in plaintext again: no policy refuses it any more."""
    converge(partial(bookinfo.legacy.send, headers_url(bookinfo), 1), plaintext_seen, settings.timeouts, why)


def strict_holds(bookinfo: Bookinfo, target: Target, settings: RunSettings, scope: str) -> str:
    """Under STRICT: the legacy client gets no answer, the injected one 200 with its identity seen by
    the server, and the server's proxy counted one refused connection per legacy request."""
    url = headers_url(bookinfo)
    client_id, server_id = identities(bookinfo)
    converge(partial(bookinfo.legacy.send, url, 1), refused, settings.timeouts, f"{scope} STRICT refuses plaintext")
    converge(partial(bookinfo.client.send, url, 1), lambda b: identity(b, client_id, server_id), settings.timeouts,
             f"{scope} STRICT: the injected client is answered, its identity seen")
    before = refusals(target, bookinfo)
    legacy = measure(partial(bookinfo.legacy.send, url, COUNT), f"{COUNT} x GET {url} from the legacy client")
    injected = measure(partial(bookinfo.client.send, url, COUNT), f"{COUNT} x GET {url} from the injected client")
    counted = CounterChange("no_filter_chain_match", before, refusals(target, bookinfo), COUNT)
    verdicts = [decide(refused(legacy)), decide(identity(injected, client_id, server_id)),
                decide(counters([counted], "httpbin's proxy"))]
    return f"{scope}: " + "; ".join(verdicts)


@contextmanager
def mesh_wide_strict(target: Target, settings: RunSettings, run_suffix: str) -> Iterator[None]:
    """The mesh-wide STRICT policy, under a name of this run's and labelled with its id (a cluster's
    own mesh-wide policy is never replaced), removed on every path."""
    [doc] = manifests.load("security/pa-mesh-strict.yaml")
    metadata = {**doc["metadata"], "name": f"{doc['metadata']['name']}-{run_suffix}",
                "labels": {RUN_ID_LABEL: settings.run_id}}
    docs = [{**doc, "metadata": metadata}]
    namespace = metadata["namespace"]
    target.apply(docs, namespace)
    try:
        yield
    finally:
        target.delete(docs, namespace)


@pytest.mark.feature("MutualTLSStrict")
def test_mutual_tls_strict(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                           run_suffix: str, evidence: Evidence) -> None:
    namespace_wide = applied("security/pa-strict.yaml")
    proofs = [strict_holds(bookinfo, target, run_settings, "namespace")]
    target.delete(namespace_wide, bookinfo.namespace)
    plaintext_answered(bookinfo, run_settings, "the namespace's STRICT is gone")
    with mesh_wide_strict(target, run_settings, run_suffix):
        proofs.append(strict_holds(bookinfo, target, run_settings, "mesh-wide"))
    plaintext_answered(bookinfo, run_settings, "the mesh-wide STRICT is gone")
    evidence(" | ".join(proofs))


@pytest.mark.feature("MutualTLSPermissive")
def test_mutual_tls_permissive(applied: Apply, bookinfo: Bookinfo, run_settings: RunSettings,
                               evidence: Evidence) -> None:
    # PERMISSIVE is also what a workload gets without any policy: here it must win, as httpbin's
    # own policy, over its namespace's STRICT.
    applied("security/pa-strict.yaml", "security/pa-httpbin-permissive.yaml")
    url = headers_url(bookinfo)
    client_id, server_id = identities(bookinfo)
    plaintext_answered(bookinfo, run_settings, "httpbin's PERMISSIVE answers plaintext under a STRICT namespace")
    converge(partial(bookinfo.client.send, url, 1), lambda b: identity(b, client_id, server_id),
             run_settings.timeouts, "PERMISSIVE: the injected client's identity is seen")
    legacy = measure(partial(bookinfo.legacy.send, url, COUNT), f"{COUNT} x GET {url} from the legacy client")
    injected = measure(partial(bookinfo.client.send, url, COUNT), f"{COUNT} x GET {url} from the injected client")
    evidence("; ".join([decide(plaintext_seen(legacy)), decide(identity(injected, client_id, server_id))]))


@pytest.mark.feature("MutualTLSMigration")
def test_mutual_tls_migration(applied: Apply, bookinfo: Bookinfo, run_settings: RunSettings,
                              evidence: Evidence) -> None:
    url = headers_url(bookinfo)
    applied("security/pa-permissive.yaml")
    plaintext_answered(bookinfo, run_settings, "PERMISSIVE answers plaintext")
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
    plaintext_answered(bookinfo, run_settings, "port 8080 DISABLE under a STRICT namespace answers plaintext")
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


@pytest.mark.feature("DestinationRuleTLS")
def test_destination_rule_tls(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                              evidence: Evidence) -> None:
    url, ns = headers_url(bookinfo), bookinfo.namespace
    client = partial(bookinfo.client.send, url)
    client_id, server_id = identities(bookinfo)
    proofs = []
    # Toward a STRICT server: DISABLE fails, ISTIO_MUTUAL succeeds.
    strict = applied("security/pa-strict.yaml")
    disable = applied("security/dr-httpbin-tls-disable.yaml")
    converge(partial(client, 1), upstream_failed, run_settings.timeouts, "tls DISABLE toward a STRICT server fails")
    proofs.append("STRICT server, DISABLE: " + decide(upstream_failed(measure(partial(client, COUNT),
                                                                              f"{COUNT} x GET {url}, DISABLE"))))
    target.delete(disable, ns)
    mutual = applied("security/dr-httpbin-istio-mutual.yaml")
    converge(partial(client, 1), lambda b: all_status(b, 200), run_settings.timeouts,
             "tls ISTIO_MUTUAL toward a STRICT server succeeds")
    proofs.append("STRICT server, ISTIO_MUTUAL: " + decide(identity(
        measure(partial(client, COUNT), f"{COUNT} x GET {url}, ISTIO_MUTUAL"), client_id, server_id)))
    target.delete(mutual, ns)
    target.delete(strict, ns)
    # Toward a plaintext-only server, where auto mTLS would send plaintext: ISTIO_MUTUAL must fail.
    applied("security/pa-disable.yaml")
    converge(partial(client, 1), plaintext_seen, run_settings.timeouts, "auto mTLS sends plaintext to DISABLE")
    applied("security/dr-httpbin-istio-mutual.yaml")
    converge(partial(client, 1), upstream_failed, run_settings.timeouts,
             "tls ISTIO_MUTUAL toward a plaintext-only server fails")
    proofs.append("DISABLE server, ISTIO_MUTUAL: " + decide(upstream_failed(
        measure(partial(client, COUNT), f"{COUNT} x GET {url}, ISTIO_MUTUAL toward DISABLE"))))
    evidence(" | ".join(proofs))


def expected(allowed: bool) -> Callable[[Batch], Verdict]:
    return partial(all_status, status=200) if allowed else denied


@pytest.mark.feature("AuthorizationPolicy")
def test_authorization_policy(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                              evidence: Evidence) -> None:
    ns = bookinfo.namespace
    applied("security/curl-intruder.yaml")
    target.wait_ready(ns)
    intruder = target.client("curl-intruder", ns)
    headers, ip, status = headers_url(bookinfo), headers_url(bookinfo, "/ip"), headers_url(bookinfo, "/status/200")
    proofs = []

    def phase(manifest: str, checks: list[tuple[Client, str, bool]], name: str) -> None:
        docs = applied(manifest)
        # Every client converges on its own: a proxy's pooled connection accepted under the
        # previous policy answers one more request under it (Envoy drains a changed filter chain).
        for client, url, allowed in checks:
            converge(partial(client.send, url, 1), expected(allowed), run_settings.timeouts,
                     f"{name} takes effect for {client.name} GET {urlsplit(url).path}")
        results = []
        for client, url, allowed in checks:
            batch = measure(partial(client.send, url, COUNT), f"{COUNT} x GET {url} from {client.name}")
            verdict = decide(expected(allowed)(batch))
            results.append(f"{client.name} GET {urlsplit(url).path}: {verdict}")
        proofs.append(f"{name}: " + "; ".join(results))
        target.delete(docs, ns)
        # Gone before the next policy: what it denied is answered again.
        for client, url, allowed in checks:
            if not allowed:
                converge(partial(client.send, url, 1), expected(True), run_settings.timeouts,
                         f"{name} is lifted for {client.name} GET {urlsplit(url).path}")

    # Only the curl service account may GET /headers: other paths, other identities and no
    # identity (the legacy client, in plaintext: the namespace is PERMISSIVE) are denied.
    phase("security/authz-allow-curl-headers.yaml",
          [(bookinfo.client, headers, True), (bookinfo.client, ip, False), (intruder, headers, False),
           (bookinfo.legacy, headers, False)], "ALLOW by principal")
    phase("security/authz-deny-status.yaml",
          [(bookinfo.client, status, False), (intruder, status, False), (bookinfo.client, headers, True),
           (intruder, headers, True)], "DENY by path")
    productpage = f"http://productpage.{ns}:9080/productpage"
    for manifest, name in (("security/authz-deny-all.yaml", "namespace-wide deny-all"),
                           ("security/authz-allow-nothing.yaml", "allow-nothing")):
        phase(manifest, [(bookinfo.client, headers, False), (bookinfo.client, productpage, False),
                         (intruder, headers, False)], name)
    evidence(" | ".join(proofs))
