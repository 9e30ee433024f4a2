"""GatewayAPIIngress and KubernetesIngress on a cluster, against the fake API server (tests/fakeapi.py):
where the manifests are stored, how the run waits for the gateway Istio deploys (the Gateway's
Programmed condition, then its Deployment) and reaches it by a port-forward, and when Ingress cannot
be checked. The fake API has no istiod: each test writes what istiod would (the gateway's Deployment,
the Gateway's status)."""

import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance import manifests
from conformance.errors import NotConverged
from conformance.names import RUN_ID_LABEL
from conformance.targets.cluster import ClusterTarget
from conformance.targets.gateway_api_ingress import GATEWAY_NAME_LABEL, managed_name
from conformance.targets.local.gateway_deployer import managed_objects
from conformance.ingress_class import istio_ingress_class
from tests.cluster_builders import object_path, running_cluster
from tests.fakeapi import FakeApi
from tests.fakeforward import fake_port_forward
from tests.release_builders import GATEWAY_API_CRDS, install_crds

NS = "bookinfo-r1"
GATEWAY = "bookinfo-gateway-api"
LISTENER_PORT = 8080
PROGRAMMED = {"type": "Programmed", "status": "True", "reason": "Programmed",
              "message": f"Resource programmed, assigned to service(s) {GATEWAY}-istio.{NS}.svc.cluster.local:8080"}
PENDING = {"type": "Programmed", "status": "False", "reason": "AddressNotAssigned",
           "message": "Assigned to service(s) x:8080, but failed to assign to all requested addresses: "
                      "address pending for hostname \"x\""}


