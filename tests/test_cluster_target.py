"""The cluster target's own logic with a recording Kube and provisioner (no cluster here).

Traffic runs for real: the fake exec runs the batch script with this machine's
sh and curl against a local httpbin, so one send() is one exec of the real script.
"""

import subprocess
from pathlib import Path

import pytest

from conformance.errors import ConformanceError, NotConverged
from conformance.settings import RunSettings, Timeouts
from conformance.targets.base import PodView
from conformance.targets.cluster import MESH_WIDE_FEATURE, ClusterAccess, ClusterTarget
from conformance.targets.istio_revision import REVISION_FEATURE
from conformance.targets.kube import ExecResult, Kube
from tests.cluster_builders import write_kubeconfig
from tests.fakeapi import FakeApi, items

CURL = PodView("curl-7d9f-abcde", "ns", {"app": "curl"}, {}, ("curl", "istio-proxy"), ("istio-init",),
               "10.0.0.5", True, "curl")


class FakeKube:
    def __init__(self, kubeconfig: Path, context: str | None, timeouts: object) -> None:
        self.calls: list[tuple] = []

    def exec(self, pod: str, namespace: str, container: str, command: list[str], timeout: float) -> ExecResult:
        self.calls.append(("exec", pod, container, command[:2] if command[0] == "sh" else command))
        if command[0] == "sh":
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            return ExecResult(done.stdout, done.stderr, done.returncode)
        return ExecResult("cluster.outbound|8000||httpbin.ns.svc.cluster.local.upstream_rq_pending_overflow: 3\n",
                          "", 0)

    def pods(self, namespace: str) -> list[PodView]:
        return [CURL]

    def create_namespace(self, name: str, labels: dict) -> None:
        self.calls.append(("create_namespace", name, dict(labels)))

    def delete_namespace(self, name: str, run_id: str) -> None:
        self.calls.append(("delete_namespace", name, run_id))

    def close(self) -> None:
        self.calls.append(("close",))


class FakeProvisioner:
    name = "kind"

    def __init__(self, fail: bool = False, kubeconfig: Path = Path("/tmp/kubeconfig")) -> None:
        self.fail, self.events, self.kubeconfig = fail, [], kubeconfig

    def up(self) -> ClusterAccess:
        self.events.append("up")
        if self.fail:
            raise ConformanceError("istioctl install did not finish within 300s")
        return ClusterAccess(self.kubeconfig, None, "http://127.0.0.1:8080", "1.34.0", "1.28.0")

    def down(self) -> None:
        self.events.append("down")

    def collect_debug(self, directory: Path, namespaces=(), applied=None) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("debug", tuple(namespaces), len(applied or [])))

    def phases(self) -> dict:
        return {}


def target(provisioner: FakeProvisioner, worker: str = "") -> ClusterTarget:
    return ClusterTarget(RunSettings(target="kind", run_id="r1", worker=worker), provisioner, kube_factory=FakeKube)


def test_one_exec_per_batch_with_the_real_script(httpbin: str) -> None:  # noqa: F811
    t = target(FakeProvisioner())
    t.up()
    batch = t.client("curl", "ns").send(f"{httpbin}/status/418", count=25, concurrency=5)
    assert [r.status for r in batch] == [418] * 25
    execs = [c for c in t.kube.calls if c[0] == "exec"]
    assert execs == [("exec", "curl-7d9f-abcde", "curl", ["sh", "-c"])]  # the app container, not istio-proxy


def test_proxy_stats_through_pilot_agent() -> None:
    t = target(FakeProvisioner())
    t.up()
    assert "upstream_rq_pending_overflow: 3" in t.proxy_stats("curl", "ns")
    assert t.kube.calls[-1] == ("exec", "curl-7d9f-abcde", "istio-proxy", ["pilot-agent", "request", "GET", "stats"])


def test_namespaces_carry_the_run_label_and_only_those_are_deleted() -> None:
    t = target(FakeProvisioner())
    t.up()
    with t.namespace("bookinfo-r1", {"istio-injection": "enabled"}):
        pass
    assert ("create_namespace", "bookinfo-r1", {"istio-injection": "enabled", "meshconf.dev/run-id": "r1"}) \
        in t.kube.calls
    assert ("delete_namespace", "bookinfo-r1", "r1") in t.kube.calls


def test_debug_bundle_covers_what_the_run_created(tmp_path: Path) -> None:
    provisioner = FakeProvisioner()
    t = target(provisioner)
    t.up()
    t.kube.apply = lambda docs, ns: None  # type: ignore[attr-defined]
    with t.namespace("bookinfo-r1", {}):
        t.apply([{"kind": "VirtualService"}, {"kind": "DestinationRule"}], "bookinfo-r1")
        t.collect_debug(tmp_path)
    assert provisioner.events[-1] == ("debug", ("bookinfo-r1",), 2)


