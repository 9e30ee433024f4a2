"""The kubeconfig target against a fake API server: an existing cluster is only read, unless meshconf
may install Istio there; then it removes everything it added."""

import hashlib
from pathlib import Path

import pytest

from conformance.errors import ConformanceError, TargetUnavailable
from conformance.settings import RunSettings
from conformance.targets.existing import ExistingClusterProvisioner
from tests.builders import READINESS_GATEWAY, accept_once_then_deny, fake_release, write_kubeconfig
from tests.fakeapi import ISTIO, FakeApi
from tests.fakeforward import fake_port_forward
from tests.fakegateway import FakeGateway
from tests.fakes import FakeTools
from tests.release_server import ReleaseServer

ISTIOD = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "istiod", "namespace": "istio-system"},
          "spec": {"template": {"spec": {"containers": [{"name": "discovery",
                                                          "image": "docker.io/istio/pilot:1.28.0"}]}}}}
GATEWAY = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
           "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}


def settings(**extra: object) -> RunSettings:
    return RunSettings(target="kubeconfig", context="fake", run_id="r1", **extra)  # type: ignore[arg-type]


def test_assumes_the_installed_istio_and_changes_nothing(api: FakeApi, tmp_path: Path) -> None:  # noqa: F811
    api.objects["/apis/apps/v1/namespaces/istio-system/deployments/istiod"] = ISTIOD
    api.objects["/api/v1/namespaces/istio-system/services/istio-ingressgateway"] = GATEWAY
    config = write_kubeconfig(tmp_path / "kubeconfig", api.port)
    before = hashlib.sha256(config.read_bytes()).hexdigest()
    provisioner = ExistingClusterProvisioner(settings(), kubeconfig=config)
    access = provisioner.up()
    provisioner.down()
    assert (access.mesh_version, access.kubernetes_version, access.ingress_url) == \
        ("1.28.0", "1.33.1", "http://203.0.113.10:80")
    assert [r.method for r in api.requests if r.method != "GET"] == []  # nothing written, nothing deleted
    assert hashlib.sha256(config.read_bytes()).hexdigest() == before  # the user's kubeconfig untouched


def test_no_istio_is_a_clear_error(api: FakeApi, tmp_path: Path) -> None:  # noqa: F811
    provisioner = ExistingClusterProvisioner(settings(), kubeconfig=write_kubeconfig(tmp_path / "kc", api.port))
    with pytest.raises(TargetUnavailable, match="no Istio on context 'fake'.*--install-mesh --yes"):
        provisioner.up()
    provisioner.down()


def test_installing_needs_consent(api: FakeApi, tmp_path: Path) -> None:  # noqa: F811
    provisioner = ExistingClusterProvisioner(settings(install_mesh=True),
                                             kubeconfig=write_kubeconfig(tmp_path / "kc", api.port))
    with pytest.raises(ConformanceError, match="refusing to install Istio 1.28.0 on context 'fake'.*--yes"):
        provisioner.up()
    provisioner.down()
    assert [r.method for r in api.requests if r.method != "GET"] == []


def test_never_installs_over_an_existing_istio(api: FakeApi, tmp_path: Path) -> None:  # noqa: F811
    api.objects["/apis/apps/v1/namespaces/istio-system/deployments/istiod"] = ISTIOD
    provisioner = ExistingClusterProvisioner(settings(install_mesh=True, yes=True),
                                             kubeconfig=write_kubeconfig(tmp_path / "kc", api.port))
    with pytest.raises(ConformanceError, match="Istio is already installed on context 'fake'"):
        provisioner.up()
    provisioner.down()
    assert [r.method for r in api.requests if r.method != "GET"] == []


