"""On the local mesh, for real: a route sent before its subset is seen as failed requests (Istio's
503 NC pitfall), so ConfigChangeUnderLoad's check can fail; the same change given to the target in
one apply, the route first, costs none (make-before-break)."""

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from conformance import manifests
from conformance.load import ContinuousLoad
from conformance.settings import RunSettings
from conformance.targets.local.objects import namespace_doc
from conformance.targets.local.target import LocalTarget
from conformance.verdicts.zero_downtime import no_failures_during, timeline
from tests.builders import WHOLE_MESH, mesh_processes

pytestmark = WHOLE_MESH
NS = "zd"
REVIEWS = "http://reviews:9080/reviews/0"
ROUTE = manifests.load("istio/traffic/virtual-service-reviews-v3.yaml")
SUBSET = manifests.load("zero-downtime/dr-reviews-v1-v3.yaml")
BEFORE = manifests.load("zero-downtime/dr-reviews-v1.yaml") + manifests.load("zero-downtime/vs-reviews-v1.yaml")


@pytest.fixture
def target(tmp_path: Path) -> Iterator[LocalTarget]:
    """reviews v1 and v3 behind their Service, and the curl client, routed to v1 with a v1-only subset."""
    local = LocalTarget(RunSettings(target="local", run_id="zd", work_dir=tmp_path))
    local.up()
    try:
        local.apply([namespace_doc(NS, {"istio-injection": "enabled"})], NS)
        reviews = [d for d in manifests.load("bookinfo/bookinfo.yaml")
                   if d["metadata"]["name"] in ("reviews", "bookinfo-reviews", "reviews-v1", "reviews-v3")]
        local.apply(reviews + manifests.load("clients/curl.yaml"), NS)
        local.wait_ready(NS)
        local.apply(BEFORE, NS)
        yield local
    finally:
        local.down()
    assert mesh_processes(str(tmp_path)) == []


def test_the_route_before_its_subset_is_seen_as_503_nc_and_make_before_break_is_not(target: LocalTarget) -> None:
    client = target.client("curl", NS)
    with ContinuousLoad(partial(client.send, REVIEWS, 5)) as load:
        load.wait_for_batches(2)
        wrong = load.mark("the route, then the subset, in separate applies")
        assert target.mesh is not None
        target.mesh.apply(ROUTE, NS)  # the mesh itself: no ordering, the route alone
        load.wait_for_batches(3)
        target.mesh.apply(SUBSET, NS)
        load.wait_for_batches(2)
    verdict = no_failures_during(timeline(load.batches, load.windows), wrong, "route before subset")
    assert not verdict.ok
    # Envoy's local reply for a route to a cluster it does not have: 503, empty body (flag NC).
    assert "requests failed, relative to the change: #" in verdict.message and "status 503 ''" in verdict.message

    target.apply(BEFORE, NS)
    with ContinuousLoad(partial(client.send, REVIEWS, 5)) as load:
        load.wait_for_batches(2)
        right = load.mark("the route and the subset in one target apply")
        target.apply(ROUTE + SUBSET, NS)  # the route first as given: the target orders them
        load.wait_for_batches(3)
    verdict = no_failures_during(timeline(load.batches, load.windows), right, "make-before-break")
    assert verdict.ok, verdict.message
    served = {r.served_by.split("-")[1] for b in load.batches[-2:] for r in b if r.served_by}
    assert served == {"v3"}  # the change took effect