@pytest.fixture
def cluster(api: FakeApi, tmp_path: Path) -> Iterator[ClusterTarget]:
    install_crds(api, *GATEWAY_API_CRDS)
    with running_cluster(api, tmp_path, NS) as target:
        yield target


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = f"gateway pod saw {self.path} for {self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gateway_pod() -> Iterator[tuple[str, int]]:
    """Stands in for the gateway pod's listener."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()


def gateway_doc() -> dict[str, Any]:
    return next(d for d in manifests.load("gateway-api/ingress/bookinfo-gateway.yaml") if d["kind"] == "Gateway")


def istiod_deploys(cluster: ClusterTarget, api: FakeApi, status: dict[str, Any] | None, deploy: bool = True) -> None:
    """What istiod does for the Gateway: its Deployment (the fake's controllers run its pod), its status."""
    if deploy:
        placed = {**gateway_doc(), "metadata": {**gateway_doc()["metadata"], "namespace": NS}}
        cluster.kube.apply([d for d in managed_objects(placed) if d["kind"] == "Deployment"], NS)
    if status is not None:
        api.objects[object_path(api, gateway_doc(), NS)]["status"] = {"conditions": [status]}


def test_the_gateway_is_reached_by_a_port_forward_to_its_pod_once_programmed_and_ready(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch, gateway_pod: tuple[str, int]) -> None:
    docs = manifests.load("gateway-api/ingress/bookinfo-gateway.yaml")
    cluster.apply(docs, NS)
    stored = api.objects[object_path(api, gateway_doc(), NS)]
    assert stored["metadata"]["annotations"] == {"networking.istio.io/service-type": "ClusterIP"}
    assert object_path(api, docs[1], NS) in api.objects  # the HTTPRoute beside it
    istiod_deploys(cluster, api, PROGRAMMED)
    forwards = fake_port_forward(monkeypatch, {LISTENER_PORT: gateway_pod})
    with cluster.gateway_api_url(GATEWAY, NS, LISTENER_PORT) as url:
        reply = httpx.get(f"{url}/productpage", headers={"Host": "bookinfo.meshconf.test"})
    assert reply.text == "gateway pod saw /productpage for bookinfo.meshconf.test"
    [pod] = [p for p in cluster.pods(NS) if p.labels.get(GATEWAY_NAME_LABEL) == GATEWAY]
    assert pod.name.startswith(f"{managed_name(GATEWAY)}-")
    assert forwards == [(pod.name, NS, LISTENER_PORT)]


@pytest.mark.parametrize(("status", "deploy", "message"), [
    (None, True, f"Gateway {NS}/{GATEWAY} has no Programmed condition"),
    (PENDING, True, f"Gateway {NS}/{GATEWAY} Programmed=False (AddressNotAssigned: Assigned to service(s) x:8080"),
    (PROGRAMMED, False, f"Deployment {NS}/{GATEWAY}-istio does not exist (no gateway deployed for the Gateway)"),
])
def test_a_gateway_istio_has_not_programmed_or_deployed_fails_with_what_the_cluster_says(
        cluster: ClusterTarget, api: FakeApi, monkeypatch: pytest.MonkeyPatch,
        status: dict[str, Any] | None, deploy: bool, message: str) -> None:
    cluster.apply(manifests.load("gateway-api/ingress/bookinfo-gateway.yaml"), NS)
    istiod_deploys(cluster, api, status, deploy)
    forwards = fake_port_forward(monkeypatch, {})
    with pytest.raises(NotConverged, match="gateway for Gateway") as failed:
        with cluster.gateway_api_url(GATEWAY, NS, LISTENER_PORT):
            pass
    assert message in str(failed.value)
    assert forwards == []


def test_the_ingress_class_is_cluster_scoped_and_the_ingress_stored_in_its_namespace(
        cluster: ClusterTarget, api: FakeApi) -> None:
    [ingress_class] = manifests.load("kubernetes/ingress/ingressclass-istio.yaml")
    [ingress] = manifests.load("kubernetes/ingress/bookinfo-ingress.yaml")
    assert not cluster.exists(ingress_class, "")
    cluster.apply([ingress_class], "")
    cluster.apply([ingress], NS)
    assert cluster.exists(ingress_class, "")
    assert api.objects["/apis/networking.k8s.io/v1/ingressclasses/istio"]["spec"] == {
        "controller": "istio.io/ingress-controller"}
    assert api.objects[f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses/bookinfo"]["spec"]["ingressClassName"] \
        == "istio"
    cluster.delete([ingress_class], "")
    assert not cluster.exists(ingress_class, "")


def test_kubernetes_ingress_needs_the_gateway_istio_serves_ingress_on(cluster: ClusterTarget) -> None:
    assert cluster.supports("KubernetesIngress")
    assert cluster.access is not None
    cluster.access = replace(cluster.access, gateway_selector={"istio": "ingress"})
    assert not cluster.supports("KubernetesIngress")
    reason = cluster.unsupported_reason("KubernetesIngress") or ""
    assert "istio=ingressgateway by default; this cluster's ingress gateway is istio=ingress" in reason
    assert cluster.supports("IngressGateway")  # an Istio Gateway is bound to whichever gateway is found


INGRESS_CLASS_PATH = "/apis/networking.k8s.io/v1/ingressclasses/istio"


def test_the_harness_labels_the_ingress_class_it_creates_and_deletes_only_its_own(
        cluster: ClusterTarget, api: FakeApi) -> None:
    with istio_ingress_class(cluster, "r1") as said:
        assert api.objects[INGRESS_CLASS_PATH]["metadata"]["labels"] == {RUN_ID_LABEL: "r1"}
        assert said == "IngressClass istio (controller istio.io/ingress-controller) applied for the test"
    assert INGRESS_CLASS_PATH not in api.objects
    with istio_ingress_class(cluster, "r1"):
        # Replaced meanwhile by someone else's (another run's label): it is theirs to delete.
        api.objects[INGRESS_CLASS_PATH]["metadata"]["labels"] = {RUN_ID_LABEL: "r2"}
    assert INGRESS_CLASS_PATH in api.objects
    with istio_ingress_class(cluster, "r1") as said:  # now the cluster's own, used as it is
        assert said == "the cluster's own IngressClass istio"
    assert api.objects[INGRESS_CLASS_PATH]["metadata"]["labels"] == {RUN_ID_LABEL: "r2"}


def test_a_clusters_ingress_class_istio_of_another_controller_is_not_supported(
        cluster: ClusterTarget, api: FakeApi) -> None:
    [ingress_class] = manifests.load("kubernetes/ingress/ingressclass-istio.yaml")
    cluster.apply([{**ingress_class, "spec": {"controller": "k8s.io/ingress-nginx"}}], "")
    with pytest.raises(pytest.skip.Exception) as skipped:
        with istio_ingress_class(cluster, "r1"):
            raise AssertionError("the block must not run: Istio would ignore the Ingress")
    assert str(skipped.value) == (
        "NOT_SUPPORTED: KubernetesIngress on target kind: the cluster's IngressClass istio names controller "
        "'k8s.io/ingress-nginx', not istio.io/ingress-controller, so Istio ignores an Ingress of that class; "
        "meshconf does not change a cluster's own IngressClass")
    assert api.objects[INGRESS_CLASS_PATH]["spec"] == {"controller": "k8s.io/ingress-nginx"}  # untouched
