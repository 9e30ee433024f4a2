"""MeshUpgrade on a cluster, against the fake API server and the fake istioctl: the old Istio's revision
installed from its own release (and without the base component, whose older CRDs would replace the
mesh's), removed once whether the test removes it or the block's end does; a namespace relabelled and
its Deployments restarted as kubectl does; the feature NOT_SUPPORTED where it cannot run."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import manifests
from conformance.errors import ConformanceError
from conformance.mesh_upgrade import UPGRADE_FEATURE, UPGRADE_MANIFEST
from conformance.names import ISTIO_REV, RUN_ID_LABEL
from conformance.settings import RunSettings
from conformance.targets.cluster import ClusterTarget
from conformance.targets import istio_release
from conformance.targets.istio import IstioInstall
from conformance.targets.istio_revision import BASE_COMPONENT
from conformance.targets.kube import RESTARTED_AT
from tests.cluster_builders import cluster_target, running_cluster, seed_namespace
from tests.fakeapi import FakeApi
from tests.fakes import FakeTools
from tests.release_builders import ISTIO_VERSION, fake_release, istio_deployment
from tests.release_server import ReleaseServer

OLD, OLD_REVISION = "1.27.9", "1-27-9"
OLD_ISTIOD = f"/apis/apps/v1/namespaces/istio-system/deployments/istiod-{OLD_REVISION}"
OLD_INJECTOR = ("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/"
                f"istio-sidecar-injector-{OLD_REVISION}")


def patched_injector() -> dict:
    [doc] = manifests.load("local/istio-sidecar-injector-canary.yaml")
    doc["metadata"]["name"] = f"istio-sidecar-injector-{OLD_REVISION}"
    for hook in doc["webhooks"]:
        hook["clientConfig"]["caBundle"] = "Q0E="
    return doc


@pytest.fixture
def owned(api: FakeApi, tmp_path: Path, fake_tools: FakeTools, release_server: ReleaseServer) -> Iterator[ClusterTarget]:
    """A kind target whose mesh meshconf installed with istioctl; only a downloaded release's istioctl
    answers, and Istio OLD's release is published."""
    fake_tools.set_scenario({"istioctl": {"install": {"stdout": "\u2714 Installation complete\n"}, "uninstall": {}}})
    fake_tools.remove("istioctl")
    release_server.publish(OLD, fake_release(OLD))
    release_server.publish(ISTIO_VERSION, fake_release())
    mesh = IstioInstall(version=ISTIO_VERSION, kubeconfig=tmp_path / "kubeconfig", timeout=20,
                        release_dir=istio_release.fetch_release(ISTIO_VERSION, tmp_path / "cache",
                                                                base_url=release_server.url))
    settings = RunSettings(target="kind", run_id="r1", cache_dir=tmp_path / "cache", istio_releases=release_server.url)
    api.objects[OLD_ISTIOD] = istio_deployment(f"istiod-{OLD_REVISION}", 1)
    api.objects[OLD_INJECTOR] = patched_injector()
    target = cluster_target(api, tmp_path, istio_install=mesh, settings=settings)
    target.up()
    try:
        yield target
    finally:
        target.down()


def test_the_old_istio_is_installed_from_its_own_release_without_its_base_and_removed_once(
        owned: ClusterTarget, fake_tools: FakeTools, release_server: ReleaseServer, tmp_path: Path) -> None:
    with owned.revision(OLD_REVISION, OLD) as old:
        [install] = fake_tools.calls("istioctl")
        # The old release's own istioctl ran (the fakes log every istioctl by its name alone).
        assert old.revision.install_argvs()[0][0] == str(tmp_path / "cache" / f"istio-{OLD}" / "bin" / "istioctl")
        old.remove()  # the test's last step, under load
        assert len(fake_tools.calls("istioctl")) == 2
    install, uninstall = fake_tools.calls("istioctl")  # the block's end removed nothing more
    assert f"/releases/{OLD}/istio-{OLD}-linux-amd64.tar.gz" in release_server.requests
    assert (tmp_path / "cache" / f"istio-{OLD}" / "bin" / "istioctl").is_file()
    assert install[:2] == ["istioctl", "install"] and install[install.index("--revision") + 1] == OLD_REVISION
    assert f"{BASE_COMPONENT}=false" in install and "profile=minimal" in install
    assert uninstall[:2] == ["istioctl", "uninstall"] and uninstall[uninstall.index("--revision") + 1] == OLD_REVISION


