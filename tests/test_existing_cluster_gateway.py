"""The kubeconfig target's ingress gateway, against a fake API server: found, reached (HTTP and
HTTPS), and the Gateways bound to it."""

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance import manifests
from conformance.errors import ConformanceError, TargetUnavailable
from conformance.names import ISTIO_NAMESPACE
from conformance.probes.edge_tls import EdgeCA, HttpsProbe
from conformance.targets.cluster import NO_HTTPS_INGRESS, ClusterTarget
from conformance.targets.existing import ExistingClusterProvisioner
from conformance.targets.ingress import GatewayBinding
from conformance.targets.kube import Kube
from conformance.targets.provision import wait_mesh_ready
from tests.cluster_builders import seed_namespace
from tests.release_builders import GATEWAY_API_CRDS, READINESS_GATEWAY, accept_once_then_deny, install_crds
from tests.existing_builders import (BOOKINFO_GATEWAY, GATEWAY, ISTIOD, ISTIOD_PATH, chart_gateway, gateway_pod,
                                     install_istio_crds, istioctl_gateway, kube_config, service_path, settings,
                                     tls_gateway)
from tests.fakeapi import FakeApi
from tests.fakeforward import fake_port_forward, record_held_forwards
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


# ---- HTTPS (IngressTLS) without a LoadBalancer address: a second port-forward, to the https targetPort

TLS_HOST = "bookinfo-tls.meshconf.test"  # the host the IngressTLS suite serves and asks for


def up_with_consent(api: FakeApi, tmp_path: Path) -> ClusterTarget:
    """The kubeconfig target up with --yes (IngressTLS needs it on a context), nothing to install."""
    install_crds(api, *GATEWAY_API_CRDS)
    target = ClusterTarget(settings(yes=True),
                           ExistingClusterProvisioner(settings(yes=True), kubeconfig=kube_config(tmp_path, api)))
    target.up()
    return target


def refused(url: str) -> bool:
    """Whether nothing listens at the URL's local port any more."""
    try:
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize(("service", "pod_name", "labels"), [
    # istioctl's profiles: https 443 -> 8443, http2 80 -> 8080.
    (istioctl_gateway(address=None), "istio-ingressgateway-5f7",
     {"app": "istio-ingressgateway", "istio": "ingressgateway"}),
    # The gateway chart (istio.io Helm install): https 443 -> 443, http2 80 -> 80.
    (chart_gateway("istio-ingress", "istio-ingress"), "istio-ingress-7d9",
     {"app": "istio-ingress", "istio": "ingress"}),
])
def test_without_a_load_balancer_https_goes_through_a_port_forward_to_the_https_target_port(
        api: FakeApi, tmp_path: Path, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch,
        service: dict[str, Any], pod_name: str, labels: dict[str, str]) -> None:
    api.objects[ISTIOD_PATH] = ISTIOD
    api.objects[service_path(service)] = service
    namespace = service["metadata"]["namespace"]
    [http2] = [p["targetPort"] for p in service["spec"]["ports"] if p["name"] == "http2"]
    [https] = [p["targetPort"] for p in service["spec"]["ports"] if p["name"] == "https"]
    path, pod = gateway_pod(pod_name, namespace, labels)
    api.objects[path] = pod
    ca = EdgeCA()
    with tls_gateway(ca.issue(TLS_HOST), tmp_path) as tls:
        fake_port_forward(monkeypatch, {http2: ("127.0.0.1", gateway.port), https: ("127.0.0.1", tls.port)})
        held = record_held_forwards(monkeypatch)
        gateway.start()
        target = up_with_consent(api, tmp_path)
        try:
            ingress, reason = target.https_ingress(), target.unsupported_reason("IngressTLS")
            probe = HttpsProbe(5.0)
            # As the suite connects: to the forwarded address, with the test host as SNI and Host,
            # the certificate verified for the test host against the run's CA.
            pages = probe.send(f"{ingress.url}/productpage", TLS_HOST, ca.root_pem)
            handshake = probe.handshake(ingress.url, TLS_HOST, ca.root_pem)
            plain = httpx.get(target.ingress_url(), headers={"host": "bookinfo.meshconf.test"}, timeout=5)
            closed_while_up = list(held.closed)
        finally:
            target.down()
    assert ingress.url.startswith("https://127.0.0.1:")
    assert (ingress.namespace, reason) == (namespace, None)
    [page] = pages.replies
    assert (page.status, page.headers.get("server"), page.error) == (200, "istio-envoy", None)
    assert (handshake.verified, handshake.dns_names, handshake.error) == (True, (TLS_HOST,), None)
    assert tls.hosts == [TLS_HOST] and set(tls.server_names) == {TLS_HOST}
    assert (plain.status_code, gateway.hosts) == (404, ["bookinfo.meshconf.test"])  # HTTP held its own forward
    # Two forwards to the one ready gateway pod, held for the run: HTTP to the http2 targetPort, HTTPS
    # to the https one; both closed at down(), and nothing listens at their addresses any more.
    assert held.opened == [(pod_name, namespace, http2), (pod_name, namespace, https)]
    assert closed_while_up == [] and sorted(held.closed) == sorted(held.opened)
    assert refused(ingress.url) and refused(target.ingress_url())


