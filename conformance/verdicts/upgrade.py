"""MeshUpgrade's decisions on the upgraded workloads: which control plane injected each pod and which
Istio its proxy runs, before the namespace moves (all on the old revision) and after the restart (all
on the mesh's own)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conformance.names import discovery_address
from conformance.tables import render_table
from conformance.targets.base import PodView
from conformance.verdicts.revisions import node_metadata, observe
from conformance.waiting import Verdict


@dataclass(frozen=True)
class ProxySeen:
    pod: str
    revision: str | None  # sidecar.istio.io/status "revision": the injector that patched the pod
    istiod: str | None  # where the proxy gets its configuration (its node metadata)
    version: str | None  # the Istio its pilot-agent is (node metadata ISTIO_VERSION)


def proxy_seen(pod: PodView, config_dump: Mapping[str, Any]) -> ProxySeen:
    """A pod's proxy as its injection and its own bootstrap say (istio/istio pkg/model/proxy.go
    NodeMetadata ISTIO_VERSION, set by pkg/bootstrap/config.go SetIstioVersion)."""
    observed = observe(pod, config_dump)
    return ProxySeen(pod.name, observed.status_revision, observed.discovery_address,
                     node_metadata(config_dump).get("ISTIO_VERSION"))


def on_revision(seen: Sequence[ProxySeen], revision: str, version: str, stage: str) -> Verdict:
    """Every pod injected by `revision`, its proxy connected to that revision's istiod and running
    Istio `version`; the message is the table."""
    istiod = discovery_address(revision)
    rows = [(p.pod, p.revision or "-", p.istiod or "-", p.version or "-",
             "ok" if (p.revision, p.istiod, p.version) == (revision, istiod, version) else "WRONG") for p in seen]
    table = render_table(("pod", "injected by revision", "proxy's istiod", "proxy's Istio", ""), rows)
    wrong = sum(row[4] != "ok" for row in rows)
    expected = f"revision {revision} ({istiod}), Istio {version}"
    if wrong or not seen:
        return Verdict(False, f"{stage}: {wrong} of {len(seen)} pods not on {expected}:\n{table}")
    return Verdict(True, f"{stage}: all {len(seen)} pods on {expected}:\n{table}")
