"""The kubeconfig target's ingress gateway, against a fake API server: found, reached, and the
Gateways bound to it."""

from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance import manifests
from conformance.errors import ConformanceError, TargetUnavailable
from conformance.names import ISTIO_NAMESPACE
from conformance.targets.cluster import ClusterTarget
from conformance.targets.existing import ExistingClusterProvisioner
from conformance.targets.ingress import GatewayBinding
from conformance.targets.kube import Kube
from conformance.targets.provision import wait_mesh_ready
from tests.cluster_builders import seed_namespace
from tests.release_builders import READINESS_GATEWAY, accept_once_then_deny
from tests.existing_builders import (BOOKINFO_GATEWAY, GATEWAY, ISTIOD, ISTIOD_PATH, chart_gateway, gateway_pod,
                                     install_istio_crds, kube_config, service_path, settings)
from tests.fakeapi import FakeApi
from tests.fakeforward import fake_port_forward
from tests.fakegateway import FakeGateway

def patched(api: FakeApi, path: str) -> dict[str, Any]:
    [index] = api.seen("PATCH", path)
    return dict(api.requests[index].body)


def test_a_helm_gateway_binds_the_gateways_to_its_target_port(api: FakeApi, kube: Kube, tmp_path: Path) -> None:
    # meshconf's own Helm install on a cluster: the gateway chart released as istio-ingressgateway
    # in istio-system, so its pods are istio=ingressgateway, but its Service maps 80 to 80, not 8080.
    install_istio_crds(api)
    api.objects[ISTIOD_PATH] = ISTIOD
    helm_gateway = chart_gateway("istio-ingressgateway", "istio-system", address="203.0.113.20")
    api.objects[service_path(helm_gateway)] = helm_gateway
    seed_namespace(api, "bookinfo")  # the suite's, created before it applies
    target = ClusterTarget(settings(), ExistingClusterProvisioner(settings(), kubeconfig=kube_config(tmp_path, api)))
    target.up()
    try:
        target.apply(manifests.load("istio/ingress/bookinfo-gateway.yaml"), "bookinfo")
        facts = target.facts()
    finally:
        target.down()
    assert target.access is not None and target.access.ingress_url == "http://203.0.113.20:80"
    gateway = patched(api, BOOKINFO_GATEWAY)
    # The server listens where the Service sends port 80: on 80, which Istio binds as given.
    assert gateway["spec"]["servers"][0]["port"] == {"number": 80, "name": "http", "protocol": "HTTP"}
    assert gateway["spec"]["selector"] == {"istio": "ingressgateway"}
    routes = patched(api, "/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices/bookinfo")
    assert routes["spec"] == manifests.load("istio/ingress/bookinfo-gateway.yaml")[1]["spec"]  # untouched
    assert "Istio Gateways bound to the ingress gateway istio=ingressgateway on port 80" in facts.mode


def test_the_istio_io_helm_gateway_is_found_in_its_own_namespace(
        api: FakeApi, kube: Kube, tmp_path: Path, gateway: FakeGateway,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # istio.io "Install with Helm": release istio-ingress in namespace istio-ingress (pods istio=ingress),
    # no LoadBalancer address: reached through a port-forward to the pods' targetPort 80.
    install_istio_crds(api)
    api.objects[ISTIOD_PATH] = ISTIOD
    helm_gateway = chart_gateway("istio-ingress", "istio-ingress")
    api.objects[service_path(helm_gateway)] = helm_gateway
    path, pod = gateway_pod("istio-ingress-7d9", "istio-ingress", {"app": "istio-ingress", "istio": "ingress"})
    api.objects[path] = pod
    forwards = fake_port_forward(monkeypatch, {80: ("127.0.0.1", gateway.port)})
    gateway.start()
    seed_namespace(api, "bookinfo")  # the suite's, created before it applies
    target = ClusterTarget(settings(), ExistingClusterProvisioner(settings(), kubeconfig=kube_config(tmp_path, api)))
    target.up()
    try:
        reply = httpx.get(target.ingress_url(), headers={"host": "bookinfo.meshconf.test"}, timeout=5)
        target.apply(manifests.load("istio/ingress/bookinfo-gateway.yaml"), "bookinfo")
    finally:
        target.down()
    assert (reply.status_code, reply.headers["server"]) == (404, "istio-envoy")  # the gateway answered
    assert forwards == [("istio-ingress-7d9", "istio-ingress", 80)]
    bound = patched(api, BOOKINFO_GATEWAY)["spec"]
    assert bound["selector"] == {"istio": "ingress"} and bound["servers"][0]["port"]["number"] == 80


def test_no_known_gateway_is_an_error_naming_what_was_tried(api: FakeApi, tmp_path: Path) -> None:
    api.objects[ISTIOD_PATH] = ISTIOD
    provisioner = ExistingClusterProvisioner(settings(), kubeconfig=kube_config(tmp_path, api))
    with pytest.raises(TargetUnavailable) as caught:
        provisioner.up()
    provisioner.down()
    message = str(caught.value)
    for tried in ("istio=ingressgateway in istio-system", "istio=ingress in istio-system",
                  "istio=ingressgateway in istio-ingress", "istio=ingress in istio-ingress"):
        assert tried in message
    assert "--ingress-selector KEY=VALUE and --ingress-namespace NAME" in message


def test_two_gateways_are_refused_until_one_is_named(api: FakeApi, tmp_path: Path) -> None:
    api.objects[ISTIOD_PATH] = ISTIOD
    helm_gateway = chart_gateway("istio-ingress", "istio-ingress", address="203.0.113.20")
    for service in (GATEWAY, helm_gateway):
        api.objects[service_path(service)] = service
    config = kube_config(tmp_path, api)
    provisioner = ExistingClusterProvisioner(settings(), kubeconfig=config)
    with pytest.raises(ConformanceError, match=(
            r"more than one ingress gateway Service found: istio-system/istio-ingressgateway "
            r"\(istio=ingressgateway\), istio-ingress/istio-ingress \(istio=ingress\); choose one")):
        provisioner.up()
    provisioner.down()

    for named, url in (({"ingress_namespace": "istio-ingress"}, "http://203.0.113.20:80"),
                       ({"ingress_selector": "istio=ingressgateway"}, "http://203.0.113.10:80")):
        provisioner = ExistingClusterProvisioner(settings(**named), kubeconfig=config)
        access = provisioner.up()
        provisioner.down()
        assert access.ingress_url == url, named


def test_the_readiness_wait_binds_its_gateway_as_told(api: FakeApi, kube: Kube, gateway: FakeGateway) -> None:
    # A mesh meshconf installed with Helm: its gateway's Service maps 80 to the pods' 80, so the
    # readiness Gateway must listen on 80 for the gateway to answer through the Service.
    install_istio_crds(api)
    seed_namespace(api, ISTIO_NAMESPACE)
    seed_namespace(api, "default")
    accept_once_then_deny(api)
    api.after_apply[READINESS_GATEWAY] = gateway.start
    wait_mesh_ready(kube, f"http://127.0.0.1:{gateway.port}", 5.0, GatewayBinding({"istio": "ingressgateway"}, 80))
    readiness = patched(api, READINESS_GATEWAY)
    assert readiness["spec"]["servers"][0]["port"]["number"] == 80
    assert readiness["spec"]["selector"] == {"istio": "ingressgateway"}
    assert set(gateway.hosts) == {"readiness.meshconf.test"}
    assert READINESS_GATEWAY not in api.objects  # removed again
