"""The kubeconfig target against a fake API server: an existing cluster is only read, unless meshconf
may install Istio there; then it removes everything it added."""

import hashlib
from pathlib import Path
from typing import Any

import pytest

from conformance import features
from conformance.errors import ConformanceError, TargetUnavailable
from conformance.names import INGRESS_GATEWAY, ISTIO_NAMESPACE
from conformance.targets.cluster import TLS_FEATURE, ClusterTarget
from conformance.targets.gateway_api_ingress import KUBERNETES_INGRESS_FEATURE
from conformance.targets.existing import MESH_WIDE_FEATURE, ExistingClusterProvisioner, istiod_version
from conformance.targets.istio_revision import REVISION_FEATURE
from tests.cluster_builders import seed_namespace, write_kubeconfig
from tests.release_builders import (
    GATEWAY_API,
    GATEWAY_API_CRDS,
    ISTIO_VERSION,
    READINESS_GATEWAY,
    accept_once_then_deny,
    fake_release,
    install_crds,
    istio_deployment,
    publish_gateway_api,
)
from tests.existing_builders import (DEPLOYMENTS, GATEWAY, ISTIOD, ISTIOD_PATH, chart_gateway, gateway_pod,
                                     install_istio_crds, istioctl_gateway, kube_config, service_path, settings)
from tests.fakeapi import FakeApi, items
from tests.fakeforward import fake_port_forward
from tests.fakegateway import FakeGateway
from tests.fakes import FakeTools
from tests.release_server import ReleaseServer

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
    # Not meshconf's mesh: no second revision beside it, and the report says how to get one.
    assert access.istio is None
    assert access.unsupported[REVISION_FEATURE] == (
        "meshconf did not install Istio on context 'fake', and installs a second control plane revision only "
        "beside a mesh it installed; pass --install-mesh --yes on a cluster without Istio to let meshconf "
        "install (and later remove) both")
    # Without --yes, nothing mesh-wide either: the one feature applying mesh-wide policy says why.
    assert access.unsupported[MESH_WIDE_FEATURE].startswith(
        "it applies a mesh-wide PeerAuthentication (STRICT, in istio-system) for a few seconds")
    assert ExistingClusterProvisioner(settings(yes=True), kubeconfig=config)._mesh_wide_unsupported() == {}
    assert [r.method for r in api.requests if r.method != "GET"] == []  # nothing written, nothing deleted
    assert hashlib.sha256(config.read_bytes()).hexdigest() == before  # the user's kubeconfig untouched


def test_revision_injection_is_not_supported_beside_a_mesh_meshconf_did_not_install(
        api: FakeApi, tmp_path: Path, fake_tools: FakeTools) -> None:
    api.objects[ISTIOD_PATH] = ISTIOD
    api.objects["/api/v1/namespaces/istio-system/services/istio-ingressgateway"] = GATEWAY
    target = ClusterTarget(settings(), ExistingClusterProvisioner(
        settings(), kubeconfig=write_kubeconfig(tmp_path / "kc", api.port)))
    target.up()
    try:
        assert not target.supports(REVISION_FEATURE)
        assert "pass --install-mesh --yes" in (target.unsupported_reason(REVISION_FEATURE) or "")
        with pytest.raises(ConformanceError, match="cannot install Istio revision canary: meshconf did not install"):
            with target.revision("canary"):
                pass
    finally:
        target.down()
    assert fake_tools.all_calls() == []  # no istioctl, no helm: nothing installed or removed


