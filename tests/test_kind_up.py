"""`meshconf up` and `meshconf down` end to end, with nothing real but this machine (the `machine`
fixture: tests/cluster_builders.py Machine says what is fake). The Gateway API CRDs of a kind
cluster are tests/test_kind_gateway_api.py's, its debug bundles tests/test_kind_debug_bundle.py's.
"""

import socket
from typing import Any

import pytest
import yaml

from conformance.errors import ConformanceError
from conformance.names import ISTIO_NAMESPACE
from conformance.settings import ISTIO_RELEASES_ENV, OFFICIAL_ISTIO_RELEASES, RunSettings
from conformance.targets import kind
from conformance.targets.cluster import ClusterTarget
from conformance.targets.istio_revision import REVISION_FEATURE
from conformance.targets.kube import Kube
from conformance.targets.provision import KindProvisioner, wait_mesh_ready
from tests.cluster_builders import HEALTHY, Machine, seed_namespace
from tests.release_builders import (
    GATEWAY_API_ASSET,
    INVALID_VS,
    ISTIO_CRDS,
    ISTIO_VERSION,
    READINESS_GATEWAY,
    accept_once_then_deny,
    install_crds,
    istio_deployment,
)
from tests.fakeapi import FakeApi, items
from tests.fakegateway import FakeGateway

IMAGE = kind.NODE_IMAGES[RunSettings().kubernetes_version]
NODEPORTS = "/api/v1/namespaces/istio-system/services/istio-ingressgateway"
PROMETHEUS_CONFIG = "/api/v1/namespaces/istio-system/configmaps/prometheus"
DEPLOYMENTS = "/apis/apps/v1/namespaces/istio-system/deployments"


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
    archive = f"/releases/{ISTIO_VERSION}/istio-{ISTIO_VERSION}-linux-amd64.tar.gz"
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
    assert gateway[gateway.index("--set") + 1] == "service.type=NodePort"
    # The gateway's readiness is the rollout wait's (and the host port's answer), not Helm's.
    assert ["--wait" in argv for argv in helm] == [True, True, False]
    # The chart's Service, then pinned to the node ports the kind config maps (as with istioctl).
    service = m.api.objects[NODEPORTS]
    assert service["spec"]["type"] == "NodePort"
    assert {p["name"]: p["nodePort"] for p in service["spec"]["ports"] if p["name"] != "status-port"} == \
        {"http2": 30080, "https": 30443}
    assert {p["name"] for p in service["spec"]["ports"]} == {"status-port", "http2", "https"}
    assert "helm" in {f["manager"] for f in service["metadata"]["managedFields"]}
    assert m.tools.state()["helm_releases"]["istio-system/istio-ingressgateway"]["status"] == "deployed"


# -- readiness budgets ------------------------------------------------------------------

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
    seed_namespace(api, "default")
    seed_namespace(api, ISTIO_NAMESPACE)
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
    settings = m.settings(reuse=True)
    target = ClusterTarget(settings, KindProvisioner(settings))
    try:
        target.up()  # a run's setup ...
        # The addons' Deployments run their pods (the fake API acts as the controllers and kubelet).
        pods = target.kube.pods("istio-system")
        assert sorted(p.labels["app.kubernetes.io/name"] for p in pods) == ["kiali", "prometheus"]
        assert all(p.ready for p in pods)
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


@pytest.mark.parametrize(("asked", "server", "force", "refused"), [
    ("1.34", "v1.36.1", False, True),  # the cluster runs a Kubernetes Istio 1.28 does not support
    ("1.34", "v1.36.1", True, False),  # ... forced: a warning
    ("1.36", "v1.33.1", False, False),  # what was asked for does not matter: no cluster is made
])
def test_a_reused_cluster_is_checked_against_the_kubernetes_it_runs(machine: Machine, asked: str, server: str,
                                                                    force: bool, refused: bool) -> None:
    m = machine
    m.tools.set_scenario({**HEALTHY, "state": {"server": m.api.url, "kind_clusters": ["meshconf"]}})
    major, minor, _ = server.lstrip("v").split(".")
    for path in ("/version", "/version/"):  # the API server's /version, whichever way it is asked
        m.api.script("GET", path, (200, {"major": major, "minor": minor, "gitVersion": server}))
    settings = m.settings(reuse=True, kubernetes_version=asked, force=force)
    mismatch = f"Istio {ISTIO_VERSION} supports Kubernetes 1.30-1.34, not {server}"
    provisioner = KindProvisioner(settings)
    try:
        if refused:
            with pytest.raises(ConformanceError, match=mismatch):
                provisioner.up()
        else:
            access = provisioner.up()
            assert access.kubernetes_version == server.lstrip("v")
            # meshconf's own mesh on kind: a second revision goes beside it, by the same istioctl.
            assert access.istio is not None and access.istio.istioctl == provisioner.istioctl
            assert REVISION_FEATURE not in access.unsupported
            assert (provisioner.warning or "").startswith(mismatch) if force else provisioner.warning is None
    finally:
        provisioner.down()
    if refused:  # known before anything was downloaded or installed
        assert m.releases.requests == [] and m.tools.calls("istioctl") == []
    assert m.tools.state()["kind_clusters"] == ["meshconf"]


# -- the release location ---------------------------------------------------------------

def test_release_location_defaults_to_github_and_follows_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ISTIO_RELEASES_ENV, raising=False)
    assert RunSettings().istio_releases == OFFICIAL_ISTIO_RELEASES
    assert OFFICIAL_ISTIO_RELEASES == "https://github.com/istio/istio/releases/download"
    monkeypatch.setenv(ISTIO_RELEASES_ENV, "https://mirror.example/istio")
    assert RunSettings().istio_releases == "https://mirror.example/istio"


def test_plan_names_the_mirror(machine: Machine) -> None:
    code, out, err = machine.meshconf("run", "--target", "kind", "--plan")
    assert code == 0, err
    assert f"{machine.releases.url}/{ISTIO_VERSION}/istio-{ISTIO_VERSION}-linux-amd64.tar.gz" in out
    assert machine.tools.all_calls() == [] and machine.releases.requests == []
