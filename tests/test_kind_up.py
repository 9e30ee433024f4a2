"""`meshconf up` and `meshconf down` end to end, with nothing real but this machine.

The CLI runs in-process (cli.main) against:
- fake docker and kind on PATH (tests/fakes); `kind create cluster` writes a kubeconfig
  pointing at the fake API server (state "server");
- a local release server ($MESHCONF_ISTIO_RELEASES) serving an Istio archive whose
  bin/istioctl is the fake istioctl launcher, and whose samples/addons hold small
  prometheus.yaml and kiali.yaml shaped like upstream's; istioctl is removed from PATH, so
  only the release's copy can answer;
- the fake Kubernetes API (tests/fakeapi.py): discovery for every applied kind, Deployments
  rolled out once applied, Istio's validating webhook accepting the invalid
  VirtualService once, then denying it;
- a fake ingress gateway (tests/fakegateway.py) on a free host port (--ingress-port), which
  starts answering once the readiness Gateway is applied, as Envoy would.

The only thing patched in-process is /proc: kind.preflight reads inotify limits and
memory from a fake /proc tree (this machine's real limits fail the preflight), while the
docker and kind checks still run the fake tools.
"""

import base64
import functools
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance import cli, manifests
from conformance.errors import ConformanceError
from conformance.settings import GATEWAY_API_RELEASES_ENV, ISTIO_RELEASES_ENV, OFFICIAL_ISTIO_RELEASES, RunSettings
from conformance.targets import istio_release, kind
from conformance.targets.cluster import ClusterTarget
from conformance.targets.kube import Kube
from conformance.targets.debug_bundle import Istioctl, collect_cluster_debug
from conformance.targets.provision import KindProvisioner, wait_mesh_ready
from tests.builders import (
    GATEWAY_API_CRDS,
    INVALID_VS,
    ISTIO_CRDS,
    READINESS_GATEWAY,
    accept_once_then_deny,
    fake_release,
    install_crds,
    publish_gateway_api,
)
from tests.fakeapi import FakeApi, items
from tests.fakegateway import FakeGateway, free_port
from tests.fakes import FakeTools
from tests.release_server import ReleaseServer

VERSION = RunSettings().istio_version
GATEWAY_API = "v1.4.0"  # what Istio 1.28.0 builds against (conformance/targets/data/gateway_api.yaml)
GATEWAY_API_ASSET = f"/releases/{GATEWAY_API}/standard-install.yaml"
HTTPROUTE_CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/httproutes.gateway.networking.k8s.io"
IMAGE = kind.NODE_IMAGES[RunSettings().kubernetes_version]
HEALTHY = {"istioctl": {"install": {"stdout": "\u2714 Installation complete\n"}}}

NODEPORTS = "/api/v1/namespaces/istio-system/services/istio-ingressgateway"
PROMETHEUS_CONFIG = "/api/v1/namespaces/istio-system/configmaps/prometheus"
DEPLOYMENTS = "/apis/apps/v1/namespaces/istio-system/deployments"


# -- the machine (the fake Istio release and webhook are in tests/builders.py) ---------- ------------------------------------------------------------------------

def fake_proc(root: Path) -> Path:
    """Limits a kind cluster with Istio is happy with (kind's known-issues page)."""
    inotify = root / "sys" / "fs" / "inotify"
    inotify.mkdir(parents=True)
    (inotify / "max_user_watches").write_text("524288\n")
    (inotify / "max_user_instances").write_text("512\n")
    (root / "meminfo").write_text("MemTotal:       32768000 kB\nMemAvailable:   16777216 kB\n")
    return root