def test_debug_bundle_runs_the_istioctl_of_the_mesh_under_test(api: FakeApi, tmp_path: Path,  # noqa: F811
                                                               fake_tools: FakeTools) -> None:  # noqa: F811
    api.objects["/apis/apps/v1/namespaces/istio-system/deployments/istiod"] = ISTIOD
    api.objects["/api/v1/namespaces/istio-system/services/istio-ingressgateway"] = GATEWAY
    fake_tools.set_scenario({"istioctl": {"proxy-status": {"stdout": "istioctl from PATH\n"}}})
    provisioner = ExistingClusterProvisioner(settings(cache_dir=tmp_path / "cache"),
                                             kubeconfig=write_kubeconfig(tmp_path / "kc", api.port))
    provisioner.up()
    try:
        provisioner.collect_debug(tmp_path / "no-release")  # nothing cached: the one on PATH
        # A cached release of the version found on the cluster (1.28.0) is preferred.
        cached = tmp_path / "cache" / "istio-1.28.0" / "bin" / "istioctl"
        cached.parent.mkdir(parents=True)
        cached.write_text('#!/bin/sh\necho "cached istioctl $1 $*"\n')
        cached.chmod(0o755)
        provisioner.collect_debug(tmp_path / "cached")
    finally:
        provisioner.down()
    status = "istioctl/proxy-status.txt"
    assert (tmp_path / "no-release" / status).read_text() == "istioctl from PATH\n"
    assert (tmp_path / "cached" / status).read_text().startswith(
        f"cached istioctl proxy-status proxy-status --kubeconfig {tmp_path / 'kc'} --context fake")


def test_install_on_consent_waits_for_the_mesh_then_removes_all_it_added(  # noqa: F811
        api: FakeApi, tmp_path: Path, fake_tools: FakeTools, release_server: ReleaseServer,  # noqa: F811
        gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # The cluster after istioctl's install: its CRDs, a gateway Service without a LoadBalancer
    # address and a ready gateway pod, reached through a port-forward to the fake gateway.
    fake_tools.set_scenario({"istioctl": {"install": {"stdout": "Installation complete\n"},
                                          "uninstall": {"stdout": "Uninstalled\n"}}})
    fake_tools.remove("istioctl")  # only the downloaded release's istioctl may answer
    release_server.publish("1.28.0", fake_release("1.28.0"))
    api.groups.update(ISTIO)
    api.deployments_roll_out = True
    accept_once_then_deny(api)
    api.after_apply[READINESS_GATEWAY] = gateway.start
    api.objects["/api/v1/namespaces/istio-system/services/istio-ingressgateway"] = {**GATEWAY, "status": {}}
    api.objects["/api/v1/namespaces/istio-system/pods/istio-ingressgateway-5f7"] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "istio-ingressgateway-5f7", "namespace": "istio-system",
                     "labels": {"istio": "ingressgateway"}},
        "spec": {"containers": [{"name": "istio-proxy", "image": "proxyv2"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    forwards = fake_port_forward(monkeypatch, {8080: ("127.0.0.1", gateway.port)})
    config = write_kubeconfig(tmp_path / "kc", api.port)
    before = hashlib.sha256(config.read_bytes()).hexdigest()

    provisioner = ExistingClusterProvisioner(
        settings(install_mesh=True, yes=True, cache_dir=tmp_path / "cache", istio_releases=release_server.url),
        kubeconfig=config)
    access = provisioner.up()
    assert access.mesh_version == "1.28.0" and access.ingress_url.startswith("http://127.0.0.1:")
    assert set(gateway.hosts) == {"readiness.meshconf.test"}  # answered through the forward
    assert {(pod, port) for pod, _, port in forwards} == {("istio-ingressgateway-5f7", 8080)}
    applied = {r.path for r in api.requests if r.method == "PATCH"}
    assert {"/apis/apps/v1/namespaces/istio-system/deployments/prometheus",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/prometheus"} <= applied
    provisioner.down()

    # Everything meshconf added is gone: the addons (cluster-scoped RBAC included), then Istio.
    deleted = {r.path for r in api.requests if r.method == "DELETE"}
    assert {"/apis/apps/v1/namespaces/istio-system/deployments/prometheus",
            "/apis/apps/v1/namespaces/istio-system/deployments/kiali",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/prometheus",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kiali"} <= deleted
    assert not any("/prometheus" in path or "/kiali" in path for path in api.objects)
    flags = ["--kubeconfig", str(config), "--context", "fake"]
    assert [argv[1] for argv in fake_tools.calls("istioctl")] == ["install", "uninstall"]
    assert fake_tools.calls("istioctl")[1] == ["istioctl", "uninstall", *flags, "--purge", "-y"]
    assert hashlib.sha256(config.read_bytes()).hexdigest() == before  # the user's kubeconfig untouched
