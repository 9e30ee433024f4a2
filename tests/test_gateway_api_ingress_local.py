"""GatewayAPIIngress on the local mesh: what its stand-in for istiod's deployment controller creates
for a Gateway, the status it reports, and the listeners and routes the gateway pod gets (translated
without processes; the suite runs them on real Envoy)."""

from dataclasses import replace

import pytest

from conformance.errors import NotConverged, UnsupportedResource
from conformance.settings import Timeouts
from conformance.targets.gateway_api_ingress import GATEWAY_NAME_LABEL, programmed_gap
from conformance.targets.local import workloads
from conformance.targets.local.gateway_deployer import (gateway_status, managed_objects, wait_for_gateway,
                                                       with_deployed_gateways)
from conformance.targets.local.model import MeshState, ServicePort
from conformance.targets.local.objects import object_key
from conformance.targets.local.translator import translate
from conformance.targets.local.validate import check_document
from tests.builders import BOOKINFO_SERVICES, NS, make_pod, make_service, manifest_docs, virtual_hosts

MANIFEST = "gateway-api/ingress/bookinfo-gateway.yaml"
NAME = "bookinfo-gateway-api"
FQDN = f"{NAME}-istio.{NS}.svc.cluster.local"
GATEWAY_POD = make_pod(f"{NAME}-istio-abc", "127.0.1.120", {GATEWAY_NAME_LABEL: NAME}, proxy="gateway", ports=())
GATEWAY_SERVICE = replace(make_service(f"{NAME}-istio", NS, ServicePort("http", 8080, 8080)),
                          selector={GATEWAY_NAME_LABEL: NAME})


def placed(doc: dict) -> dict:
    return {**doc, "metadata": {**doc["metadata"], "namespace": NS}}


def manifest() -> tuple[dict, dict]:
    gateway, route = (placed(d) for d in manifest_docs(MANIFEST))
    return gateway, route


def state(*docs: dict, pods: tuple = (GATEWAY_POD,), mutants: frozenset[str] = frozenset()) -> MeshState:
    gateways = tuple(d for d in docs if d["kind"] == "Gateway")
    routes = tuple(d for d in docs if d["kind"] == "HTTPRoute")
    return MeshState((*BOOKINFO_SERVICES, GATEWAY_SERVICE), pods, mutants=mutants, http_routes=routes,
                     gateway_api_gateways=gateways)


def test_the_manifest_passes_the_local_checks() -> None:
    for doc in manifest():
        check_document(doc, NS)


def test_deployed_objects_are_named_and_labelled_as_istiod_names_them() -> None:
    gateway, _ = manifest()
    account, deployment, service = managed_objects(gateway)
    assert {d["metadata"]["name"] for d in (account, deployment, service)} == {f"{NAME}-istio"}
    assert service["spec"]["selector"] == {GATEWAY_NAME_LABEL: NAME}
    # The manifest asks for ClusterIP; without the annotation istiod's default is LoadBalancer.
    assert service["spec"]["type"] == "ClusterIP"
    bare = {**gateway, "metadata": {"name": NAME, "namespace": NS}}
    assert managed_objects(bare)[2]["spec"]["type"] == "LoadBalancer"
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("status-port", 15021), ("http", 8080)]
    # The local mesh runs the Deployment as a gateway proxy, never injected.
    running = workloads.workload(deployment, NS)
    assert running.app.app == "gateway"
    assert running.pod_labels["sidecar.istio.io/inject"] == "false"
    for doc in (account, deployment, service):
        check_document(doc, NS)


def test_deployed_objects_come_and_go_with_their_gateway() -> None:
    gateway, route = manifest()
    objects = {object_key(d, NS): d for d in (gateway, route)}
    deployed = with_deployed_gateways(objects)
    assert set(deployed) - set(objects) == {(group, kind, NS, f"{NAME}-istio") for group, kind in
                                            (("", "ServiceAccount"), ("apps", "Deployment"), ("", "Service"))}
    del deployed[object_key(gateway, NS)]
    assert set(with_deployed_gateways(deployed)) == {object_key(route, NS)}
    # Another class is not istiod's to deploy.
    other = {**gateway, "spec": {**gateway["spec"], "gatewayClassName": "other"}}
    assert set(with_deployed_gateways({object_key(other, NS): other})) == {object_key(other, NS)}


def test_programmed_once_the_service_has_ready_endpoints_and_an_address() -> None:
    gateway, route = manifest()
    not_ready = state(gateway, route, pods=(replace(GATEWAY_POD, ready=False),))
    assert programmed_gap({**gateway, "status": gateway_status(gateway, not_ready)}, "x") == (
        f"Gateway x Programmed=False (AddressNotAssigned: Failed to assign to any requested addresses: "
        f"no instances found for hostname '{FQDN}')")
    ready = gateway_status(gateway, state(gateway, route))
    assert programmed_gap({**gateway, "status": ready}, "x") is None
    assert ready["addresses"] == [{"type": "Hostname", "value": FQDN}]
    # A LoadBalancer Service never gets an external address here, as on kind: never Programmed.
    balanced = {**gateway, "metadata": {"name": NAME, "namespace": NS}}
    gap = programmed_gap({**balanced, "status": gateway_status(balanced, state(balanced, route))}, "x")
    assert gap is not None and f"address pending for hostname '{FQDN}'" in gap


