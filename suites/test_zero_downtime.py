"""MESH-TRAFFIC under load: configuration changes that must not cost a request.

The load is the injected curl client's, back to back (conformance/load.py); each reply's start on
the client's clock is placed against the moments the harness changed something
(conformance/verdicts/zero_downtime.py).
"""

from functools import partial

import pytest

from conformance.checks import converge, decide
from conformance.fixtures.mesh import PRODUCT_REVIEWS, REVIEWS, Apply, Bookinfo, Evidence
from conformance.load import ContinuousLoad
from conformance.settings import RunSettings
from conformance.targets.base import Target
from conformance.verdicts import only_version
from conformance.verdicts.zero_downtime import blue_green, no_failures_during, timeline

# BlueGreen's load goes through productpage, as users' requests do: the switch must reach the proxy
# that routes productpage's calls to reviews, not only the test client's.
# Requests per batch of the load, one at a time: each starts after the previous one ended.
LOAD_BATCH = 5
# Batches of the load before a change and after its convergence: a state seen, not glimpsed.
SETTLED_BATCHES = 3
PROBE = 10
# The change ConfigChangeUnderLoad applies in one Target.apply, the route FIRST as given: ordering
# them (make-before-break) is the target's job.
NEW_SUBSET_AND_ROUTE = ("istio/traffic/virtual-service-reviews-v3.yaml", "zero-downtime/dr-reviews-v1-v3.yaml")
BLUE, GREEN = "v1", "v3"


@pytest.mark.feature("ConfigChangeUnderLoad")
def test_config_change_under_load(applied: Apply, bookinfo: Bookinfo, target: Target, run_settings: RunSettings,
                                  evidence: Evidence) -> None:
    client = bookinfo.client
    applied("zero-downtime/dr-reviews-v1.yaml", "zero-downtime/vs-reviews-v1.yaml")
    converge(partial(client.send, REVIEWS, PROBE), lambda b: only_version(b, "v1"), run_settings.timeouts,
             "reviews answered by v1, the only subset")
    with ContinuousLoad(partial(client.send, REVIEWS, LOAD_BATCH)) as load:
        load.wait_for_batches(SETTLED_BATCHES)
        added = load.mark("subset v3 and its route applied")
        change = applied(*NEW_SUBSET_AND_ROUTE)
        converge(partial(client.send, REVIEWS, PROBE), lambda b: only_version(b, "v3"), run_settings.timeouts,
                 "reviews answered by the new subset v3")
        load.wait_for_batches(SETTLED_BATCHES)
        load.mark("subset v3 and its route deleted")
        target.delete(change, bookinfo.namespace)
        load.wait_for_batches(SETTLED_BATCHES)
    evidence(decide(no_failures_during(timeline(load.batches, load.windows), added,
                                       "reviews under load while subset v3 and its route were added, then deleted")))


@pytest.mark.feature("BlueGreen")
def test_blue_green(applied: Apply, bookinfo: Bookinfo, run_settings: RunSettings, evidence: Evidence) -> None:
    client = bookinfo.client
    applied("zero-downtime/dr-reviews-v1-v3.yaml", "zero-downtime/vs-reviews-v1.yaml")
    probe = partial(client.send, PRODUCT_REVIEWS, PROBE)
    converge(probe, lambda b: only_version(b, BLUE), run_settings.timeouts, f"productpage's reviews: blue ({BLUE})")
    with ContinuousLoad(partial(client.send, PRODUCT_REVIEWS, LOAD_BATCH)) as load:
        load.wait_for_batches(SETTLED_BATCHES)
        change = load.mark("reviews switched to green")
        applied("istio/traffic/virtual-service-reviews-v3.yaml")
        accepted = load.mark("the switch accepted")
        converge(probe, lambda b: only_version(b, GREEN), run_settings.timeouts,
                 f"productpage's reviews: green ({GREEN})")
        load.wait_for_batches(SETTLED_BATCHES)
    switch = blue_green(timeline(load.batches, load.windows), change, accepted, BLUE, GREEN,
                        run_settings.timeouts.consistency, f"productpage's reviews from blue {BLUE} to green {GREEN}")
    evidence(decide(switch.verdict))
