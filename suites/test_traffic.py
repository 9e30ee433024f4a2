"""MESH-TRAFFIC: routing, splitting and faults, decided on observed replies."""

from functools import partial

import pytest

from conformance.checks import converge, decide, measure
from conformance.settings import RunSettings, Timeouts
from conformance.targets.base import Client
from conformance.verdicts import only_version
from fixtures.mesh import Apply, Bookinfo, Evidence

REVIEWS = "http://reviews:9080/reviews/0"
PROBE_BATCH = 10  # 3 batches in a row all from one version: (1/3)^30 by chance on round robin
MEASURE = 100


def route_holds(client: Client, version: str, timeouts: Timeouts) -> str:
    probe = partial(client.send, REVIEWS, PROBE_BATCH)
    converge(probe, lambda b: only_version(b, version), timeouts, f"reviews answers from {version} only")
    batch = measure(partial(client.send, REVIEWS, MEASURE, 4), f"{MEASURE} requests to reviews from {client.name}")
    return decide(only_version(batch, version))


@pytest.mark.feature("RouteToVersion")
def test_route_to_version(applied: Apply, bookinfo: Bookinfo, run_settings: RunSettings, evidence: Evidence) -> None:
    applied("istio/traffic/destination-rule-all.yaml")
    applied("istio/traffic/virtual-service-all-v1.yaml")
    v1 = route_holds(bookinfo.client, "v1", run_settings.timeouts)
    applied("istio/traffic/virtual-service-reviews-v3.yaml")
    v3 = route_holds(bookinfo.client, "v3", run_settings.timeouts)
    evidence(f"v1: {v1}; v3: {v3}")
