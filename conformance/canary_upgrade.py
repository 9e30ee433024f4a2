"""MeshUpgrade's procedure: a canary upgrade by revisions under continuous load (istio.io
docs/setup/upgrade/canary), each step a Target operation, timed.

The old Istio runs as a revision beside the mesh under test; a namespace of workloads injected by it
moves to the mesh's own revision by its istio.io/rev label, its workloads restart, and the old
revision is removed, while a client of the mesh keeps sending to those workloads. The suite decides
on what this returns; the procedure itself only stops early when the starting state is not what an
upgrade starts from (the workloads are not on the old revision).
"""

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial

import allure

from conformance.checks import converge, decide
from conformance.errors import ConformanceError
from conformance.load import ContinuousLoad
from conformance.mesh_upgrade import revision_name
from conformance.names import DEFAULT_REVISION, ISTIO_REV
from conformance.phases import Phases
from conformance.settings import Timeouts
from conformance.targets.base import Client, Target
from conformance.verdicts import all_status
from conformance.verdicts.upgrade import on_revision, proxy_seen
from conformance.verdicts.zero_downtime import no_failures_during, timeline
from conformance.waiting import Verdict, converged

# conformance.mesh_upgrade.UPGRADE_MANIFEST's Deployment and Service, and the Service's port.
SERVER, SERVER_PORT = "httpbin", 8000
LOAD_BATCH = 5  # requests per batch of the load, one after another
SETTLED_BATCHES = 3  # batches of the load between two steps: each state seen, not glimpsed
PROBE = 10


@dataclass(frozen=True)
class Outcome:
    served: Verdict  # every request of the load answered 200
    after: Verdict  # every pod on the mesh's revision and Istio once the old one is gone
    steps: Phases

    def describe(self) -> str:
        return f"{self.served.message}; steps: {self.steps}"


def proxies_on(target: Target, namespace: str, revision: str, version: str, stage: str) -> Verdict:
    """The server's ready pods (not those a rollout is terminating) on `revision` and Istio `version`;
    a pod gone between the listing and the read is a state still changing, not a verdict."""
    pods = [p for p in target.pods(namespace) if p.labels.get("app") == SERVER and p.ready and not p.terminating]
    seen = []
    for pod in pods:
        try:
            seen.append(proxy_seen(pod, target.proxy_config(pod.name, namespace)))
        except ConformanceError as exc:
            return Verdict(False, f"{stage}: cannot read pod {pod.name}'s proxy: {exc}")
    return on_revision(seen, revision, version, stage)


def upgrade_under_load(target: Target, client: Client, deploy: Callable[[str], object],
                       namespace: Callable[[str, Mapping[str, str]], str], old_version: str, new_version: str,
                       timeouts: Timeouts) -> Outcome:
    """`deploy(ns)` applies UPGRADE_MANIFEST in ns; `namespace(prefix, labels)` makes a namespace for
    the test (the suites' fixtures do both, and remove what they made)."""
    old, new = revision_name(old_version), DEFAULT_REVISION
    steps = Phases()
    with ExitStack() as installed:
        with allure.step(f"install Istio {old_version} as revision {old}"), steps(f"revision {old} installed"):
            old_plane = installed.enter_context(target.revision(old, old_version))
        ns = namespace("upgrade", {ISTIO_REV: old})
        with allure.step(f"deploy {SERVER} on revision {old}"), steps(f"{SERVER} deployed on it"):
            deploy(ns)
            target.wait_ready(ns, first_pull=True)  # the old Istio's proxy image is new to the cluster
        decide(proxies_on(target, ns, old, old_version, "before the upgrade"))
        url = f"http://{SERVER}.{ns}:{SERVER_PORT}/status/200"
        converge(partial(client.send, url, PROBE), lambda b: all_status(b, 200), timeouts,
                 f"{url} answers {client.namespace}/{client.name}")
        with ContinuousLoad(partial(client.send, url, LOAD_BATCH)) as load:
            load.wait_for_batches(SETTLED_BATCHES)
            began = load.mark("the upgrade begins")
            with allure.step(f"move {ns} to {ISTIO_REV}={new}"), steps(f"namespace moved to {ISTIO_REV}={new}"):
                target.relabel_namespace(ns, {ISTIO_REV: new})
            with allure.step(f"restart {ns}'s workloads"), steps(f"{SERVER} restarted"):
                target.restart_workloads(ns)
            load.wait_for_batches(SETTLED_BATCHES)
            with allure.step(f"wait for every {SERVER} pod on {new}"), steps(f"every pod on revision {new}"):
                converged(partial(proxies_on, target, ns, new, new_version, "after the restart"), timeouts,
                          f"{SERVER} pods on revision {new}")
            with allure.step(f"remove revision {old}"), steps(f"revision {old} removed"):
                old_plane.remove()
            load.wait_for_batches(SETTLED_BATCHES)
    served = no_failures_during(timeline(load.batches, load.windows), began,
                                f"{url} while Istio {old_version} was upgraded to {new_version}")
    return Outcome(served, proxies_on(target, ns, new, new_version, "after the upgrade"), steps)