def test_the_mesh_own_version_as_a_revision_keeps_its_base(owned: ClusterTarget, fake_tools: FakeTools,
                                                          api: FakeApi, release_server: ReleaseServer) -> None:
    api.objects[OLD_ISTIOD.replace(OLD_REVISION, "canary")] = istio_deployment("istiod-canary", 1)
    injector = patched_injector()
    injector["metadata"]["name"] = "istio-sidecar-injector-canary"
    api.objects[OLD_INJECTOR.replace(OLD_REVISION, "canary")] = injector
    with owned.revision("canary"):
        pass
    install, _ = fake_tools.calls("istioctl")
    assert not any(a.startswith(BASE_COMPONENT) for a in install)
    assert not any(OLD in r for r in release_server.requests)  # nothing more downloaded


def test_a_revision_not_removed_by_the_test_is_removed_when_the_block_fails(owned: ClusterTarget,
                                                                           fake_tools: FakeTools) -> None:
    with pytest.raises(RuntimeError, match="load stopped"):
        with owned.revision(OLD_REVISION, OLD):
            raise RuntimeError("load stopped")
    assert [argv[1] for argv in fake_tools.calls("istioctl")] == ["install", "uninstall"]


def test_a_namespace_is_relabelled_and_its_deployments_restarted_through_admission(api: FakeApi, tmp_path: Path) -> None:
    with running_cluster(api, tmp_path) as target, target.namespace("upgrade-1", {ISTIO_REV: OLD_REVISION}) as ns:
        target.apply(manifests.load(UPGRADE_MANIFEST), ns)
        target.wait_ready(ns)
        pods_before = {p.name for p in target.pods(ns)}
        target.relabel_namespace(ns, {ISTIO_REV: "default"})
        labels = api.objects[f"/api/v1/namespaces/{ns}"]["metadata"]["labels"]
        assert labels[ISTIO_REV] == "default" and labels[RUN_ID_LABEL] == "r1"
        assert target.restart_workloads(ns) == ["httpbin"]
        deployment = api.objects[f"/apis/apps/v1/namespaces/{ns}/deployments/httpbin"]
        assert RESTARTED_AT in deployment["spec"]["template"]["metadata"]["annotations"]
        assert deployment["metadata"]["generation"] == 2
        pods_after = {p.name for p in target.pods(ns)}
        assert len(pods_after) == 2 and not pods_after & pods_before  # two new pods, created anew


def test_only_this_runs_namespaces_are_relabelled_and_never_their_run_label(api: FakeApi, tmp_path: Path) -> None:
    seed_namespace(api, "theirs")
    with running_cluster(api, tmp_path) as target, target.namespace("upgrade-2", {}) as ns:
        with pytest.raises(ConformanceError, match="refusing to relabel namespace theirs"):
            target.relabel_namespace("theirs", {ISTIO_REV: "default"})
        with pytest.raises(ConformanceError, match=f"refusing to change label {RUN_ID_LABEL}"):
            target.relabel_namespace(ns, {RUN_ID_LABEL: None})
    assert api.objects["/api/v1/namespaces/theirs"]["metadata"]["labels"].get(ISTIO_REV) is None


def test_mesh_upgrade_needs_a_mesh_meshconf_installed_and_an_older_istio(api: FakeApi, tmp_path: Path) -> None:
    theirs = cluster_target(api, tmp_path)
    theirs.up()
    assert "meshconf did not install Istio" in (theirs.unsupported_reason(UPGRADE_FEATURE) or "")
    mesh = IstioInstall(version=ISTIO_VERSION, kubeconfig=tmp_path / "kubeconfig")
    newer = cluster_target(api, tmp_path, istio_install=mesh,
                           settings=RunSettings(target="kind", upgrade_from="1.30.3"))
    newer.up()
    assert newer.unsupported_reason(UPGRADE_FEATURE) == (
        f"Istio to upgrade from: --upgrade-from 1.30.3 is not older than the Istio under test, {ISTIO_VERSION}")
    ours = cluster_target(api, tmp_path, istio_install=mesh)
    ours.up()
    assert ours.supports(UPGRADE_FEATURE)  # 1.27.9 from 1.28.10, on Kubernetes 1.33: both support it


def test_an_istio_that_does_not_support_the_clusters_kubernetes_is_upgraded_from_only_when_forced(
        api: FakeApi, tmp_path: Path) -> None:
    mesh = IstioInstall(version=ISTIO_VERSION, kubeconfig=tmp_path / "kubeconfig")
    newer_kube = cluster_target(api, tmp_path, istio_install=mesh, kubernetes_version="1.34.1")
    newer_kube.up()
    assert newer_kube.unsupported_reason(UPGRADE_FEATURE) == (
        "Istio to upgrade from: Istio 1.27.9 supports Kubernetes 1.29-1.33, not 1.34.1: use a Kubernetes version "
        "in 1.29-1.33, or force it to run anyway")
    forced = cluster_target(api, tmp_path, istio_install=mesh, kubernetes_version="1.34.1",
                            settings=RunSettings(target="kind", force=True))
    forced.up()
    assert forced.supports(UPGRADE_FEATURE)