def test_the_gateway_pod_listens_on_the_listener_port_and_routes_its_host_only() -> None:
    gateway, route = manifest()
    config = translate(GATEWAY_POD, state(gateway, route))
    [listener] = config.listeners
    assert listener["address"]["socket_address"] == {"address": GATEWAY_POD.ip, "port_value": 8080}
    hosts = virtual_hosts(config, "http.8080")
    assert list(hosts) == ["bookinfo.meshconf.test:8080"]
    routes = hosts["bookinfo.meshconf.test:8080"]["routes"]
    assert routes[0]["match"] == {"path": "/productpage"}
    assert routes[0]["route"]["cluster"] == "outbound|9080||productpage.bookinfo.svc.cluster.local"
    # A path no rule matches has no route (Envoy's 404), and no catch-all was added.
    assert not any(r["match"] == {"prefix": "/"} for r in routes)


def test_routes_attach_by_section_name_namespace_and_hostname() -> None:
    gateway, route = manifest()
    elsewhere = {**route, "metadata": {"name": "other", "namespace": "tools"}}
    wrong_section = {**route, "metadata": {"name": "wrong", "namespace": NS},
                     "spec": {**route["spec"], "parentRefs": [{"name": NAME, "sectionName": "https"}]}}
    other_host = {**route, "metadata": {"name": "host", "namespace": NS},
                  "spec": {**route["spec"], "hostnames": ["shop.meshconf.test"]}}
    for unattached in (elsewhere, wrong_section, other_host):
        assert translate(GATEWAY_POD, state(gateway, unattached)).routes["http.8080"]["virtual_hosts"] == []
    # A listener without a hostname serves the route's hostnames.
    open_listener = {**gateway["spec"]["listeners"][0]}
    del open_listener["hostname"]
    any_host = {**gateway, "spec": {**gateway["spec"], "listeners": [open_listener]}}
    assert list(virtual_hosts(translate(GATEWAY_POD, state(any_host, other_host)), "http.8080")) == [
        "shop.meshconf.test:8080"]


def test_a_pod_no_gateway_service_selects_gets_no_gateway_api_listener() -> None:
    gateway, route = manifest()
    stranger = make_pod("stranger", "127.0.1.121", {GATEWAY_NAME_LABEL: "other"}, proxy="gateway", ports=())
    assert translate(stranger, state(gateway, route, pods=(stranger,))).listeners == []


def test_mutant_gateway_api_ignored_leaves_the_gateway_without_listeners() -> None:
    gateway, route = manifest()
    assert translate(GATEWAY_POD, state(gateway, route, mutants=frozenset({"gateway-api-ignored"}))).listeners == []
    # Deployed and Programmed all the same: the failure is seen in traffic.
    assert programmed_gap({**gateway, "status": gateway_status(gateway, state(gateway, route))}, "x") is None


@pytest.mark.parametrize(("path", "value", "message"), [
    ("protocol", "TCP", r"spec\.listeners\[0\]\.protocol 'TCP' is not implemented"),
    ("allowedRoutes", {"namespaces": {"from": "Selector"}}, r"allowedRoutes\.namespaces\.from 'Selector'"),
])
def test_listeners_the_local_mesh_does_not_implement_are_refused(path: str, value: object, message: str) -> None:
    gateway, _ = manifest()
    listener = {**gateway["spec"]["listeners"][0], path: value}
    with pytest.raises(UnsupportedResource, match=message):
        check_document({**gateway, "spec": {**gateway["spec"], "listeners": [listener]}}, NS)


class _StubMesh:
    """What wait_for_gateway reads of a LocalMesh: its objects, its state, its running pods."""

    def __init__(self, objects: dict, mesh_state: MeshState) -> None:
        self.objects, self._state = objects, mesh_state

    def state(self) -> MeshState:
        return self._state

    def running(self) -> list:
        return []


@pytest.mark.parametrize(("present", "message"), [
    (False, f"Gateway {NS}/{NAME} does not exist"),
    (True, f"Gateway {NS}/{NAME} Programmed=False (AddressNotAssigned: Failed to assign to any requested addresses: "
           f"no instances found for hostname '{FQDN}')"),
])
def test_the_local_target_waits_for_programmed_and_says_what_it_saw(present: bool, message: str) -> None:
    gateway, route = manifest()
    objects = {object_key(gateway, NS): gateway} if present else {}
    stub = _StubMesh(objects, state(gateway, route, pods=(replace(GATEWAY_POD, ready=False),)))
    with pytest.raises(NotConverged, match="gateway for Gateway") as failed:
        wait_for_gateway(stub, NAME, NS, Timeouts(rollout=0.2, poll=0.05))  # type: ignore[arg-type]
    assert message in str(failed.value)


def test_an_istio_gateway_and_a_gateway_api_gateway_of_one_name_are_two_objects() -> None:
    istio = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw"}}
    gateway_api = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "gw"}}
    assert object_key(istio, NS) != object_key(gateway_api, NS)
    assert object_key({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gw"}}, NS) == ("", "Service", NS, "gw")
