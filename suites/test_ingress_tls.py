"""MESH-INGRESS: HTTPS at the edge (IngressTLS)."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import pytest

from conformance import manifests
from conformance.checks import converge, decide, measure
from conformance.names import RUN_ID_LABEL
from conformance.probes.edge_tls import EdgeCA, HttpsProbe, tls_secret
from conformance.settings import RunSettings
from conformance.targets.base import Doc, Target
from conformance.verdicts import all_header, all_status
from conformance.verdicts.edge_tls import certificate_for, not_the_hosts_certificate, redirects_to_https
from conformance.fixtures.mesh import Bookinfo, Evidence

MANIFEST = "istio/ingress/bookinfo-gateway-tls.yaml"
HOST = "bookinfo-tls.meshconf.test"  # the host MANIFEST serves, over HTTPS and with a redirect over HTTP
OTHER_HOST = "unserved.meshconf.test"
PAGE_MARK = "Simple Bookstore App"
MEASURE = 20


@contextmanager
def applied_for_run(target: Target, docs: list[Doc], namespace: str) -> Iterator[None]:
    target.apply(docs, namespace)
    try:
        yield
    finally:
        target.delete(docs, namespace)


def with_credential(docs: list[Doc], credential: str) -> list[Doc]:
    """The manifest with its HTTPS servers' credentialName set to this run's Secret."""
    for gateway in (doc for doc in docs if doc["kind"] == "Gateway"):
        for server in gateway["spec"]["servers"]:
            if "credentialName" in (server.get("tls") or {}):
                server["tls"]["credentialName"] = credential
    return docs


@pytest.mark.feature("IngressTLS")
def test_ingress_tls(target: Target, bookinfo: Bookinfo, run_settings: RunSettings, run_suffix: str,
                     evidence: Evidence) -> None:
    ca = EdgeCA()
    ingress = target.https_ingress()
    credential = f"bookinfo-tls-{run_suffix}"
    secret = tls_secret(credential, ingress.namespace, {RUN_ID_LABEL: run_settings.run_id}, ca.issue(HOST))
    https = HttpsProbe(run_settings.timeouts.request)
    page = f"{ingress.url}/productpage"
    with (applied_for_run(target, [secret], ingress.namespace),
          applied_for_run(target, with_credential(manifests.load(MANIFEST), credential), bookinfo.namespace)):
        send = partial(https.send, page, HOST, ca.root_pem)
        converge(partial(send, 1), lambda b: all_status(b, 200, PAGE_MARK), run_settings.timeouts,
                 f"https://{HOST}/productpage answers through the gateway")
        pages = measure(partial(send, MEASURE, 4), f"{MEASURE} x GET https://{HOST}/productpage")
        answered = decide(all_status(pages, 200, PAGE_MARK))
        decide(all_header(pages, "server", "istio-envoy"))
        served = decide(certificate_for(https.handshake(ingress.url, HOST, ca.root_pem), HOST))
        # Not served by this Gateway: no certificate, or another server's on a shared port (a `*` host).
        unserved = decide(not_the_hosts_certificate(https.handshake(ingress.url, OTHER_HOST, ca.root_pem), HOST))
        outside = target.outside_client()
        plain = measure(partial(outside.send, page.replace(ingress.url, target.ingress_url()), 5, 1, {"Host": HOST}),
                        f"GET http://{HOST}/productpage")
        redirect = decide(redirects_to_https(plain, f"https://{HOST}/productpage"))
    evidence(f"https://{HOST}: {answered}; {served}; {unserved}; http://{HOST}: {redirect}")