def test_failed_bring_up_keeps_evidence_then_tears_down(tmp_path: Path) -> None:
    provisioner = FakeProvisioner(fail=True)
    settings = RunSettings(target="kind", run_id="r1", work_dir=tmp_path / ".meshconf",
                           report=tmp_path / "results" / "report.yaml")
    t = ClusterTarget(settings, provisioner, kube_factory=FakeKube)
    # Next to the report, which is what CI uploads.
    bundle = tmp_path / "results" / "debug" / "bring-up-r1"
    with pytest.raises(ConformanceError, match=f"istioctl install did not finish.*debug bundle: {bundle}$"):
        t.up()
    assert provisioner.events == ["up", ("debug", (), 0), "down"]


def test_facts_say_where_it_ran() -> None:
    t = target(FakeProvisioner())
    t.up()
    facts = t.facts()
    assert (facts.target, facts.mesh, facts.mesh_version, facts.kubernetes_version) == \
        ("kind", "istio", "1.28.0", "1.34.0")
    t.down()
    with pytest.raises(ConformanceError, match="not up"):
        t.kube


def test_the_first_workloads_get_the_first_deploy_budget_later_ones_the_rollout_budget(
        api: FakeApi, tmp_path: Path) -> None:
    # The run's first workloads (Bookinfo) pull their images onto fresh nodes.
    timeouts = Timeouts.from_env({"MESHCONF_TIMEOUT_ROLLOUT": "0.3", "MESHCONF_TIMEOUT_FIRST_DEPLOY": "20"})
    t = ClusterTarget(RunSettings(target="kind", run_id="r1", timeouts=timeouts),
                      FakeProvisioner(kubeconfig=write_kubeconfig(tmp_path / "kc", api.port)),
                      kube_factory=lambda path, context, timeouts: Kube(path, context, timeouts=timeouts,
                                                                         poll_interval=0.02))
    path = "/apis/apps/v1/namespaces/bookinfo-r1/deployments"
    status = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}
    pulling, ready = ({"metadata": {"name": "reviews-v1", "generation": 1}, "spec": {"replicas": 1},
                       "status": {**status, "availableReplicas": n}} for n in (0, 1))
    slow = [items(pulling)] * 40 + [items(ready)]  # about 0.8s of polls: longer than the rollout budget
    t.up()
    try:
        api.script("GET", path, *slow)
        t.wait_ready("bookinfo-r1")
        api.script("GET", path, *slow)
        with pytest.raises(NotConverged, match="rollout in namespace bookinfo-r1: not within 0.3s"):
            t.wait_ready("bookinfo-r1")
    finally:
        t.down()


def test_no_second_revision_without_the_installation_meshconf_made() -> None:
    # A provisioner that hands on no Istio installation cannot have a revision installed beside it,
    # even if it forgot to say so in `unsupported`.
    # The reason is worded as the kubeconfig target words it (tests/test_existing_cluster.py), for
    # a cluster reached without a context name.
    not_ours = ("meshconf did not install Istio on this cluster, and installs a second control plane revision "
                "only beside a mesh it installed; pass --install-mesh --yes on a cluster without Istio to let "
                "meshconf install (and later remove) both")
    t = target(FakeProvisioner())
    t.up()
    assert not t.supports(REVISION_FEATURE) and t.unsupported_reason(REVISION_FEATURE) == not_ours
    assert t.supports("SidecarInjection")
    with pytest.raises(ConformanceError) as refused:
        with t.revision("canary"):
            pass
    assert str(refused.value) == f"cannot install Istio revision canary: {not_ours}"


def test_mesh_wide_policy_is_not_supported_in_a_worker_sharing_the_cluster() -> None:
    # Under pytest-xdist every worker tests the one cluster: a mesh-wide PeerAuthentication applied
    # by one would refuse the others' plaintext clients. Alone (no worker id), it runs.
    alone = target(FakeProvisioner())
    alone.up()
    assert alone.supports(MESH_WIDE_FEATURE)
    worker = target(FakeProvisioner(), worker="gw1")
    worker.up()
    assert not worker.supports(MESH_WIDE_FEATURE)
    assert worker.unsupported_reason(MESH_WIDE_FEATURE) == (
        "it applies a mesh-wide PeerAuthentication, which the other workers' tests would see; run it without -n "
        "(this is worker gw1)")
    assert worker.supports("MutualTLSPermissive")
