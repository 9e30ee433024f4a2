"""Gateway API CRDs: which release, its download, and who may install it on which cluster.

Against the fake Kubernetes API (tests/fakeapi.py), which serves Gateway API kinds only once
their CRDs are applied, and a local release server standing in for GitHub's release assets.
The kind path is covered by tests/test_kind_gateway_api.py.
"""

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance import manifests
from conformance.errors import ConformanceError
from conformance.settings import OFFICIAL_GATEWAY_API_RELEASES, RunSettings
from conformance.targets import gateway_api_crds
from conformance.targets.base import ExplainsSupport
from conformance.targets.cluster import ClusterTarget
from conformance.targets.existing import ExistingClusterProvisioner
from conformance.targets.kube import Kube
from tests.cluster_builders import seed_namespace, write_kubeconfig
from tests.release_builders import (
    GATEWAY_API_CRDS,
    V1_5_1,
    V1_5_1_POLICY_BUNDLE,
    gateway_api_release,
    gateway_api_v1_5_1,
    install_crds,
    publish_gateway_api,
    safe_upgrades_policy,
)
from tests.fakeapi import FakeApi
from tests.release_server import ReleaseServer

HTTPROUTE_CRD_NAME = "httproutes.gateway.networking.k8s.io"
HTTPROUTE_CRD = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{HTTPROUTE_CRD_NAME}"
THEIR_GATEWAY = "/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways/theirs"
HTTPROUTE = "gateway-api/traffic/httproute-reviews-80-20.yaml"
ISTIOD = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "istiod", "namespace": "istio-system"},
          "spec": {"template": {"spec": {"containers": [{"name": "discovery",
                                                          "image": "docker.io/istio/pilot:1.28.0"}]}}}}