@dataclass
class Machine:
    tools: FakeTools
    api: FakeApi
    releases: ReleaseServer
    project: Path  # the working directory: .meshconf/ goes here
    home: Path
    capsys: pytest.CaptureFixture[str]
    gateway: FakeGateway
    https_port: int

    @property
    def ports(self) -> list[str]:
        return ["--ingress-port", str(self.gateway.port), "--ingress-https-port", str(self.https_port)]

    @property
    def work_dir(self) -> Path:
        return self.project / ".meshconf" / "kind-meshconf"

    @property
    def kubeconfig(self) -> Path:
        return self.work_dir / "kubeconfig"

    def meshconf(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err

    def patches(self, path: str) -> list[Any]:
        return [self.api.requests[i] for i in self.api.seen("PATCH", path)]


@pytest.fixture
def machine(tmp_path: Path, fake_tools: FakeTools, api: FakeApi, release_server: ReleaseServer,
            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            gateway: FakeGateway) -> Iterator[Machine]:
    fake_tools.set_scenario({**HEALTHY, "state": {"server": api.url}})
    fake_tools.remove("istioctl")  # only the release's bin/istioctl may answer
    install_crds(api, *ISTIO_CRDS)  # what istioctl install applies first
    api.deployments_roll_out = True
    accept_once_then_deny(api)
    api.after_apply[READINESS_GATEWAY] = gateway.start
    release_server.publish(VERSION, fake_release())
    monkeypatch.setenv(ISTIO_RELEASES_ENV, release_server.url)
    monkeypatch.setenv(GATEWAY_API_RELEASES_ENV, publish_gateway_api(release_server, GATEWAY_API))
    for name in ("INSTALL", "ROLLOUT", "REQUEST", "MESH_READY", "FIRST_DEPLOY"):
        monkeypatch.delenv(f"MESHCONF_TIMEOUT_{name}", raising=False)
    proc = fake_proc(tmp_path / "proc")
    monkeypatch.setattr(kind, "preflight", functools.partial(kind.preflight, proc))
    # Longer than 80 columns: the printed kubeconfig path must not be wrapped.
    project = tmp_path / "a-project-directory-whose-path-is-long-enough-to-wrap-in-a-terminal"
    project.mkdir()
    monkeypatch.chdir(project)
    yield Machine(fake_tools, api, release_server, project, tmp_path / "home", capsys, gateway, free_port())


def create_argv(m: Machine, wait: str = "5m") -> list[str]:
    return ["kind", "create", "cluster", "--name", "meshconf", "--config", str(m.work_dir / "kind-config.yaml"),
            "--image", IMAGE, "--kubeconfig", str(m.kubeconfig), "--wait", wait, "--retain"]


def install_argv(m: Machine, readiness: str = "240s") -> list[str]:
    return ["istioctl", "install", "--kubeconfig", str(m.kubeconfig), "--set", "profile=demo",
            "--readiness-timeout", readiness, "-y"]


PREFLIGHT = [["docker", "info", "--format", "{{.ServerVersion}}"], ["kind", "version"]]


# -- up, then down ----------------------------------------------------------------------

def test_up_then_down(machine: Machine) -> None:
    m = machine
    code, out, err = m.meshconf("up", *m.ports)
    assert code == 0, err

    # The last line is the private kubeconfig, whole: never ~/.kube, never $KUBECONFIG.
    assert len(str(m.kubeconfig)) > 80
    assert out.splitlines()[-1] == str(m.kubeconfig)
    assert m.kubeconfig.is_file() and m.kubeconfig.is_relative_to(m.project / ".meshconf")
    assert not (m.home / ".kube").exists()
    assert yaml.safe_load(m.kubeconfig.read_text())["clusters"][0]["cluster"]["server"] == m.api.url

    assert m.tools.all_calls() == [
        *PREFLIGHT,
        ["kind", "get", "clusters"],
        create_argv(m),
        install_argv(m),  # from the release: istioctl is not on PATH
    ]
    # The release came from $MESHCONF_ISTIO_RELEASES, digest first.
    archive = f"/releases/{VERSION}/istio-{VERSION}-linux-amd64.tar.gz"
    assert m.releases.requests == [archive + ".sha256", archive, GATEWAY_API_ASSET]

    # Server-side apply, field manager meshconf: the nodeports Service ...
    [nodeports] = m.patches(NODEPORTS)
    assert nodeports.query == {"fieldManager": ["meshconf"], "force": ["true"]}
    assert nodeports.headers["content-type"] == "application/apply-patch+yaml"
    assert nodeports.body["spec"]["type"] == "NodePort"
    assert {p["name"]: p["nodePort"] for p in nodeports.body["spec"]["ports"]} == {"http2": 30080, "https": 30443}
    # ... the Prometheus addon with a 5s scrape interval (per-job intervals untouched) ...
    [config] = m.patches(PROMETHEUS_CONFIG)
    assert config.query == {"fieldManager": ["meshconf"], "force": ["true"]}
    prometheus = yaml.safe_load(config.body["data"]["prometheus.yml"])
    assert prometheus["global"]["scrape_interval"] == "5s" and prometheus["global"]["scrape_timeout"] == "5s"
    assert prometheus["scrape_configs"][1]["scrape_interval"] == "5m"
    # ... and every other addon object, cluster-scoped ones without a namespace.
    applied = {r.path for r in m.api.requests if r.method == "PATCH" and r.path != INVALID_VS}
    assert {"/apis/rbac.authorization.k8s.io/v1/clusterroles/prometheus",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kiali",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/istio-system/roles/kiali-controlplane",
            "/api/v1/namespaces/istio-system/serviceaccounts/kiali",
            f"{DEPLOYMENTS}/prometheus", f"{DEPLOYMENTS}/kiali"} <= applied
    assert all(r.query["fieldManager"] == ["meshconf"] for r in m.api.requests if r.method == "PATCH")

    # Rollout checked after the addons, then the webhook wait: accepted once (and deleted
    # again), retried, denied; the invalid object is not left behind.
    last_addon = max(m.api.seen("PATCH", f"{DEPLOYMENTS}/kiali"))
    rollout = [i for i in m.api.seen("GET", DEPLOYMENTS) if i > last_addon]
    vs = [(r.method, i) for i, r in enumerate(m.api.requests) if r.path == INVALID_VS]
    assert [method for method, _ in vs] == ["PATCH", "DELETE", "PATCH"]
    assert rollout and rollout[0] < vs[0][1]
    assert INVALID_VS not in m.api.objects
    # Then the ingress gateway, through the host port: a listener without a route answers
    # its host with Envoy's 404; the readiness Gateway is removed again.
    gw = [(r.method, i) for i, r in enumerate(m.api.requests) if r.path == READINESS_GATEWAY]
    assert [method for method, _ in gw] == ["PATCH", "DELETE"] and gw[0][1] > vs[-1][1]
    assert m.gateway.hosts and set(m.gateway.hosts) == {"readiness.meshconf.test"}
    assert READINESS_GATEWAY not in m.api.objects

    # `down` deletes the cluster `up` made, with the private kubeconfig; a second `down` refuses.
    code, _, err = m.meshconf("down")
    assert code == 0, err
    assert m.tools.all_calls()[5:] == [["kind", "delete", "cluster", "--name", "meshconf",
                                        "--kubeconfig", str(m.kubeconfig)]]
    assert m.tools.state()["kind_clusters"] == []
    code, _, err = m.meshconf("down")
    assert code == 2 and "meshconf deletes only clusters it created" in err
    assert len(m.tools.all_calls()) == 6


def test_helm_install_on_kind_gives_the_gateway_a_node_port_not_a_load_balancer(
        machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    # kind assigns no LoadBalancer address: `helm --wait` on the chart's default Service type
    # would wait for one until its timeout (2s here: 80% of the install budget).
    m = machine
    monkeypatch.setenv("MESHCONF_TIMEOUT_INSTALL", "3")
    code, out, err = m.meshconf("up", *m.ports, "--install-method", "helm")
    assert code == 0, err
    helm = m.tools.calls("helm")
    assert [argv[3] for argv in helm] == ["istio-base", "istiod", "istio-ingressgateway"]
    gateway = helm[2]
    assert gateway[gateway.index("--set") + 1] == "service.type=NodePort" and "--wait" in gateway
    # The chart's Service, then pinned to the node ports the kind config maps (as with istioctl).
    service = m.api.objects[NODEPORTS]
    assert service["spec"]["type"] == "NodePort"
    assert {p["name"]: p["nodePort"] for p in service["spec"]["ports"] if p["name"] != "status-port"} == \
        {"http2": 30080, "https": 30443}
    assert {p["name"] for p in service["spec"]["ports"]} == {"status-port", "http2", "https"}
    assert "helm" in {f["manager"] for f in service["metadata"]["managedFields"]}
    assert m.tools.state()["helm_releases"]["istio-system/istio-ingressgateway"]["status"] == "deployed"


# -- Gateway API CRDs --------------------------------------------------------------------

def test_kind_gets_the_gateway_api_crds_its_istio_builds_against(machine: Machine) -> None:
    # Istio ships no Gateway API CRDs: without these, MeshHTTPRouteWeights' HTTPRoute has no kind to be.
    m = machine
    code, out, err = m.meshconf("up", *m.ports)
    assert code == 0, err
    assert m.releases.requests[-1] == GATEWAY_API_ASSET
    crd = m.api.objects[HTTPROUTE_CRD]
    assert crd["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] == GATEWAY_API
    # Installed before Istio, so istiod finds them at start.
    assert max(m.api.seen("PATCH", HTTPROUTE_CRD)) < min(m.api.seen("PATCH", NODEPORTS))
    kube = Kube(m.kubeconfig, poll_interval=0.02)
    try:
        kube.apply(manifests.load("gateway-api/traffic/httproute-reviews-80-20.yaml"), "bookinfo")
    finally:
        kube.close()
    assert "/apis/gateway.networking.k8s.io/v1/namespaces/bookinfo/httproutes/reviews" in m.api.objects


def test_a_reused_cluster_loses_only_the_gateway_api_crds_the_run_installed(machine: Machine) -> None:
    m = machine
    m.tools.set_scenario({**HEALTHY, "state": {"server": m.api.url, "kind_clusters": ["meshconf"]}})
    settings = replace(RunSettings(target="kind"), reuse=True, ingress_port=m.gateway.port,
                       ingress_https_port=m.https_port)
    provisioner = KindProvisioner(settings)
    provisioner.up()
    assert HTTPROUTE_CRD in m.api.objects
    provisioner.down()
    assert HTTPROUTE_CRD not in m.api.objects and m.api.seen("DELETE", HTTPROUTE_CRD)

    # CRDs that were there before the run (any version) are the cluster's: used, never removed.
    install_crds(m.api, *GATEWAY_API_CRDS)
    before = len(m.releases.requests)
    provisioner = KindProvisioner(settings)
    provisioner.up()
    provisioner.down()
    assert HTTPROUTE_CRD in m.api.objects and len(m.api.seen("DELETE", HTTPROUTE_CRD)) == 1
    assert len(m.releases.requests) == before  # nothing downloaded


def test_plan_says_which_gateway_api_crds_a_cluster_would_get(machine: Machine) -> None:
    code, out, err = machine.meshconf("run", "--target", "kind", "--plan")
    assert code == 0, err
    assert (f"# if the cluster lacks CRD httproutes.gateway.networking.k8s.io: server-side apply Gateway API "
            f"{GATEWAY_API} (standard channel, {machine.releases.url}{GATEWAY_API_ASSET.removeprefix('/releases')})"
            in out)
    assert machine.releases.requests == []


# -- readiness budgets ------------------------------------------------------------------

def istio_deployment(name: str, available: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "istio-system", "generation": 1}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": available}}


def test_a_fresh_mesh_is_waited_for_with_its_own_budget_not_the_rollout_one(
        machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    # A new node pulls every istio-system image first: that rollout outlasts an ordinary one.
    m = machine
    monkeypatch.setenv("MESHCONF_TIMEOUT_ROLLOUT", "0.5")
    monkeypatch.setenv("MESHCONF_TIMEOUT_MESH_READY", "30")
    pulling, ready = items(istio_deployment("istiod", 0)), items(istio_deployment("istiod", 1))
    m.api.script("GET", DEPLOYMENTS, pulling, pulling, ready)  # polled once a second: ready after 2s
    code, out, err = m.meshconf("up", *m.ports)
    assert code == 0, err
    assert len(m.api.seen("GET", DEPLOYMENTS)) == 3


def test_wait_mesh_ready_waits_for_the_rollouts_as_long_as_it_is_told(
        api: FakeApi, kube: Kube, gateway: FakeGateway) -> None:
    install_crds(api, *ISTIO_CRDS)
    accept_once_then_deny(api)
    api.after_apply[READINESS_GATEWAY] = gateway.start
    pulling, ready = items(istio_deployment("istiod", 0)), items(istio_deployment("istiod", 1))
    # kube's rollout budget is 0.4s and it polls every 0.02s: 40 answers of "pulling" outlast it.
    api.script("GET", DEPLOYMENTS, *[pulling] * 40, ready)
    wait_mesh_ready(kube, f"http://127.0.0.1:{gateway.port}", timeout=20)
    assert len(api.seen("GET", DEPLOYMENTS)) == 41


# -- failures clean up what they made -------------------------------------------------

def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("meshconf: error: ") and "Traceback" not in err
    return lines[0]


def test_failed_create_exports_logs_and_deletes(machine: Machine) -> None:
    m = machine
    m.tools.set_scenario({**HEALTHY, "kind": {"create cluster": {
        "exit": 1, "stderr": "ERROR: failed to create cluster: failed to init node with kubeadm\n"}}})
    code, out, err = m.meshconf("up", *m.ports)
    assert code == 2 and out == ""
    message = one_line_error(err)
    assert "kind could not create cluster 'meshconf' (exit 1)" in message and "kubeadm" in message
    assert "the half-created cluster was deleted" in message
    assert m.tools.all_calls() == [
        *PREFLIGHT,
        ["kind", "get", "clusters"],
        create_argv(m),
        ["kind", "export", "logs", str(m.work_dir / "kind-logs"), "--name", "meshconf"],
        ["kind", "delete", "cluster", "--name", "meshconf", "--kubeconfig", str(m.kubeconfig)],
    ]
    assert m.tools.state()["kind_clusters"] == []  # --retain kept the nodes; we removed them
    assert m.api.requests == []
    assert not (m.work_dir / "created-by-meshconf-up").exists()


def test_failed_bring_up_bundle_holds_the_node_logs_next_to_the_report(machine: Machine) -> None:
    m = machine
    m.tools.set_scenario({**HEALTHY, "kind": {"create cluster": {"exit": 1, "stderr": "ERROR: kubeadm init\n"}}})
    settings = RunSettings(target="kind", run_id="r1", report=m.project / "results" / "report.yaml",
                           ingress_port=m.gateway.port, ingress_https_port=m.https_port)
    with pytest.raises(ConformanceError, match="kind could not create cluster") as caught:
        ClusterTarget(settings, KindProvisioner(settings)).up()
    bundle = m.project / "results" / "debug" / "bring-up-r1"
    assert str(caught.value).endswith(f"debug bundle: {bundle}")
    # The nodes are gone: the logs exported before deleting them are what the bundle keeps.
    assert (bundle / "kind-logs" / "meshconf-control-plane" / "kubelet.log").read_text() == "fake kubelet log\n"
    assert [argv[1] for argv in m.tools.calls("kind")] == ["version", "get", "create", "export", "delete"]


def test_node_logs_in_a_bundle_are_scrubbed_of_credentials(machine: Machine) -> None:
    m = machine
    settings = replace(RunSettings(target="kind", run_id="r1"), ingress_port=m.gateway.port,
                       ingress_https_port=m.https_port)
    provisioner = KindProvisioner(settings)
    provisioner.up()
    try:
        credentialed_kubeconfig(m.kubeconfig, m.api.url)
        m.tools.set_scenario({"state": {**m.tools.state(), "kubelet_log": f"Authorization: Bearer {TOKEN}\n"}})
        provisioner.collect_debug(m.project / "bundle")
    finally:
        provisioner.down()
    log = m.project / "bundle" / "kind-logs" / "meshconf-control-plane" / "kubelet.log"
    assert log.read_text() == "Authorization: Bearer REDACTED\n"


@pytest.mark.parametrize("istioctl", [
    pytest.param({"exit": 1, "stderr": "Error: failed to install manifests: errors occurred during operation\n"},
                 id="fails"),
    pytest.param({"sleep": 30}, id="times-out"),
])
def test_failed_install_deletes_the_cluster_it_created(machine: Machine, monkeypatch: pytest.MonkeyPatch,
                                                       istioctl: dict[str, Any]) -> None:
    m = machine
    monkeypatch.setenv("MESHCONF_TIMEOUT_INSTALL", "1")
    m.tools.set_scenario({"istioctl": {"install": istioctl}})
    code, out, err = m.meshconf("up", *m.ports)
    assert code == 2 and out == ""
    message = one_line_error(err)
    assert ("did not finish within 1s" if "sleep" in istioctl else "failed to install manifests") in message
    assert m.tools.all_calls() == [
        *PREFLIGHT,
        ["kind", "get", "clusters"],
        create_argv(m, wait="1s"),
        install_argv(m, readiness="1s"),
        ["kind", "delete", "cluster", "--name", "meshconf", "--kubeconfig", str(m.kubeconfig)],
    ]
    assert m.tools.state()["kind_clusters"] == []
    assert not (m.work_dir / "created-by-meshconf-up").exists()


def test_gateway_that_never_answers_fails_the_bring_up_and_cleans_up(machine: Machine,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    m = machine
    monkeypatch.setenv("MESHCONF_TIMEOUT_MESH_READY", "3")
    m.gateway.reply = (503, "some-other-proxy")  # something answers, but not Istio's gateway
    code, out, err = m.meshconf("up", *m.ports)
    assert code == 2 and out == ""
    message = one_line_error(err)
    assert f"ingress gateway answering at http://127.0.0.1:{m.gateway.port}: not within 3s" in message
    assert "answered 503 from server 'some-other-proxy', not the gateway's 404 (istio-envoy)" in message
    assert m.tools.all_calls()[-1] == ["kind", "delete", "cluster", "--name", "meshconf",
                                       "--kubeconfig", str(m.kubeconfig)]
    assert m.tools.state()["kind_clusters"] == []
    assert [r.method for r in m.api.requests if r.path == READINESS_GATEWAY] == ["PATCH", "DELETE"]


def test_busy_host_port_is_refused_before_anything_is_downloaded_or_created(machine: Machine) -> None:
    m = machine
    with socket.socket() as holder:  # another program holds the HTTP host port
        holder.bind(("127.0.0.1", m.gateway.port))
        holder.listen()
        code, out, err = m.meshconf("up", *m.ports)
    assert code == 2 and out == ""
    message = one_line_error(err)
    assert f"host port 127.0.0.1:{m.gateway.port}, which the kind config maps to the ingress gateway, " \
           "is in use (Address already in use); free it or choose another with --ingress-port N" in message
    assert m.tools.all_calls() == [*PREFLIGHT, ["kind", "get", "clusters"]]
    assert m.releases.requests == [] and m.api.requests == []


def test_existing_cluster_is_refused_without_reuse(machine: Machine) -> None:
    m = machine
    m.tools.set_scenario({**HEALTHY, "state": {"server": m.api.url, "kind_clusters": ["meshconf"]}})
    code, out, err = m.meshconf("up", *m.ports)
    assert code == 2 and out == ""
    message = one_line_error(err)
    assert "a kind cluster named 'meshconf' already exists" in message and "--reuse" in message
    assert m.tools.all_calls() == [*PREFLIGHT, ["kind", "get", "clusters"]]  # no create, no delete
    assert m.tools.state()["kind_clusters"] == ["meshconf"]
    assert m.api.requests == [] and m.releases.requests == []  # refused before the download


def test_reused_cluster_is_not_created_or_deleted_by_a_run(machine: Machine) -> None:
    m = machine
    m.tools.set_scenario({**HEALTHY, "state": {"server": m.api.url, "kind_clusters": ["meshconf"]}})
    settings = replace(RunSettings(target="kind"), reuse=True, ingress_port=m.gateway.port,
                       ingress_https_port=m.https_port)
    target = ClusterTarget(settings, KindProvisioner(settings))
    try:
        target.up()  # a run's setup ...
        assert target.kube.pods("istio-system") == []
        # The report's Kubernetes is the API server's (the fake's /version: v1.33.1), not the image table's.
        assert target.facts().kubernetes_version == "1.33.1"
    finally:
        target.down()  # ... and its teardown
    assert m.tools.all_calls() == [
        *PREFLIGHT,
        ["kind", "get", "clusters"],
        # Our private kubeconfig, from kind: the one in .meshconf may be missing or stale.
        ["kind", "export", "kubeconfig", "--name", "meshconf", "--kubeconfig", str(m.kubeconfig)],
        install_argv(m),
    ]
    assert m.tools.state()["kind_clusters"] == ["meshconf"]
    assert m.patches(NODEPORTS) and m.patches(PROMETHEUS_CONFIG)


# -- the release location ---------------------------------------------------------------

def test_release_location_defaults_to_github_and_follows_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ISTIO_RELEASES_ENV, raising=False)
    assert RunSettings().istio_releases == OFFICIAL_ISTIO_RELEASES == istio_release.OFFICIAL_RELEASES
    assert OFFICIAL_ISTIO_RELEASES == "https://github.com/istio/istio/releases/download"
    monkeypatch.setenv(ISTIO_RELEASES_ENV, "https://mirror.example/istio")
    assert RunSettings().istio_releases == "https://mirror.example/istio"


def test_plan_names_the_mirror(machine: Machine) -> None:
    code, out, err = machine.meshconf("run", "--target", "kind", "--plan")
    assert code == 0, err
    assert f"{machine.releases.url}/{VERSION}/istio-{VERSION}-linux-amd64.tar.gz" in out
    assert machine.tools.all_calls() == [] and machine.releases.requests == []


# -- the debug bundle ---------------------------------------------------------------------

TOKEN = "bundle-token-7f3a9c1e5b2d4680"
PASSWORD = "bundle-password-0d1e2f3a"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7fakekey\n-----END PRIVATE KEY-----\n"
CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIDazCCAlOgAwIBAgIUfakecertificate0123\n-----END CERTIFICATE-----\n"
KEY_DATA = base64.b64encode(KEY_PEM.encode()).decode()
CERT_DATA = base64.b64encode(CERT_PEM.encode()).decode()


def credentialed_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [
            {"name": "fake", "user": {"token": TOKEN}},
            {"name": "certs", "user": {"client-key-data": KEY_DATA, "client-certificate-data": CERT_DATA}},
            {"name": "basic", "user": {"username": "admin", "password": PASSWORD}},
        ],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }))
    return path


def pod(name: str, namespace: str, containers: list[str], init: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name.split("-")[0]},
                         "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
            "spec": {"initContainers": [{"name": c, "image": "proxyv2"} for c in init],
                     "containers": [{"name": c, "image": "img"} for c in containers]},
            "status": {"phase": "Running"}}


