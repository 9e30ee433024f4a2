"""MeshUpgrade's procedure (conformance/canary_upgrade.py) driven against a scripted target: the order of
its steps under load, the verdicts a correct and a faulty upgrade get, and the old revision removed on
every path."""

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from conformance.canary_upgrade import SERVER, upgrade_under_load
from conformance.errors import ConformanceError, NotConverged
from conformance.names import ISTIO_REV, SIDECAR_STATUS_ANNOTATION, discovery_address
from conformance.settings import Timeouts
from conformance.targets.base import Batch, PodView, Reply
from conformance.verdicts.revisions import BOOTSTRAP_DUMP

OLD, NEW = "1.27.9", "1.28.10"
FAST = Timeouts(consistency=1.0, poll=0.01)


class Revision:
    def __init__(self, events: list[str]) -> None:
        self.name, self.events, self.removed = "1-27-9", events, False

    def remove(self) -> None:
        if not self.removed:
            self.removed = True
            self.events.append("old revision removed")


class UpgradeTarget:
    """A cluster as the procedure sees it: pods injected by whichever revision the namespace names
    when they were (re)started, and a client whose replies a scenario may turn into 503s."""

    def __init__(self, restart_moves: bool = True, restart_fails: bool = False, deploy_revision: str = "1-27-9") -> None:
        self.events: list[str] = []
        self.labels: dict[str, str] = {}
        self.pod_revision = ""
        self.generation = 0
        self.failing = 0  # the next this many requests answer 503
        self.restart_moves, self.restart_fails, self.deploy_revision = restart_moves, restart_fails, deploy_revision
        self.revisions: list[Revision] = []
        self.name, self.namespace = "curl", "bookinfo"

    @contextmanager
    def revision(self, name: str, version: str | None = None) -> Iterator[Revision]:
        assert (name, version) == ("1-27-9", OLD)
        handle = Revision(self.events)
        self.revisions.append(handle)
        self.events.append("old revision installed")
        try:
            yield handle
        finally:
            handle.remove()

    def make_namespace(self, prefix: str, labels: Mapping[str, str]) -> str:
        self.labels = dict(labels)
        return f"{prefix}-1"

    def deploy(self, namespace: str) -> None:
        self.pod_revision = self.deploy_revision

    def wait_ready(self, namespace: str, first_pull: bool = False) -> None:
        self.events.append(f"ready (first pull: {first_pull})")

    def relabel_namespace(self, name: str, labels: Mapping[str, str | None]) -> None:
        self.events.append(f"relabelled {dict(labels)}")
        self.labels.update({k: v for k, v in labels.items() if v is not None})

    def restart_workloads(self, namespace: str) -> list[str]:
        self.events.append("restarted")
        if self.restart_fails:
            raise ConformanceError("rollout in namespace upgrade-1 did not finish")
        self.generation += 1
        if self.restart_moves:
            self.pod_revision = self.labels[ISTIO_REV]
        return [SERVER]

    def pods(self, namespace: str) -> list[PodView]:
        status = json.dumps({"revision": self.pod_revision})
        return [PodView(f"{SERVER}-{self.generation}-{n}", namespace, {"app": SERVER},
                        {SIDECAR_STATUS_ANNOTATION: status}, (SERVER, "istio-proxy"), ("istio-init",), "10.0.0.9",
                        True, SERVER) for n in (1, 2)]

    def proxy_config(self, pod: str, namespace: str) -> dict[str, Any]:
        metadata = {"ISTIO_VERSION": OLD if self.pod_revision == "1-27-9" else NEW,
                    "PROXY_CONFIG": {"discoveryAddress": discovery_address(self.pod_revision)}}
        return {"configs": [{"@type": BOOTSTRAP_DUMP, "bootstrap": {"node": {"metadata": metadata}}}]}

    def send(self, url: str, count: int = 1, concurrency: int = 1, headers: Any = None, method: str = "GET",
             body: str | None = None) -> Batch:
        replies = []
        for _ in range(count):
            started = time.time()
            time.sleep(0.001)  # a request's own time on the wire
            status = 503 if self.failing > 0 else 200
            self.failing -= 1
            replies.append(Reply(status, {}, "", started=started, elapsed=time.time() - started))
        if self.events and self.events[-1] == "old revision removed" and "load after removal" not in self.events:
            self.events.append("load after removal")
        return Batch(url, "bookinfo/curl", tuple(replies))


def run(target: UpgradeTarget):  # type: ignore[no-untyped-def]
    return upgrade_under_load(target, target, target.deploy, target.make_namespace, OLD, NEW, FAST)  # type: ignore[arg-type]


def test_a_correct_upgrade_serves_every_request_and_ends_on_the_new_revision() -> None:
    target = UpgradeTarget()
    outcome = run(target)
    assert outcome.served.ok and outcome.after.ok, outcome.describe()
    assert target.events == ["old revision installed", "ready (first pull: True)", "relabelled {'istio.io/rev': 'default'}",
                             "restarted", "old revision removed", "load after removal"]
    assert list(outcome.steps.seconds) == ["revision 1-27-9 installed", "httpbin deployed on it",
                                           "namespace moved to istio.io/rev=default", "httpbin restarted",
                                           "every pod on revision default", "revision 1-27-9 removed"]
    assert outcome.describe().startswith(f"http://httpbin.upgrade-1:8000/status/200 while Istio {OLD} was upgraded to "
                                         f"{NEW}: none of ")
    assert "; steps: revision 1-27-9 installed in " in outcome.describe()


def test_requests_failed_during_the_restart_fail_the_upgrade_with_their_count() -> None:
    target = UpgradeTarget()
    restart = target.restart_workloads

    def dropping(namespace: str) -> list[str]:
        target.failing = 4
        return restart(namespace)

    target.restart_workloads = dropping  # type: ignore[method-assign]
    outcome = run(target)
    assert not outcome.served.ok
    assert " 4 of " in outcome.served.message and "requests failed" in outcome.served.message
    assert "status 503" in outcome.served.message


def test_workloads_the_restart_leaves_on_the_old_revision_never_converge_and_the_revision_is_removed() -> None:
    target = UpgradeTarget(restart_moves=False)
    with pytest.raises(NotConverged, match="httpbin pods on revision default"):
        run(target)
    assert target.revisions[0].removed


def test_a_failed_restart_still_removes_the_old_revision() -> None:
    target = UpgradeTarget(restart_fails=True)
    with pytest.raises(ConformanceError, match="did not finish"):
        run(target)
    assert target.events[-1] == "old revision removed"


def test_workloads_not_on_the_old_revision_stop_the_upgrade_before_any_step() -> None:
    target = UpgradeTarget(deploy_revision="default")
    with pytest.raises(AssertionError, match="before the upgrade: 2 of 2 pods not on revision 1-27-9"):
        run(target)
    assert "restarted" not in target.events and target.revisions[0].removed
