"""Mutant switch-drops-requests: a configuration change restarts the proxies it changed abruptly.

Istio never does this: istiod pushes over xDS and Envoy swaps its listeners and routes in place,
draining what it replaces (pilot/pkg/xds). The mutant is the agent that would instead kill Envoy
and start it again on every change: the connections it held are reset and new ones are refused
until it listens again, which a zero-downtime check must see as failed requests.
"""

import signal
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from conformance.targets.local.envoy import EnvoyProxy
from conformance.targets.local.processes import Supervisor
from conformance.targets.local.xds.sync import SYNCED
from conformance.waiting import wait_for

# The API groups whose objects are mesh configuration (not workloads): their change is what restarts.
CONFIG_GROUPS = ("networking.istio.io/", "security.istio.io/", "gateway.networking.k8s.io/")
# How long a restarted Envoy may take to listen and take its configuration again.
RESTART_TIMEOUT = 30.0


def changes_config(docs: Sequence[Mapping[str, Any]]) -> bool:
    return any(str(d.get("apiVersion", "")).startswith(CONFIG_GROUPS) for d in docs)


def restart_abruptly(proxies: Sequence[EnvoyProxy], changed: Collection[str], supervisor: Supervisor) -> list[str]:
    """SIGKILL each running Envoy of `changed` (node ids) and start it again; return once each is
    live and has ACKed its configuration again. Returns the names of the proxies restarted."""
    restarted = [p for p in proxies if p.node_id in changed and p.child is not None and p.child.alive()]
    for proxy in restarted:
        assert proxy.child is not None
        proxy.child.process.send_signal(signal.SIGKILL)
        proxy.child.process.wait()
        supervisor.stop(proxy.child)  # already dead: only forgets it
        proxy.start(supervisor)

    def pending() -> str | None:
        waiting = [p.name for p in restarted
                   if not (p.live() and (status := p.sync_status()) and set(status.values()) == {SYNCED})]
        return f"restarted Envoys not ready: {', '.join(waiting)}" if waiting else None

    wait_for(pending, RESTART_TIMEOUT, 0.05, "Envoys restarted by mutant switch-drops-requests")
    return [p.name for p in restarted]
