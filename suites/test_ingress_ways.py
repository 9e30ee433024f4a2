"""MESH-INGRESS: the same Bookinfo page through a Gateway API Gateway and a Kubernetes Ingress, each
measured beside the Istio Gateway of test_ingress.py (status, and latency p50/p95 from the test host).
Each way measured is recorded for the reports' side-by-side comparison, before its statuses are judged."""

from collections.abc import Sequence
from functools import partial

import allure
import pytest

from conformance.checks import converge, decide, measure
from conformance.probes.latency import WayLatency, compare, way_latency, ways_table
from conformance.settings import RunSettings
from conformance.targets.base import Client, Target
from conformance.verdicts import all_status
from conformance.fixtures.mesh import Apply, Bookinfo, Evidence, RecordWay
from conformance.ingress_class import istio_ingress_class

ISTIO_GATEWAY_MANIFEST = "istio/ingress/bookinfo-gateway.yaml"
GATEWAY_API_MANIFEST = "gateway-api/ingress/bookinfo-gateway.yaml"
INGRESS_MANIFEST = "kubernetes/ingress/bookinfo-ingress.yaml"
HOST = "bookinfo.meshconf.test"  # the Istio Gateway's and the Gateway API listener's host
INGRESS_HOST = "bookinfo-ingress.meshconf.test"  # the Ingress rule's host
OTHER_HOST = "unserved.meshconf.test"
GATEWAY = "bookinfo-gateway-api"  # the Gateway API Gateway of GATEWAY_API_MANIFEST
LISTENER_PORT = 8080  # its listener's port
PAGE_MARK = "Simple Bookstore App"
MEASURE = 20  # requests per way, one at a time, so that each latency is a request's alone
UNSERVED = 5


def measure_way(outside: Client, url: str, host: str, way: str, run_settings: RunSettings,
                record_way: RecordWay) -> WayLatency:
    """Converge on the page through one way in, then MEASURE requests, recorded: all 200 with the page."""
    send = partial(outside.send, url, headers={"Host": host})
    converge(partial(send, 1), lambda b: all_status(b, 200, PAGE_MARK), run_settings.timeouts,
             f"{host}/productpage answers through the {way}")
    pages = measure(partial(send, MEASURE, 1), f"{MEASURE} x GET {host}/productpage through the {way}")
    measured = way_latency(way, pages)
    record_way(measured)  # what was measured is reported, even when the check below fails
    decide(all_status(pages, 200, PAGE_MARK))
    return measured


def attach_ways(ways: Sequence[WayLatency]) -> None:
    allure.attach(ways_table(ways), name="ways in, side by side", attachment_type=allure.attachment_type.TEXT)


def unserved_host(outside: Client, url: str, way: str) -> str:
    """A host no route of that way serves gets 404."""
    replies = measure(partial(outside.send, url, UNSERVED, 1, {"Host": OTHER_HOST}),
                      f"GET {OTHER_HOST}/productpage through the {way}")
    return decide(all_status(replies, 404))


@pytest.mark.feature("GatewayAPIIngress")
def test_gateway_api_ingress(applied: Apply, target: Target, bookinfo: Bookinfo, run_settings: RunSettings,
                             evidence: Evidence, record_way: RecordWay) -> None:
    applied(ISTIO_GATEWAY_MANIFEST, GATEWAY_API_MANIFEST)
    outside = target.outside_client()
    with target.gateway_api_url(GATEWAY, bookinfo.namespace, LISTENER_PORT) as base:
        way = measure_way(outside, f"{base}/productpage", HOST, "Gateway API Gateway", run_settings, record_way)
        missing = unserved_host(outside, f"{base}/productpage", "Gateway API Gateway")
    reference = measure_way(outside, f"{target.ingress_url()}/productpage", HOST, "Istio Gateway", run_settings,
                            record_way)
    attach_ways([way, reference])  # in the order measured, as the reports list them
    evidence(f"{compare([reference, way])}; {OTHER_HOST} through the Gateway API Gateway: {missing}")


@pytest.mark.feature("KubernetesIngress")
def test_kubernetes_ingress(applied: Apply, target: Target, run_settings: RunSettings, evidence: Evidence,
                            record_way: RecordWay) -> None:
    outside = target.outside_client()
    url = f"{target.ingress_url()}/productpage"
    with istio_ingress_class(target, run_settings.run_id) as ingress_class:
        applied(ISTIO_GATEWAY_MANIFEST, INGRESS_MANIFEST)
        way = measure_way(outside, url, INGRESS_HOST, "Kubernetes Ingress", run_settings, record_way)
        missing = unserved_host(outside, url, "Kubernetes Ingress")
        reference = measure_way(outside, url, HOST, "Istio Gateway", run_settings, record_way)
    attach_ways([way, reference])  # in the order measured, as the reports list them
    evidence(f"{compare([reference, way])}; {OTHER_HOST} through the ingress gateway: {missing}; {ingress_class}")
