"""The kind target's contract with the kind and docker CLIs, proven with fake executables."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.errors import ConformanceError, TargetUnavailable
from conformance.settings import Timeouts
from conformance.targets import kind
from conformance.targets.kind import (
    INGRESS_HTTP_NODEPORT,
    INGRESS_HTTPS_NODEPORT,
    NODE_IMAGES,
    KindCluster,
    parse_kind_version,
    preflight,
)
from conformance.targets.preflight import Check, require
from tests.cluster_builders import fake_proc
from tests.fakes import FakeTools
from tests.fakes.engine import fake_docker

# kind.x-k8s.io/v1alpha4 as defined in kubernetes-sigs/kind v0.32.0,
# pkg/apis/config/v1alpha4/types.go (yaml tags of Cluster, Node, PortMapping, Networking).
CLUSTER_FIELDS = {
    "kind", "apiVersion", "name", "nodes", "networking", "featureGates", "runtimeConfig",
    "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902",
    "containerdConfigPatches", "containerdConfigPatchesJSON6902",
}
NODE_FIELDS = {
    "role", "image", "labels", "extraMounts", "extraPortMappings",
    "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902",
}
PORT_MAPPING_FIELDS = {"containerPort", "hostPort", "listenAddress", "protocol"}
NETWORKING_FIELDS = {
    "ipFamily", "apiServerPort", "apiServerAddress", "podSubnet", "serviceSubnet",
    "disableDefaultCNI", "kubeProxyMode", "dnsSearch",
}
NODE_ROLES = {"control-plane", "worker"}
PROTOCOLS = {"TCP", "UDP", "SCTP"}

DAEMON_DOWN = ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
               "Is the docker daemon running?\n")
CREATE_FAILS = {"kind": {"create cluster": {
    "exit": 1,
    "stderr": 'Creating cluster "mc" ...\n ✓ Ensuring node image 🖼\n ✗ Starting control-plane 🕹️\n'
              "ERROR: failed to create cluster: failed to init node with kubeadm: command "
              '"docker exec --privileged mc-control-plane kubeadm init" failed with error: exit status 1\n',
}}}


def cluster(tmp_path: Path, **kwargs: Any) -> KindCluster:
    return KindCluster(**{"name": "mc", "kubernetes": "1.35", "work_dir": tmp_path / "run", **kwargs})


# -- node images and configuration ---------------------------------------------------------

def test_node_images_are_pinned_by_digest_for_their_minor() -> None:
    assert kind.KIND_VERSION == "v0.32.0"
    for minor, image in NODE_IMAGES.items():
        match = re.fullmatch(r"kindest/node:v(\d+\.\d+)\.\d+@sha256:[0-9a-f]{64}", image)
        assert match, image
        assert match.group(1) == minor
    # The release default, as in kind's pkg/apis/config/defaults/image.go at tag v0.32.0.
    assert NODE_IMAGES["1.36"] == (
        "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5")


def assert_v1alpha4(config: dict[str, Any]) -> None:
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert set(config) <= CLUSTER_FIELDS, set(config) - CLUSTER_FIELDS
    assert set(config.get("networking", {})) <= NETWORKING_FIELDS
    for node in config["nodes"]:
        assert set(node) <= NODE_FIELDS, set(node) - NODE_FIELDS
        assert node["role"] in NODE_ROLES
        for mapping in node.get("extraPortMappings", []):
            assert set(mapping) <= PORT_MAPPING_FIELDS, set(mapping) - PORT_MAPPING_FIELDS
            assert mapping.get("protocol", "TCP") in PROTOCOLS


@pytest.mark.parametrize("nodes", [1, 3])
def test_config_uses_only_v1alpha4_fields(tmp_path: Path, nodes: int) -> None:
    config = cluster(tmp_path, nodes=nodes).config()
    assert_v1alpha4(config)
    roles = [n["role"] for n in config["nodes"]]
    assert roles == ["control-plane"] + ["worker"] * (nodes - 1)
    assert {n["image"] for n in config["nodes"]} == {NODE_IMAGES["1.35"]}


def test_port_mappings_bind_loopback_to_the_gateway_node_ports(tmp_path: Path) -> None:
    config = cluster(tmp_path, http_port=18080, https_port=18443, nodes=2).config()
    control_plane, worker = config["nodes"]
    assert control_plane["extraPortMappings"] == [
        {"containerPort": 30080, "hostPort": 18080, "listenAddress": "127.0.0.1", "protocol": "TCP"},
        {"containerPort": 30443, "hostPort": 18443, "listenAddress": "127.0.0.1", "protocol": "TCP"},
    ]
    assert (INGRESS_HTTP_NODEPORT, INGRESS_HTTPS_NODEPORT) == (30080, 30443)
    assert "extraPortMappings" not in worker  # a host port can be bound by one node only


def test_write_config_is_the_config_as_yaml(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    path = c.write_config()
    assert path == tmp_path / "run" / "kind-config.yaml"
    assert yaml.safe_load(path.read_text()) == c.config()


def test_unknown_kubernetes_minor_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConformanceError, match=r"Kubernetes 1\.30; choose one of: 1\.33, 1\.34, 1\.35, 1\.36"):
        cluster(tmp_path, kubernetes="1.30")


# -- commands -----------------------------------------------------------------------------

def test_commands_are_plain_argv(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    run = str(tmp_path / "run")
    assert c.create_argv() == [
        "kind", "create", "cluster", "--name", "mc", "--config", f"{run}/kind-config.yaml",
        "--image", NODE_IMAGES["1.35"], "--kubeconfig", f"{run}/kubeconfig", "--wait", "5m", "--retain",
    ]
    assert c.delete_argv() == ["kind", "delete", "cluster", "--name", "mc", "--kubeconfig", f"{run}/kubeconfig"]
    assert c.export_logs_argv(Path("/x/logs")) == ["kind", "export", "logs", "/x/logs", "--name", "mc"]
    assert c.get_clusters_argv() == ["kind", "get", "clusters"]


@pytest.mark.parametrize(("install", "flag"), [(300, "5m"), (600, "10m"), (90, "90s"), (0.5, "1s")])
def test_wait_flag_follows_the_install_timeout(tmp_path: Path, install: float, flag: str) -> None:
    argv = cluster(tmp_path, timeouts=Timeouts(install=install)).create_argv()
    assert argv[argv.index("--wait") + 1] == flag


def test_building_commands_runs_nothing(tmp_path: Path, fake_tools: FakeTools) -> None:
    c = cluster(tmp_path)
    c.create_argv(), c.delete_argv(), c.export_logs_argv(tmp_path), c.get_clusters_argv(), c.config()
    assert fake_tools.all_calls() == []
    assert not (tmp_path / "run").exists()


# -- lifecycle ----------------------------------------------------------------------------

def test_create_checks_then_creates_with_every_flag(tmp_path: Path, fake_tools: FakeTools) -> None:
    c = cluster(tmp_path)
    assert c.create(reuse=False) is True
    assert fake_tools.calls("kind") == [["kind", "get", "clusters"], c.create_argv()]
    assert fake_tools.state()["kind_clusters"] == ["mc"]
    assert yaml.safe_load(c.config_path.read_text()) == c.config()
    assert c.kubeconfig.is_file()  # private kubeconfig, written by kind
    assert not (tmp_path / "home" / ".kube").exists()


@pytest.mark.parametrize("scenario", [{"state": {"kind_clusters": ["other", "mc"]}}])
def test_reuse_skips_create(tmp_path: Path, fake_tools: FakeTools) -> None:
    c = cluster(tmp_path)
    assert c.create(reuse=True) is False
    assert fake_tools.calls("kind") == [["kind", "get", "clusters"]]
    # A reused cluster is not ours: the end of the run leaves it alone.
    assert c.release(created=False) is False
    assert fake_tools.calls("kind") == [["kind", "get", "clusters"]]


@pytest.mark.parametrize("scenario", [{"state": {"kind_clusters": ["mc"]}}])
def test_existing_cluster_without_reuse_is_an_error(tmp_path: Path, fake_tools: FakeTools) -> None:
    with pytest.raises(ConformanceError, match=r"'mc' already exists .*pass --reuse"):
        cluster(tmp_path).create(reuse=False)
    assert fake_tools.calls("kind") == [["kind", "get", "clusters"]]
    assert fake_tools.state()["kind_clusters"] == ["mc"]


@pytest.mark.parametrize("scenario", [CREATE_FAILS])
def test_failed_create_exports_logs_then_deletes_then_reports_stderr(tmp_path: Path, fake_tools: FakeTools) -> None:
    c = cluster(tmp_path)
    with pytest.raises(TargetUnavailable) as caught:
        c.create(reuse=False)
    assert fake_tools.calls("kind") == [
        ["kind", "get", "clusters"],
        c.create_argv(),
        c.export_logs_argv(tmp_path / "run" / "kind-logs"),
        c.delete_argv(),
    ]
    message = str(caught.value)
    assert "\n" not in message
    assert "kind could not create cluster 'mc' (exit 1)" in message
    assert "kubeadm init\" failed with error: exit status 1" in message
    assert f"node logs in {tmp_path / 'run' / 'kind-logs'}" in message
    assert "half-created cluster was deleted" in message
    assert (tmp_path / "run" / "kind-logs" / "mc-control-plane" / "kubelet.log").is_file()
    assert fake_tools.state()["kind_clusters"] == []


@pytest.mark.parametrize("scenario", [{"kind": {
    **CREATE_FAILS["kind"],
    "export logs": {"exit": 1, "stderr": "ERROR: failed to export logs: disk full\n"},
}}])
def test_failed_log_export_still_deletes(tmp_path: Path, fake_tools: FakeTools) -> None:
    c = cluster(tmp_path)
    with pytest.raises(TargetUnavailable, match=r"no node logs .*disk full.*half-created cluster was deleted"):
        c.create(reuse=False)
    assert [argv[1] for argv in fake_tools.calls("kind")] == ["get", "create", "export", "delete"]
    assert fake_tools.state()["kind_clusters"] == []


@pytest.mark.parametrize("scenario", [{"kind": {"create cluster": {"sleep": 30}}}])
def test_create_that_outlives_its_timeout_is_stopped_and_cleaned_up(tmp_path: Path, fake_tools: FakeTools) -> None:
    c = cluster(tmp_path, timeouts=Timeouts(install=0.5))  # the call gets 2 x install
    with pytest.raises(TargetUnavailable, match=r"\(timed out\): .*timed out after 1s"):
        c.create(reuse=False)
    assert [argv[1] for argv in fake_tools.calls("kind")] == ["get", "create", "export", "delete"]
    assert fake_tools.state()["kind_clusters"] == []


def test_release_deletes_only_what_we_created(tmp_path: Path, fake_tools: FakeTools) -> None:
    c = cluster(tmp_path)
    created = c.create(reuse=False)
    assert c.release(created, keep=True) is False  # --keep
    assert fake_tools.state()["kind_clusters"] == ["mc"]
    assert c.release(created) is True
    assert fake_tools.calls("kind")[-1] == c.delete_argv()
    assert fake_tools.state()["kind_clusters"] == []


def test_delete_is_idempotent(tmp_path: Path, fake_tools: FakeTools) -> None:
    c = cluster(tmp_path)
    c.create(reuse=False)
    c.delete()
    c.delete()  # kind delete succeeds for a missing name; so do we
    assert fake_tools.calls("kind")[-2:] == [c.delete_argv(), c.delete_argv()]
    assert c.exists() is False


def test_export_logs(tmp_path: Path, fake_tools: FakeTools) -> None:
    c = cluster(tmp_path)
    c.create(reuse=False)
    assert c.export_logs(tmp_path / "evidence") == tmp_path / "evidence"
    assert fake_tools.calls("kind")[-1] == ["kind", "export", "logs", str(tmp_path / "evidence"), "--name", "mc"]
    with pytest.raises(ConformanceError, match=r"could not export logs .*unknown cluster \"other\""):
        cluster(tmp_path, name="other").export_logs(tmp_path / "x")


def test_missing_kind_says_how_to_install_it(tmp_path: Path, fake_tools: FakeTools) -> None:
    fake_tools.remove("kind")
    with pytest.raises(TargetUnavailable) as caught:
        cluster(tmp_path).create(reuse=False)
    message = str(caught.value)
    assert message.startswith("kind is not installed (not on PATH): install kind v0.32.0 or newer: ")
    assert "https://kind.sigs.k8s.io/docs/user/quick-start/#installation" in message
    assert fake_tools.all_calls() == []


@pytest.mark.parametrize("scenario", [{"kind": {"get clusters": {
    "exit": 1, "stderr": f'ERROR: failed to list clusters: command "docker ps -a" failed: {DAEMON_DOWN}'}}}])
def test_unusable_docker_surfaces_when_listing_clusters(tmp_path: Path, fake_tools: FakeTools) -> None:
    with pytest.raises(TargetUnavailable, match=r"`kind get clusters` failed \(exit 1\): .*Is the docker daemon"):
        cluster(tmp_path).create(reuse=True)
    assert len(fake_tools.calls("kind")) == 1


# -- preflight ----------------------------------------------------------------------------

def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_preflight_passes_on_a_ready_machine(tmp_path: Path, fake_tools: FakeTools) -> None:
    checks = preflight(fake_proc(tmp_path))
    assert [c.name for c in checks] == [
        "docker", "kind", "fs.inotify.max_user_watches", "fs.inotify.max_user_instances", "memory"]
    assert all(c.ok for c in checks), checks
    assert checks[0].detail == f"Docker engine {fake_docker.SERVER_VERSION}"
    assert checks[1].detail == "kind v0.32.0 (>= v0.32.0)"
    assert fake_tools.all_calls() == [["docker", "info", "--format", "{{.ServerVersion}}"], ["kind", "version"]]
    require(checks)  # nothing to raise


@pytest.mark.parametrize("scenario", [{"docker": {"info": {"exit": 1, "stderr": DAEMON_DOWN}}}])
def test_preflight_docker_down(tmp_path: Path, fake_tools: FakeTools) -> None:
    checks = by_name(preflight(fake_proc(tmp_path)))
    docker = checks["docker"]
    assert not docker.ok
    assert "Is the docker daemon running?" in docker.detail
    assert "sudo systemctl start docker" in docker.fix
    assert all(c.ok for name, c in checks.items() if name != "docker")
    with pytest.raises(TargetUnavailable, match=r"^docker: no Docker engine answers .*\(fix: start the Docker"):
        require(checks.values())


def test_preflight_docker_and_kind_missing(tmp_path: Path, fake_tools: FakeTools) -> None:
    fake_tools.remove("docker")
    fake_tools.remove("kind")
    checks = by_name(preflight(fake_proc(tmp_path)))
    assert not checks["docker"].ok
    assert checks["docker"].fix == "install Docker Engine: https://docs.docker.com/engine/install/"
    assert not checks["kind"].ok
    # What is wrong, then how to fix it, each said once.
    assert checks["kind"].detail == "kind is not installed (not on PATH)"
    assert checks["docker"].detail == "docker is not installed (not on PATH)"
    assert "https://kind.sigs.k8s.io/docs/user/quick-start/#installation" in checks["kind"].fix


@pytest.mark.parametrize("scenario", [
    {"kind": {"version": {"stdout": "kind v0.29.0 go1.24.2 linux/amd64\n"}}},
    {"kind": {"version": {"stdout": "kind v0.32.0-alpha.41+6f0f9e8b7a6c5d go1.25.1 linux/amd64\n"}}},
])
def test_preflight_old_kind(tmp_path: Path, fake_tools: FakeTools) -> None:
    check = by_name(preflight(fake_proc(tmp_path)))["kind"]
    assert not check.ok
    assert re.fullmatch(r"kind v0\.(29\.0|32\.0-alpha\S+) is older than v0\.32\.0, which the pinned node images "
                        r"need", check.detail), check.detail
    assert check.fix.startswith("install kind v0.32.0 or newer: https://kind.sigs.k8s.io/")


@pytest.mark.parametrize("scenario", [{"kind": {"version": {"stdout": "", "stderr": "segfault\n", "exit": 2}}}])
def test_preflight_unreadable_kind_version(tmp_path: Path, fake_tools: FakeTools) -> None:
    check = by_name(preflight(fake_proc(tmp_path)))["kind"]
    assert not check.ok
    assert check.detail == "`kind version` gave no version (exit 2): segfault"


@pytest.mark.parametrize(("text", "core", "pre", "ok"), [
    ("kind v0.32.0 go1.24.2 linux/amd64", (0, 32, 0), "", True),
    ("kind v0.33.1 go1.25.0 darwin/arm64", (0, 33, 1), "", True),
    ("kind v1.0.0 go1.26 linux/amd64", (1, 0, 0), "", True),
    ("kind v0.33.0-alpha.12+fed268827e21ca go1.25 linux/amd64", (0, 33, 0), "alpha.12", True),
    ("kind v0.32.0-alpha go1.25 linux/amd64", (0, 32, 0), "alpha", False),
    ("kind v0.31.0 go1.25.5 linux/amd64", (0, 31, 0), "", False),
    ("0.32.0", (0, 32, 0), "", True),  # `kind version -q` prints the bare semver
])
def test_parse_kind_version(text: str, core: tuple[int, int, int], pre: str, ok: bool) -> None:
    version = parse_kind_version(text)
    assert version is not None
    assert (version.core, version.pre_release) == (core, pre)
    assert version.at_least(kind.MIN_KIND_VERSION) is ok


def test_parse_kind_version_without_a_version() -> None:
    assert parse_kind_version("kind: command output changed") is None


def test_preflight_low_inotify_limits(tmp_path: Path, fake_tools: FakeTools) -> None:
    checks = by_name(preflight(fake_proc(tmp_path, watches=8192, instances=128)))
    watches, instances = checks["fs.inotify.max_user_watches"], checks["fs.inotify.max_user_instances"]
    assert not watches.ok and not instances.ok
    assert watches.detail.startswith("fs.inotify.max_user_watches is 8192, kind needs at least 524288")
    assert watches.fix.startswith("sudo sysctl fs.inotify.max_user_watches=524288")
    assert instances.fix.startswith("sudo sysctl fs.inotify.max_user_instances=512")
    assert "/etc/sysctl.d/" in instances.fix


def test_preflight_low_memory(tmp_path: Path, fake_tools: FakeTools) -> None:
    check = by_name(preflight(fake_proc(tmp_path, available_kib=3 * 1024**2)))["memory"]
    assert not check.ok
    assert check.detail == "3.0 GiB available, a kind cluster with Istio and Bookinfo needs about 6 GiB"
    assert check.fix.startswith("free at least 3.0 GiB")


def test_preflight_without_linux_proc_files_says_it_did_not_check(tmp_path: Path, fake_tools: FakeTools) -> None:
    (tmp_path / "empty").mkdir()
    checks = by_name(preflight(tmp_path / "empty"))
    for name in ("fs.inotify.max_user_watches", "fs.inotify.max_user_instances", "memory"):
        assert checks[name].ok
        assert checks[name].detail.startswith("not checked:")
