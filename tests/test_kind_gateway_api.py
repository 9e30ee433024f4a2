"""The Gateway API CRDs of a kind cluster, with nothing real but this machine (the `machine`
fixture: tests/cluster_builders.py Machine): installed before Istio, from the release the chosen
Istio builds against; on a reused cluster removed again, and only those the run installed.
"""

from conformance import manifests
from conformance.targets.gateway_api_crds import BUNDLE_VERSION
from conformance.targets.kube import Kube
from conformance.targets.provision import KindProvisioner
from tests.cluster_builders import HEALTHY, Machine, seed_namespace
from tests.release_builders import (
    GATEWAY_API,
    GATEWAY_API_ASSET,
    GATEWAY_API_CRDS,
    V1_5_1,
    V1_5_1_POLICY_BUNDLE,
    fake_release,
    gateway_api_v1_5_1,
    install_crds,
    publish_gateway_api,
)

HTTPROUTE_CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/httproutes.gateway.networking.k8s.io"
NODEPORTS = "/api/v1/namespaces/istio-system/services/istio-ingressgateway"


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
    seed_namespace(m.api, "bookinfo")  # what the suite creates first
    kube = Kube(m.kubeconfig, poll_interval=0.02)
    try:
        kube.apply(manifests.load("gateway-api/traffic/httproute-reviews-80-20.yaml"), "bookinfo")
    finally:
        kube.close()
    assert "/apis/gateway.networking.k8s.io/v1/namespaces/bookinfo/httproutes/reviews" in m.api.objects


def test_a_reused_cluster_loses_only_the_gateway_api_crds_the_run_installed(machine: Machine) -> None:
    m = machine
    m.tools.set_scenario({**HEALTHY, "state": {"server": m.api.url, "kind_clusters": ["meshconf"]}})
    settings = m.settings(reuse=True)
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


V1_5_1_CRDS = ("backendtlspolicies", "gatewayclasses", "gateways", "grpcroutes", "httproutes", "listenersets",
               "referencegrants", "tlsroutes")
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
SAFE_UPGRADES = (f"{ADMISSION}/validatingadmissionpolicies/safe-upgrades.gateway.networking.k8s.io",
                 f"{ADMISSION}/validatingadmissionpolicybindings/safe-upgrades.gateway.networking.k8s.io")


def test_gateway_api_v1_5_1_as_released_is_applied_whole_and_removed_whole(machine: Machine) -> None:
    # Istio 1.30 builds against v1.5.1, whose standard install also holds an admission policy and its
    # binding, annotated bundle-version v1.5.0-dev: a reused cluster gets all of it, and loses it again.
    m = machine
    m.tools.set_scenario({**HEALTHY, "state": {"server": m.api.url, "kind_clusters": ["meshconf"]}})
    m.releases.publish("1.30.3", fake_release("1.30.3"))
    publish_gateway_api(m.releases, V1_5_1, gateway_api_v1_5_1())
    settings = m.settings(istio_version="1.30.3", reuse=True)
    crds = [f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.gateway.networking.k8s.io"
            for plural in V1_5_1_CRDS]
    provisioner = KindProvisioner(settings)
    provisioner.up()
    try:
        assert m.releases.requests[-1] == f"/releases/{V1_5_1}/standard-install.yaml"
        assert [m.api.objects[path]["metadata"]["annotations"][BUNDLE_VERSION] for path in crds] == [V1_5_1] * 8
        assert [m.api.objects[path]["metadata"]["annotations"][BUNDLE_VERSION] for path in SAFE_UPGRADES] == \
            [V1_5_1_POLICY_BUNDLE] * 2
        assert provisioner.gateway_api.already_there == [] and len(provisioner.gateway_api.installed) == 10
        # Applied by server-side apply, CRDs first (each Established before anything else goes in).
        applied = [r.path for r in m.api.requests if r.method == "PATCH" and r.path in (*crds, *SAFE_UPGRADES)]
        assert applied == [*crds, *SAFE_UPGRADES]
    finally:
        provisioner.down()
    deleted = [r.path for r in m.api.requests if r.method == "DELETE" and r.path in (*crds, *SAFE_UPGRADES)]
    assert deleted == [*reversed(SAFE_UPGRADES), *reversed(crds)]  # the binding before its policy
    assert not any(path in m.api.objects for path in (*crds, *SAFE_UPGRADES))


def test_plan_says_which_gateway_api_crds_a_cluster_would_get(machine: Machine) -> None:
    code, out, err = machine.meshconf("run", "--target", "kind", "--plan")
    assert code == 0, err
    assert (f"# if the cluster lacks CRD httproutes.gateway.networking.k8s.io: server-side apply Gateway API "
            f"{GATEWAY_API} (standard channel, {machine.releases.url}{GATEWAY_API_ASSET.removeprefix('/releases')})"
            in out)
    assert machine.releases.requests == []