@pytest.mark.parametrize("yes", [False, True])
def test_mesh_wide_strict_is_not_supported_on_a_context_without_yes(
        api: FakeApi, tmp_path: Path, fake_tools: FakeTools, yes: bool) -> None:
    api.objects[ISTIOD_PATH] = ISTIOD
    api.objects["/api/v1/namespaces/istio-system/services/istio-ingressgateway"] = GATEWAY
    install_crds(api, *GATEWAY_API_CRDS)  # so that --yes has nothing to install
    # The suite's fixture skips a feature as NOT_SUPPORTED when the target does not support it, by
    # its catalogue name: the one MESH-SECURITY's mesh-wide check is marked with.
    assert features.get(MESH_WIDE_FEATURE).name == "MutualTLSStrict"
    target = ClusterTarget(settings(yes=yes), ExistingClusterProvisioner(
        settings(yes=yes), kubeconfig=write_kubeconfig(tmp_path / "kc", api.port)))
    target.up()
    try:
        assert target.supports(MESH_WIDE_FEATURE) == yes
        assert target.unsupported_reason(MESH_WIDE_FEATURE) == (None if yes else (
            "it applies a mesh-wide PeerAuthentication (STRICT, in istio-system) for a few seconds, which every "
            "workload of context 'fake' would see; pass --yes to allow it"))
        assert target.supports("MutualTLSPermissive") and target.supports("PortLevelMTLS")  # namespace-scoped
    finally:
        target.down()
    assert [r.method for r in api.requests if r.method != "GET"] == []  # --yes alone changes nothing
    assert fake_tools.all_calls() == []


def test_no_istio_is_a_clear_error(api: FakeApi, tmp_path: Path) -> None:  # noqa: F811
    provisioner = ExistingClusterProvisioner(settings(), kubeconfig=write_kubeconfig(tmp_path / "kc", api.port))
    with pytest.raises(TargetUnavailable, match="no Istio on context 'fake'.*--install-mesh --yes"):
        provisioner.up()
    provisioner.down()


def test_installing_needs_consent(api: FakeApi, tmp_path: Path) -> None:  # noqa: F811
    provisioner = ExistingClusterProvisioner(settings(install_mesh=True),
                                             kubeconfig=write_kubeconfig(tmp_path / "kc", api.port))
    with pytest.raises(ConformanceError, match=f"refusing to install Istio {ISTIO_VERSION} on context 'fake'.*--yes"):
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
    release_server.publish(ISTIO_VERSION, fake_release())
    install_istio_crds(api)  # istioctl installed them, in its namespace
    seed_namespace(api, ISTIO_NAMESPACE)
    seed_namespace(api, "default")  # the cluster's own: the readiness check's invalid VirtualService goes there
    api.deployments_roll_out = True
    accept_once_then_deny(api)
    api.after_apply[READINESS_GATEWAY] = gateway.start
    api.objects["/api/v1/namespaces/istio-system/services/istio-ingressgateway"] = istioctl_gateway(address=None)
    path, pod = gateway_pod("istio-ingressgateway-5f7", "istio-system", {"istio": "ingressgateway"})
    api.objects[path] = pod
    other = chart_gateway("istio-ingress", "istio-ingress", address="203.0.113.20")  # not the one we install
    api.objects[service_path(other)] = other
    forwards = fake_port_forward(monkeypatch, {8080: ("127.0.0.1", gateway.port)})
    config = write_kubeconfig(tmp_path / "kc", api.port)
    before = hashlib.sha256(config.read_bytes()).hexdigest()

    provisioner = ExistingClusterProvisioner(
        settings(install_mesh=True, yes=True, cache_dir=tmp_path / "cache", istio_releases=release_server.url,
                 gateway_api_releases=publish_gateway_api(release_server, GATEWAY_API)),
        kubeconfig=config)
    access = provisioner.up()
    assert access.mesh_version == ISTIO_VERSION and access.ingress_url.startswith("http://127.0.0.1:")
    # meshconf's mesh (consent given): a second revision goes beside it, installed the same way.
    assert access.istio is provisioner.installed and REVISION_FEATURE not in access.unsupported
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
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kiali",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/httproutes.gateway.networking.k8s.io"} <= deleted
    assert not any("/prometheus" in path or "/kiali" in path for path in api.objects)
    flags = ["--kubeconfig", str(config), "--context", "fake"]
    assert [argv[1] for argv in fake_tools.calls("istioctl")] == ["install", "uninstall"]
    assert fake_tools.calls("istioctl")[1] == ["istioctl", "uninstall", *flags, "--purge", "-y"]
    assert hashlib.sha256(config.read_bytes()).hexdigest() == before  # the user's kubeconfig untouched