PROXY_STATUS = "NAME                  CLUSTER     CDS      LDS      EDS      RDS\ncurl-b.bookinfo-r1    Kubernetes  SYNCED   SYNCED   SYNCED   SYNCED\n"


def test_debug_bundle_never_holds_credentials(api: FakeApi, tmp_path: Path, fake_tools: FakeTools) -> None:
    kubeconfig = credentialed_kubeconfig(tmp_path / "kubeconfig", api.url)
    fake_tools.set_scenario({"istioctl": {
        "proxy-status": {"stdout": PROXY_STATUS},
        # A dump that quotes a credential (a header value in a route, say) ...
        "proxy-config": {"stdout": json.dumps({"configs": [{"header": f"Bearer {TOKEN}"}]})},
        # ... and a proxy that cannot be reached for one of them.
        "proxy-config route": {"exit": 1, "stderr": "Error: failed to execute command on sidecar: connection refused\n"},
    }})
    api.script("GET", "/api/v1/namespaces/istio-system/pods", items(pod("istiod-1", "istio-system", ["discovery"])))
    api.script("GET", "/api/v1/namespaces/bookinfo-r1/pods", items(
        pod("reviews-v1-a", "bookinfo-r1", ["reviews"], init=("istio-init", "istio-proxy")),  # native sidecar
        pod("curl-b", "bookinfo-r1", ["curl", "istio-proxy"])))
    api.script("GET", "/api/v1/namespaces/istio-system/events", items(
        {"type": "Normal", "reason": "Started", "message": "ok", "lastTimestamp": "2026-01-01T00:00:00Z",
         "involvedObject": {"kind": "Pod", "name": "istiod-1"}}))
    # A misbehaving proxy that echoes the request's Authorization header into its error.
    api.script("GET", "/api/v1/namespaces/bookinfo-r1/events",
               lambda: (500, f"upstream failed for Authorization: Bearer {TOKEN}"))
    # Logs that quote credentials (an app printing what it was given).
    api.script("GET", "/api/v1/namespaces/bookinfo-r1/pods/curl-b/log",
               (200, (f"> Authorization: Bearer {TOKEN}\nkey:\n{KEY_PEM}cert:\n{CERT_PEM}password={PASSWORD}\n"
                      f"basic {base64.b64encode(f'admin:{PASSWORD}'.encode()).decode()}\n")))
    api.script("GET", "/api/v1/namespaces/istio-system/pods/istiod-1/log", (200, "info\tready\n"))
    api.script("GET", "/api/v1/namespaces/bookinfo-r1/pods/reviews-v1-a/log", (200, "started\n"))
    api.script("GET", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", items(
        {"metadata": {"name": "istio-validator-istio-system"},
         "webhooks": [{"name": "validation.istio.io", "failurePolicy": "Ignore",
                       "clientConfig": {"caBundle": CERT_DATA}}]}))
    applied = manifests.load("kind/ingress-nodeports.yaml")
    bundle = tmp_path / "bundle"

    kube = Kube(kubeconfig, poll_interval=0.02)
    try:
        collect_cluster_debug(kube, bundle, kubeconfig, namespaces=["bookinfo-r1"], applied=applied,
                              istioctl=Istioctl("istioctl", kubeconfig, "fake", 10.0))
        # Before the release was downloaded there is no istioctl: the bundle says so.
        collect_cluster_debug(kube, tmp_path / "early", kubeconfig, istioctl=Istioctl(None, kubeconfig, None, 10.0))
    finally:
        kube.close()
    assert "the Istio release was not downloaded" in (tmp_path / "early" / "istioctl.error").read_text()

    # istioctl: the mesh's sync state, and the config of the client's proxy only (no secrets).
    flags = ["--kubeconfig", str(kubeconfig), "--context", "fake"]
    assert fake_tools.calls("istioctl") == [
        ["istioctl", "proxy-status", *flags],
        *(["istioctl", "proxy-config", kind, "curl-b.bookinfo-r1", "-o", "json", *flags]
          for kind in ("cluster", "listener", "route", "endpoint")),
    ]

    files = {p.relative_to(bundle).as_posix(): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    assert set(files) == {
        "kubeconfig.redacted.yaml", "webhooks.yaml", "applied.yaml",
        "namespaces/istio-system/events.txt", "namespaces/istio-system/pods.yaml",
        "namespaces/istio-system/logs/istiod-1/discovery.log",
        "namespaces/bookinfo-r1/events.txt.error", "namespaces/bookinfo-r1/pods.yaml",
        *(f"namespaces/bookinfo-r1/logs/{p}.log" for p in (
            "reviews-v1-a/istio-init", "reviews-v1-a/istio-proxy", "reviews-v1-a/reviews",
            "curl-b/curl", "curl-b/istio-proxy")),
        "istioctl/proxy-status.txt",
        *(f"istioctl/bookinfo-r1/curl-b/proxy-config-{kind}.json" for kind in ("cluster", "listener", "endpoint")),
        "istioctl/bookinfo-r1/curl-b/proxy-config-route.json.error",
    }
    assert files["istioctl/proxy-status.txt"].decode() == PROXY_STATUS
    assert b"connection refused" in files["istioctl/bookinfo-r1/curl-b/proxy-config-route.json.error"]
    assert json.loads(files["istioctl/bookinfo-r1/curl-b/proxy-config-cluster.json"]) == \
        {"configs": [{"header": "Bearer REDACTED"}]}
    # What a debugger needs is there ...
    pods = list(yaml.safe_load_all(files["namespaces/bookinfo-r1/pods.yaml"]))
    assert [p["metadata"]["name"] for p in pods] == ["reviews-v1-a", "curl-b"]
    assert all("managedFields" not in p["metadata"] for p in pods)
    assert b"Started pod/istiod-1: ok" in files["namespaces/istio-system/events.txt"]
    assert files["namespaces/istio-system/logs/istiod-1/discovery.log"] == b"info\tready\n"
    proxy_logs = [i for i in api.seen("GET", "/api/v1/namespaces/bookinfo-r1/pods/reviews-v1-a/log")
                  if api.requests[i].query.get("container") == ["istio-proxy"]]
    assert len(proxy_logs) == 1  # the native sidecar's log was asked for by name
    assert b"HTTP 500" in files["namespaces/bookinfo-r1/events.txt.error"]
    assert b"Authorization: Bearer REDACTED" in files["namespaces/bookinfo-r1/logs/curl-b/istio-proxy.log"]
    assert yaml.safe_load(files["applied.yaml"])["metadata"]["name"] == "istio-ingressgateway"
    assert api.url.encode() in files["kubeconfig.redacted.yaml"]

    # ... and no credential, in any form, anywhere.
    forbidden = {TOKEN, PASSWORD, KEY_DATA, CERT_DATA, KEY_PEM, CERT_PEM,
                 base64.b64encode(f"admin:{PASSWORD}".encode()).decode(),
                 base64.b64encode(TOKEN.encode()).decode(), base64.b64encode(PASSWORD.encode()).decode(),
                 *(line for pem in (KEY_PEM, CERT_PEM) for line in pem.splitlines() if "-----" not in line)}
    for name, data in files.items():
        for secret in forbidden:
            assert secret.encode() not in data, f"{name} holds {secret[:12]}..."
