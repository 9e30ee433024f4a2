"""MESH-INGRESS: exposing Bookinfo through the ingress gateway."""

from functools import partial

import pytest

from conformance.checks import converge, decide, measure
from conformance.settings import RunSettings
from conformance.targets.base import Target
from conformance.verdicts import all_header, all_status
from conformance.fixtures.mesh import Apply, Evidence

HOST = "bookinfo.meshconf.test"  # the host manifests/istio/ingress/bookinfo-gateway.yaml serves
OTHER_HOST = "unserved.meshconf.test"
PAGE_MARK = "Simple Bookstore App"
MEASURE = 20


@pytest.mark.feature("IngressGateway")
def test_ingress_gateway(applied: Apply, target: Target, run_settings: RunSettings, evidence: Evidence) -> None:
    applied("istio/ingress/bookinfo-gateway.yaml")
    url = f"{target.ingress_url()}/productpage"
    outside = target.outside_client()
    send = partial(outside.send, url, headers={"Host": HOST})
    converge(partial(send, 1), lambda b: all_status(b, 200, PAGE_MARK), run_settings.timeouts,
             f"{HOST}/productpage answers through the gateway")
    pages = measure(partial(send, MEASURE, 4), f"{MEASURE} x GET {HOST}/productpage")
    page = decide(all_status(pages, 200, PAGE_MARK))
    decide(all_header(pages, "server", "istio-envoy"))
    unserved = measure(partial(outside.send, url, 5, 1, {"Host": OTHER_HOST}), f"GET {OTHER_HOST}/productpage")
    missing = decide(all_status(unserved, 404))
    evidence(f"{HOST}: {page}; {OTHER_HOST}: {missing}")