def without_https_port(service: dict[str, Any]) -> dict[str, Any]:
    service["spec"]["ports"] = [p for p in service["spec"]["ports"] if p["name"] != "https"]
    return service


def with_named_https_target(service: dict[str, Any]) -> dict[str, Any]:
    for port in service["spec"]["ports"]:
        if port["name"] == "https":
            port["targetPort"] = "https"  # a container port's name: nothing to bind Gateways to
    return service


@pytest.mark.parametrize("shape", [without_https_port, with_named_https_target])
def test_without_a_numbered_https_port_ingress_tls_is_not_supported_and_only_http_is_forwarded(
        api: FakeApi, tmp_path: Path, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch,
        shape: Any) -> None:
    api.objects[ISTIOD_PATH] = ISTIOD
    service = shape(chart_gateway("istio-ingress", "istio-ingress"))
    api.objects[service_path(service)] = service
    path, pod = gateway_pod("istio-ingress-7d9", "istio-ingress", {"app": "istio-ingress", "istio": "ingress"})
    api.objects[path] = pod
    fake_port_forward(monkeypatch, {80: ("127.0.0.1", gateway.port)})
    held = record_held_forwards(monkeypatch)
    gateway.start()
    target = up_with_consent(api, tmp_path)
    try:
        reply = httpx.get(target.ingress_url(), headers={"host": "bookinfo.meshconf.test"}, timeout=5)
        access, reason = target.access, target.unsupported_reason("IngressTLS")
    finally:
        target.down()
    assert reply.status_code == 404  # HTTP is reached as before
    assert access is not None and access.ingress_https_url is None
    assert reason == NO_HTTPS_INGRESS and "no port named https with a numbered targetPort" in reason
    assert held.opened == [("istio-ingress-7d9", "istio-ingress", 80)]  # no second forward


def test_a_load_balancer_address_still_wins_for_https(api: FakeApi, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    api.objects[ISTIOD_PATH] = ISTIOD
    service = chart_gateway("istio-ingress", "istio-ingress", address="203.0.113.20")
    api.objects[service_path(service)] = service
    path, pod = gateway_pod("istio-ingress-7d9", "istio-ingress", {"app": "istio-ingress", "istio": "ingress"})
    api.objects[path] = pod  # a ready pod a forward could go to
    held = record_held_forwards(monkeypatch)
    target = up_with_consent(api, tmp_path)
    try:
        ingress, reason = target.https_ingress(), target.unsupported_reason("IngressTLS")
    finally:
        target.down()
    assert (target.ingress_url(), ingress.url, reason) == ("http://203.0.113.20:80", "https://203.0.113.20:443", None)
    assert held.opened == []
