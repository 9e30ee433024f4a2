"""Revision-based injection decided per case: the revision whose injector patched the pod (its
sidecar.istio.io/status and istio.io/rev annotation) and the istiod its proxy reports connecting
to (the ProxyConfig discoveryAddress in the proxy's node metadata), against the revision chosen."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conformance.names import ISTIO_REV, SIDECAR_STATUS_ANNOTATION, discovery_address
from conformance.tables import render_table
from conformance.targets.base import PodView
from conformance.waiting import Verdict

BOOTSTRAP_DUMP = "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"


@dataclass(frozen=True)
class RevisionCase:
    name: str  # e.g. "namespace istio.io/rev=canary; pod without labels"
    revision: str  # the revision Istio's selectors choose


@dataclass(frozen=True)
class Observed:
    status_revision: str | None  # sidecar.istio.io/status "revision"
    annotation: str | None  # the istio.io/rev annotation the injector wrote
    discovery_address: str | None  # where the proxy says it gets its configuration


def node_metadata(config_dump: Mapping[str, Any]) -> Mapping[str, Any]:
    """The node metadata pilot-agent bootstrapped the proxy with (istio/istio pkg/model/proxy.go
    NodeMetadata), from Envoy's bootstrap config dump; empty when the dump has none."""
    for config in config_dump.get("configs") or ():
        if config.get("@type") == BOOTSTRAP_DUMP:
            return ((config.get("bootstrap") or {}).get("node") or {}).get("metadata") or {}
    return {}


def proxy_discovery_address(config_dump: Mapping[str, Any]) -> str | None:
    """The istiod a proxy's node metadata names (PROXY_CONFIG, which pilot-agent fills from the
    injected ProxyConfig)."""
    return (node_metadata(config_dump).get("PROXY_CONFIG") or {}).get("discoveryAddress")


def observe(pod: PodView, config_dump: Mapping[str, Any] | None) -> Observed:
    try:
        status = json.loads(pod.annotations.get(SIDECAR_STATUS_ANNOTATION) or "{}")
    except ValueError:
        status = {}
    return Observed(status.get("revision"), pod.annotations.get(ISTIO_REV),
                    proxy_discovery_address(config_dump) if config_dump is not None else None)


def _matches(case: RevisionCase, seen: Observed | None) -> bool:
    return seen is not None and (seen.status_revision, seen.annotation, seen.discovery_address) == (
        case.revision, case.revision, discovery_address(case.revision))


def revision_table(cases: Sequence[tuple[RevisionCase, Observed | None]]) -> Verdict:
    """Each case's injected pod against the revision chosen; the message is the table."""
    rows = []
    for case, seen in cases:
        if seen is None:
            shown = "no injected pod"
        else:
            shown = (f"status revision {seen.status_revision}, {ISTIO_REV} {seen.annotation}, "
                     f"proxy's istiod {seen.discovery_address}")
        rows.append((case.name, f"revision {case.revision} ({discovery_address(case.revision)})", shown,
                     "ok" if _matches(case, seen) else "WRONG"))
    table = render_table(("case", "expected", "observed", ""), rows)
    wrong = sum(r[3] != "ok" for r in rows)
    if wrong or not cases:
        return Verdict(False, f"{wrong} of {len(cases)} revision cases differ from Istio's revision selection:\n{table}")
    return Verdict(True, f"all {len(cases)} revision cases injected by the revision chosen:\n{table}")
