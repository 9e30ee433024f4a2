"""Shared helpers of the resilience tests: DestinationRule traffic policies and the upstream they
are tried on.

Test files import these from here; the rest of the shared helpers are in tests/builders.py and
tests/envoy_builders.py.
"""

from collections.abc import Sequence
from typing import Any

from tests.builders import ISTIO_API, NS, metadata

# Istio's circuit-breaking task (istio.io docs/tasks/traffic-management/circuit-breaking).
TASK_POOL = {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1}}
WEB_CLUSTER = f"outbound|9080||web.{NS}.svc.cluster.local"


def traffic_rule(host: str, policy: dict, subsets: Sequence[str] = (), namespace: str = NS) -> dict:
    spec: dict[str, Any] = {"host": host, "trafficPolicy": policy}
    if subsets:
        spec["subsets"] = [{"name": s, "labels": {"version": s}} for s in subsets]
    return {"apiVersion": ISTIO_API, "kind": "DestinationRule", "metadata": metadata(host, namespace), "spec": spec}