# istioctl's ingress gateway Service, with a LoadBalancer address: the mesh is used as it is.
GATEWAY = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
           "spec": {"type": "LoadBalancer", "selector": {"app": "istio-ingressgateway", "istio": "ingressgateway"},
                    "ports": [{"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}


# --- which release ------------------------------------------------------------------------------


@pytest.mark.parametrize(("istio_version", "gateway_api"), [
    ("1.26.0", "v1.3.0"), ("1.26.8", "v1.3.0"), ("1.27.3", "v1.3.0"), ("1.28.0", "v1.4.0"), ("1.28.6", "v1.4.0"),
    ("1.28.7", "v1.4.1"), ("1.28.12", "v1.4.1"), ("1.29.2", "v1.4.0"), ("1.29.3", "v1.4.1"), ("1.30.0", "v1.5.1"),
    ("v1.30.3", "v1.5.1"), ("1.30.0-beta.1", "v1.5.1"),
])
def test_release_follows_the_go_mod_of_each_istio_release(istio_version: str, gateway_api: str) -> None:
    release = gateway_api_crds.release_for(istio_version)
    assert release is not None and release.version == gateway_api
    assert release.url == f"{OFFICIAL_GATEWAY_API_RELEASES}/{gateway_api}/standard-install.yaml"
    assert release.url.startswith("https://github.com/kubernetes-sigs/gateway-api/releases/download/")


@pytest.mark.parametrize("istio_version", ["1.25.4", "1.31.0", "unknown", ""])
def test_no_release_for_an_istio_the_table_does_not_know(istio_version: str) -> None:
    assert gateway_api_crds.release_for(istio_version) is None


def test_the_table_is_read_and_refused_as_every_data_file_is(tmp_path: Path) -> None:
    table = tmp_path / "gateway_api.yaml"
    table.write_text(yaml.safe_dump({"istio": [{"istio": "1.31.0", "gateway_api": "v1.6.0"}]}))
    release = gateway_api_crds.release_for("1.31.2", table=table)
    assert release is not None and release.version == "v1.6.0"
    table.write_text(yaml.safe_dump({"istio": [{"istio": "1.31.0"}]}))
    with pytest.raises(ConformanceError, match=f"the Gateway API table {table}: `istio` must be a list of "):
        gateway_api_crds.release_for("1.31.2", table=table)
    table.unlink()
    with pytest.raises(ConformanceError, match=f"cannot read the Gateway API table {table}: "):
        gateway_api_crds.release_for("1.31.2", table=table)


# --- download -----------------------------------------------------------------------------------


def test_fetch_downloads_checks_and_caches(release_server: ReleaseServer, tmp_path: Path) -> None:
    release = gateway_api_crds.Release("v1.4.0", publish_gateway_api(release_server, "v1.4.0"))
    docs = gateway_api_crds.fetch(release, tmp_path / "cache", timeout=10)
    assert {d["metadata"]["name"] for d in docs} == {
        f"{kind}.gateway.networking.k8s.io" for kind in
        ("gatewayclasses", "gateways", "grpcroutes", "httproutes", "referencegrants")}
    assert release_server.requests == ["/releases/v1.4.0/standard-install.yaml"]
    assert gateway_api_crds.fetch(release, tmp_path / "cache", timeout=10) == docs
    assert len(release_server.requests) == 1  # the cached copy answered


def test_fetch_accepts_v1_5_1_as_released(release_server: ReleaseServer, tmp_path: Path) -> None:
    # Its admission policy and binding still say bundle-version v1.5.0-dev, unlike its CRDs.
    release = gateway_api_crds.Release(V1_5_1, publish_gateway_api(release_server, V1_5_1, gateway_api_v1_5_1()))
    docs = gateway_api_crds.fetch(release, tmp_path / "cache", timeout=10)
    assert [(d["kind"], d["metadata"]["name"].removesuffix(".gateway.networking.k8s.io")) for d in docs] == [
        *(("CustomResourceDefinition", plural) for plural in (
            "backendtlspolicies", "gatewayclasses", "gateways", "grpcroutes", "httproutes", "listenersets",
            "referencegrants", "tlsroutes")),
        ("ValidatingAdmissionPolicy", "safe-upgrades"), ("ValidatingAdmissionPolicyBinding", "safe-upgrades")]


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}


def policy_bundle(bundle: str, channel: str = "standard") -> bytes:
    """v1.5.1's standard install with its admission policy's bundle-version (and channel) changed."""
    policy, binding = safe_upgrades_policy(bundle)
    policy["metadata"]["annotations"][gateway_api_crds.CHANNEL] = channel
    return gateway_api_release(V1_5_1, extra={"vap_safeupgrades": [policy, binding]})


@pytest.mark.parametrize(("version", "content", "refusal"), [
    ("v1.4.0", gateway_api_release("v1.3.0"), "of bundle v1.3.0 channel standard, not v1.4.0 standard"),
    ("v1.4.0", gateway_api_release("v1.4.0", channel="experimental"), "channel experimental, not v1.4.0 standard"),
    ("v1.4.0", gateway_api_release("v1.4.0", extra={"x": [configmap("x")]}), "holds x that is not a Gateway API CRD"),
    ("v1.4.0", b"kind: [unclosed\n", "is not YAML"),  # a broken download: no YAML at all
    # The policy may carry the release's own version or its minor's dev version, nothing else.
    (V1_5_1, policy_bundle("v1.4.0-dev"), "ValidatingAdmissionPolicy safe-upgrades.gateway.networking.k8s.io "
                                          "of bundle v1.4.0-dev channel standard, not v1.5.1 standard"),
    (V1_5_1, policy_bundle("v1.5.0"), "of bundle v1.5.0 channel standard"),
    (V1_5_1, policy_bundle(V1_5_1_POLICY_BUNDLE, channel="experimental"), "channel experimental, not v1.5.1"),
])
def test_fetch_refuses_what_is_not_that_release(release_server: ReleaseServer, tmp_path: Path, version: str,
                                                 content: bytes, refusal: str) -> None:
    release = gateway_api_crds.Release(version, publish_gateway_api(release_server, version, content))
    with pytest.raises(ConformanceError, match=refusal):
        gateway_api_crds.fetch(release, tmp_path / "cache", timeout=10)
    assert not (tmp_path / "cache" / f"gateway-api-{version}" / "standard-install.yaml").exists()


def test_the_policy_may_also_say_the_release_itself() -> None:
    policy = gateway_api_release(V1_5_1, extra={"vap_safeupgrades": safe_upgrades_policy(V1_5_1)})
    docs = gateway_api_crds.checked(policy.decode(), gateway_api_crds.Release(V1_5_1))
    assert docs[-1]["kind"] == "ValidatingAdmissionPolicyBinding"


def test_fetch_of_a_release_that_does_not_exist(release_server: ReleaseServer, tmp_path: Path) -> None:
    release = gateway_api_crds.Release("v9.9.9", release_server.url)
    with pytest.raises(ConformanceError, match=r"not found: .*/v9\.9\.9/standard-install\.yaml"):
        gateway_api_crds.fetch(release, tmp_path / "cache", timeout=10)


# --- an existing cluster: installed only with --yes --------------------------------------------


def existing(api: FakeApi, tmp_path: Path, release_server: ReleaseServer, **extra: Any) -> ClusterTarget:
    api.objects["/apis/apps/v1/namespaces/istio-system/deployments/istiod"] = ISTIOD
    api.objects["/api/v1/namespaces/istio-system/services/istio-ingressgateway"] = GATEWAY
    settings = RunSettings(target="kubeconfig", context="fake", run_id="r1", cache_dir=tmp_path / "cache",
                           gateway_api_releases=publish_gateway_api(release_server, "v1.4.0"), **extra)
    provisioner = ExistingClusterProvisioner(settings, kubeconfig=write_kubeconfig(tmp_path / "kc", api.port))
    return ClusterTarget(settings, provisioner)


def crd_path(name: str) -> str:
    return f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"


def writes(api: FakeApi) -> list[str]:
    return [f"{r.method} {r.path}" for r in api.requests if r.method != "GET"]


def test_without_consent_the_feature_is_not_supported_and_says_how_to_enable_it(
        api: FakeApi, tmp_path: Path, release_server: ReleaseServer) -> None:
    target = existing(api, tmp_path, release_server)
    target.up()
    try:
        assert isinstance(target, ExplainsSupport)
        assert not target.supports("MeshHTTPRouteWeights") and target.supports("WeightedSplit")
        assert not target.supports("GatewayAPIIngress")
        reason = target.unsupported_reason("MeshHTTPRouteWeights") or ""
        assert "the Gateway API CRDs are not installed (Istio does not install them)" in reason
        assert "pass --yes to let meshconf install and later remove Gateway API v1.4.0" in reason
        assert f"kubectl apply --server-side -f {release_server.url}/v1.4.0/standard-install.yaml" in reason
        assert target.unsupported_reason("WeightedSplit") is None
    finally:
        target.down()
    assert writes(api) == [] and release_server.requests == []  # the cluster was only read


def test_with_consent_they_are_installed_for_the_run_and_removed_after(
        api: FakeApi, tmp_path: Path, release_server: ReleaseServer) -> None:
    seed_namespace(api, "bookinfo")  # the suite's, created before it applies
    target = existing(api, tmp_path, release_server, yes=True)
    target.up()
    try:
        assert target.supports("MeshHTTPRouteWeights")
        target.apply(manifests.load(HTTPROUTE), "bookinfo")  # the suite's HTTPRoute has a kind to be
        assert "/apis/gateway.networking.k8s.io/v1/namespaces/bookinfo/httproutes/reviews" in api.objects
    finally:
        target.down()
    assert release_server.requests == ["/releases/v1.4.0/standard-install.yaml"]
    assert HTTPROUTE_CRD not in api.objects and not any("gateway.networking.k8s.io" in p for p in api.objects)


def test_with_keep_the_installed_crds_stay(api: FakeApi, tmp_path: Path, release_server: ReleaseServer) -> None:
    target = existing(api, tmp_path, release_server, yes=True, keep=True)
    target.up()
    target.down()
    assert HTTPROUTE_CRD in api.objects


def test_crds_already_there_are_used_and_never_removed(api: FakeApi, tmp_path: Path,
                                                       release_server: ReleaseServer) -> None:
    install_crds(api, *GATEWAY_API_CRDS)  # the cluster's own, of another version
    target = existing(api, tmp_path, release_server, yes=True)
    target.up()
    try:
        assert target.supports("MeshHTTPRouteWeights")
    finally:
        target.down()
    assert writes(api) == [] and release_server.requests == []
    assert HTTPROUTE_CRD in api.objects


def test_of_a_partly_installed_set_only_the_missing_crds_are_installed_and_removed(
        api: FakeApi, tmp_path: Path, release_server: ReleaseServer) -> None:
    # The cluster has Gateway API CRDs of its own (another release), and a Gateway of that kind.
    theirs = install_crds(api, *(f"gateway-api/{kind}.yaml" for kind in ("gatewayclasses", "gateways", "grpcroutes")))
    api.objects[THEIR_GATEWAY] = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                                  "metadata": {"name": "theirs", "namespace": "default"},
                                  "spec": {"gatewayClassName": "theirs", "listeners": []}}
    before = {name: copy.deepcopy(api.objects[crd_path(name)]) for name in theirs}
    target = existing(api, tmp_path, release_server, yes=True)
    target.up()
    try:
        assert target.supports("MeshHTTPRouteWeights")
    finally:
        target.down()
    # Theirs were never written, nor deleted with their objects; ours came and went.
    assert not any(r.method != "GET" and r.path in {crd_path(name) for name in theirs} for r in api.requests)
    assert {name: api.objects.get(crd_path(name)) for name in theirs} == before
    assert THEIR_GATEWAY in api.objects
    assert [r.path for r in api.requests if r.method == "DELETE"] == [
        crd_path("referencegrants.gateway.networking.k8s.io"), crd_path(HTTPROUTE_CRD_NAME)]
    # And the outcome says which were there.
    outcome = target.provisioner.gateway_api  # type: ignore[attr-defined]
    assert outcome.already_there == [f"CustomResourceDefinition {name}" for name in theirs]
    assert sorted(crd["metadata"]["name"] for crd in outcome.installed) == [
        HTTPROUTE_CRD_NAME, "referencegrants.gateway.networking.k8s.io"]


def test_crds_without_the_v1_httproute_leave_the_feature_unsupported(api: FakeApi, tmp_path: Path,
                                                                     release_server: ReleaseServer) -> None:
    install_crds(api, *GATEWAY_API_CRDS)
    old = api.objects[HTTPROUTE_CRD]
    for version in old["spec"]["versions"]:
        version["served"] = version["name"] != "v1"
    kube = Kube(write_kubeconfig(tmp_path / "kc", api.port), poll_interval=0.02)
    try:
        outcome = gateway_api_crds.ensure(kube, gateway_api_crds.release_for("1.28.0"), "1.28.0", tmp_path, 10,
                                          may_install=True, how_to_allow="")
    finally:
        kube.close()
    assert outcome.installed == []
    reason = "the cluster's Gateway API CRDs (bundle v0.0.0-dev) do not serve gateway.networking.k8s.io/v1 HTTPRoute"
    assert outcome.unsupported == {"MeshHTTPRouteWeights": reason, "GatewayAPIIngress": reason}