def test_a_helm_install_where_nothing_gives_a_load_balancer_an_address_waits_for_the_gateway_pods(
        api: FakeApi, tmp_path: Path, fake_tools: FakeTools, release_server: ReleaseServer,
        gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    # A cluster without a load-balancer controller (kind by kubeconfig, minikube, bare metal): the gateway
    # chart's LoadBalancer Service never gets an address, so it is reached by port-forward. The fake
    # helm waits as Helm does: a --wait on the gateway chart would never end.
    release_server.publish(ISTIO_VERSION, fake_release())
    install_istio_crds(api)  # the base chart's
    accept_once_then_deny(api)
    api.after_apply[READINESS_GATEWAY] = gateway.start
    pod_path, pod = gateway_pod("istio-ingressgateway-6c8", "istio-system", {"istio": "ingressgateway"})
    polls: list[int] = []

    def rollout() -> tuple[int, Any]:
        """The gateway's pod ready only on the third look: its image is pulled meanwhile."""
        polls.append(len(api.requests))
        if len(polls) < 3:
            return items(istio_deployment(INGRESS_GATEWAY, 0))
        api.objects[pod_path] = pod
        return items(istio_deployment(INGRESS_GATEWAY, 1))

    api.script("GET", DEPLOYMENTS, rollout)
    forwards = fake_port_forward(monkeypatch, {80: ("127.0.0.1", gateway.port)})
    provisioner = ExistingClusterProvisioner(
        settings(install_mesh=True, yes=True, install_method="helm", cache_dir=tmp_path / "cache",
                 istio_releases=release_server.url,
                 gateway_api_releases=publish_gateway_api(release_server, GATEWAY_API)),
        kubeconfig=write_kubeconfig(tmp_path / "kc", api.port))
    try:
        access = provisioner.up()
        assert access.ingress_url.startswith("http://127.0.0.1:")
    finally:
        provisioner.down()
    upgrades = [argv for argv in fake_tools.calls("helm") if argv[1] == "upgrade"]
    assert [argv[3] for argv in upgrades] == ["istio-base", "istiod", INGRESS_GATEWAY]
    assert ["--wait" in argv for argv in upgrades] == [True, True, False]
    assert not any(arg.startswith("service.type=") for arg in upgrades[2])  # the chart's LoadBalancer
    # The port-forward went to the gateway's pod once its rollout was done, and it answered.
    first_pod_lookup = min(api.seen("GET", "/api/v1/namespaces/istio-system/pods"))
    assert len(polls) >= 3 and first_pod_lookup > polls[2]
    assert forwards and {(name, port) for name, _, port in forwards} == {("istio-ingressgateway-6c8", 80)}
    assert set(gateway.hosts) == {"readiness.meshconf.test"}
    assert [argv[2] for argv in fake_tools.calls("helm") if argv[1] == "uninstall"] == \
        [INGRESS_GATEWAY, "istiod", "istio-base"]
    assert fake_tools.state()["helm_releases"] == {}



def istiod(image: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"labels": labels or {}},
            "spec": {"template": {"spec": {"containers": [{"name": "discovery", "image": image}]}}}}


