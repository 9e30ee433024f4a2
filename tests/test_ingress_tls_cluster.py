"""IngressTLS on clusters, against the fake Kubernetes API: where the HTTPS ingress is, the
namespace its credential Secret goes to, and the Gateways' HTTPS servers bound to the gateway's
https targetPort (istio/istio pilot/pkg/model/gateway.go resolvePorts)."""

from pathlib import Path
from typing import Any

import pytest

from conformance import manifests
from conformance.errors import ConformanceError
from conformance.names import ISTIO_NAMESPACE
from conformance.probes.edge_tls import EdgeCA, tls_secret
from conformance.targets.attached import access_from_json, access_to_json
from conformance.targets.cluster import NO_HTTPS_INGRESS, ClusterAccess, ClusterTarget
from conformance.targets.existing import ExistingClusterProvisioner
from conformance.targets.ingress import GatewayBinding
from tests.cluster_builders import StaticProvisioner, seed_namespace
from tests.existing_builders import (GATEWAY, ISTIOD, ISTIOD_PATH, chart_gateway, install_istio_crds, kube_config,
                                     service_path, settings)
from tests.fakeapi import FakeApi
from tests.release_builders import GATEWAY_API_CRDS, install_crds

TLS_MANIFEST = "istio/ingress/bookinfo-gateway-tls.yaml"
TLS_GATEWAY = "/apis/networking.istio.io/v1/namespaces/bookinfo/gateways/bookinfo-gateway-tls"


def patched(api: FakeApi, path: str) -> dict[str, Any]:
    [index] = api.seen("PATCH", path)
    return dict(api.requests[index].body)


def server_ports(gateway: dict[str, Any]) -> list[tuple[str, int]]:
    return [(s["port"]["protocol"], s["port"]["number"]) for s in gateway["spec"]["servers"]]


def test_the_binding_moves_https_servers_to_the_https_target_port() -> None:
    docs = manifests.load(TLS_MANIFEST)
    assert GatewayBinding().bind(docs) == docs  # istioctl's shape: 443 -> 8443, as the manifests say
    chart = GatewayBinding({"istio": "ingress"}, 80, 443)
    [bound, _] = chart.bind(docs)
    assert server_ports(bound) == [("HTTPS", 443), ("HTTP", 80)]
    assert server_ports(docs[0]) == [("HTTPS", 8443), ("HTTP", 8080)]  # the manifests are left as they are


@pytest.mark.parametrize(("service", "https_url", "namespace", "https_port"), [
    (GATEWAY, "https://203.0.113.10:443", ISTIO_NAMESPACE, 8443),  # istioctl's gateway: 443 -> 8443
    (chart_gateway("istio-ingress", "istio-ingress", address="203.0.113.20"), "https://203.0.113.20:443",
     "istio-ingress", 443),
])
def test_an_existing_cluster_hands_on_its_https_ingress_and_the_gateways_namespace(
        api: FakeApi, tmp_path: Path, service: dict[str, Any], https_url: str | None, namespace: str,
        https_port: int) -> None:
    api.objects[ISTIOD_PATH] = ISTIOD
    api.objects[service_path(service)] = service
    provisioner = ExistingClusterProvisioner(settings(), kubeconfig=kube_config(tmp_path, api))
    access = provisioner.up()
    provisioner.down()
    assert (access.ingress_https_url, access.gateway_namespace, access.gateway.https_port) == (
        https_url, namespace, https_port)
    assert access_from_json(access_to_json(access)) == access  # handed to the xdist workers whole


def test_the_suite_applies_the_secret_in_the_gateways_namespace_and_the_bound_gateway(
        api: FakeApi, tmp_path: Path) -> None:
    install_istio_crds(api)
    api.objects[ISTIOD_PATH] = ISTIOD
    helm_gateway = chart_gateway("istio-ingressgateway", ISTIO_NAMESPACE, address="203.0.113.20")
    api.objects[service_path(helm_gateway)] = helm_gateway
    seed_namespace(api, "bookinfo")
    seed_namespace(api, ISTIO_NAMESPACE)
    install_crds(api, *GATEWAY_API_CRDS)  # so that --yes has nothing to install
    # --yes: IngressTLS writes a Secret into the shared gateway's namespace (existing.py).
    target = ClusterTarget(settings(yes=True), ExistingClusterProvisioner(settings(yes=True),
                                                                          kubeconfig=kube_config(tmp_path, api)))
    target.up()
    try:
        ingress = target.https_ingress()
        secret = tls_secret("bookinfo-tls-r1", ingress.namespace, {"meshconf.dev/run-id": "r1"},
                            EdgeCA().issue("bookinfo-tls.meshconf.test"))
        target.apply([secret], ingress.namespace)
        target.apply(manifests.load(TLS_MANIFEST), "bookinfo")
        reason = target.unsupported_reason("IngressTLS")
    finally:
        target.down()
    assert (ingress.url, ingress.namespace, reason) == ("https://203.0.113.20:443", ISTIO_NAMESPACE, None)
    stored = patched(api, f"/api/v1/namespaces/{ISTIO_NAMESPACE}/secrets/bookinfo-tls-r1")
    assert stored["type"] == "kubernetes.io/tls" and set(stored["data"]) == {"tls.crt", "tls.key"}
    assert server_ports(patched(api, TLS_GATEWAY)) == [("HTTPS", 443), ("HTTP", 80)]


def test_without_an_https_ingress_the_feature_is_not_supported(tmp_path: Path) -> None:
    access = ClusterAccess(tmp_path / "kubeconfig", None, "http://127.0.0.1:8080", "1.34.0", "1.28.0")
    target = ClusterTarget(settings(), StaticProvisioner(access, "kubeconfig"))
    target.access = access  # as up() leaves it
    assert target.unsupported_reason("IngressTLS") == NO_HTTPS_INGRESS
    with pytest.raises(ConformanceError, match="no port named https"):
        target.https_ingress()
