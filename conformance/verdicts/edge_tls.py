"""Decisions on TLS at the edge: the certificate a server name gets, and HTTP's redirect to HTTPS."""

from conformance.probes.edge_tls import Handshake
from conformance.targets.base import Batch
from conformance.verdicts.replies import describe
from conformance.waiting import Verdict


def certificate_for(handshake: Handshake, host: str) -> Verdict:
    """The server name got a certificate whose DNS SANs are exactly `host`, verified against the
    test CA for that name (chain and host name)."""
    if handshake.presented and handshake.verified and handshake.dns_names == (host,):
        return Verdict(True, f"{handshake.describe()}, signed by the test CA")
    return Verdict(False, f"expected a certificate for {host} verified against the test CA; {handshake.describe()}")


def not_the_hosts_certificate(handshake: Handshake, host: str) -> Verdict:
    """A server name the test's Gateway does not serve does not get `host`'s certificate (one the
    test CA signed, or one naming `host`). No certificate passes (no filter chain matches), and so
    does another server's: on a shared gateway port a server with host `*` serves any name."""
    if not handshake.presented:
        return Verdict(True, f"{handshake.describe()}: no filter chain serves it")
    if handshake.from_ca or host in handshake.dns_names:
        return Verdict(False, f"SNI {handshake.server_name} got {host}'s certificate, which only {host} may get; "
                              f"{handshake.describe()}")
    return Verdict(True, f"{handshake.describe()}: another server's certificate, not {host}'s")


def redirects_to_https(batch: Batch, location: str) -> Verdict:
    """Every reply a 301 to `location`."""
    seen = sorted({f"{r.status} {r.headers.get('location', '<no location>')}" for r in batch})
    if len(batch) > 0 and seen == [f"301 {location}"]:
        return Verdict(True, f"all {len(batch)} replies 301 to {location}")
    return Verdict(False, f"expected all {len(batch)} replies 301 to {location}; seen {seen}; {describe(batch)}")