@pytest.mark.parametrize(("image", "version"), [
    ("docker.io/istio/pilot:1.28.0", "1.28.0"),
    ("istio/pilot:1.28.1-distroless", "1.28.1"),
    ("gcr.io/istio-release/pilot:1.29.0-debug", "1.29.0"),
    ("istio/pilot:1.28.1@sha256:" + "ab" * 32, "1.28.1"),
    ("istio/pilot:1.28.1-distroless@sha256:" + "ab" * 32, "1.28.1"),
    ("registry.local:5000/istio/pilot:1.30.0-rc.1-distroless", "1.30.0-rc.1"),
    ("istio/pilot:1.31.0-alpha.0", "1.31.0-alpha.0"),
])
def test_istio_version_of_the_istiod_image(image: str, version: str) -> None:
    assert istiod_version(istiod(image)) == version


@pytest.mark.parametrize("image", [
    "docker.io/istio/pilot@sha256:" + "cd" * 32, "registry.local:5000/istio/pilot", "istio/pilot:latest",
    "istio/pilot:1.28.1-custom", "istio/pilot:1.28", "istio/pilot:1.30.0-rc-distroless"])
def test_without_a_version_tag_the_charts_label_tells(image: str) -> None:
    # The charts label istiod app.kubernetes.io/version (manifests/charts/.../zzz_profile.yaml, istio.labels).
    assert istiod_version(istiod(image, {"app.kubernetes.io/version": "1.27.4"})) == "1.27.4"
    assert istiod_version(istiod(image)) == "unknown"


def test_the_istio_version_comes_from_the_image_on_the_cluster(api: FakeApi, tmp_path: Path) -> None:
    distroless = {**ISTIOD, "spec": {"template": {"spec": {"containers": [
        {"name": "discovery", "image": "docker.io/istio/pilot:1.29.2-distroless@sha256:" + "ef" * 32}]}}}}
    api.objects[ISTIOD_PATH] = distroless
    api.objects[service_path(GATEWAY)] = GATEWAY
    provisioner = ExistingClusterProvisioner(settings(), kubeconfig=kube_config(tmp_path, api))
    access = provisioner.up()
    provisioner.down()
    # The Kubernetes version is the API server's /version (v1.33.1 in the fake), not any table's.
    assert (access.mesh_version, access.kubernetes_version) == ("1.29.2", "1.33.1")


@pytest.mark.parametrize("yes", [False, True])
def test_features_creating_objects_outside_the_runs_namespaces_need_yes_on_a_context(
        api: FakeApi, tmp_path: Path, fake_tools: FakeTools, yes: bool) -> None:
    api.objects[ISTIOD_PATH] = ISTIOD
    api.objects["/api/v1/namespaces/istio-system/services/istio-ingressgateway"] = GATEWAY
    install_crds(api, *GATEWAY_API_CRDS)
    assert {features.get(TLS_FEATURE).name, features.get(KUBERNETES_INGRESS_FEATURE).name} == {
        "IngressTLS", "KubernetesIngress"}
    target = ClusterTarget(settings(yes=yes), ExistingClusterProvisioner(
        settings(yes=yes), kubeconfig=write_kubeconfig(tmp_path / "kc", api.port)))
    target.up()
    try:
        assert target.supports(KUBERNETES_INGRESS_FEATURE) == yes
        assert target.unsupported_reason(KUBERNETES_INGRESS_FEATURE) == (None if yes else (
            "it creates the cluster-scoped IngressClass istio when context 'fake' has none, and an Ingress that "
            "the shared ingress gateway serves; pass --yes to allow it"))
        assert target.supports(TLS_FEATURE) == yes  # the gateway's Service has an https port: only --yes lacks
        assert target.unsupported_reason(TLS_FEATURE) == (None if yes else (
            "it creates a Secret (a test certificate and its private key) in the ingress gateway's namespace "
            "istio-system and adds an HTTPS server to the shared ingress gateway of context 'fake'; "
            "pass --yes to allow it"))
        assert target.supports("IngressGateway") and target.supports("GatewayAPIIngress")  # the run's namespaces
    finally:
        target.down()
    assert [r.method for r in api.requests if r.method != "GET"] == []
    assert fake_tools.all_calls() == []
