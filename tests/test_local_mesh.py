"""The local mesh's own behaviour: refusal before any change, injection, process lifetime,
pushes to the proxies that changed, configuration Envoy refuses, workload certificates."""

import copy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from conformance import manifests
from conformance.errors import ConformanceError, UnsupportedResource
from conformance.names import INGRESS_GATEWAY, ISTIO_NAMESPACE
from conformance.probes import envoy_stats
from conformance.targets.local.admission import validator
from conformance.targets.local.admission.control import VALIDATOR_MANIFEST
from conformance.targets.local.admission.review import AdmissionRefused
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.model import OUTBOUND_PORT
from conformance.targets.local.objects import namespace_doc
from conformance.targets.local.target import GATEWAY_MANIFEST
from conformance.targets.local.translator.mutants import VALIDATION_OFF
from conformance.targets.local.translator.resources import SECRET_TYPE
from tests.builders import deployment_doc, http_get, manifest_docs as docs, mesh_processes, running_local_mesh


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    with running_local_mesh(tmp_path) as local:
        yield local


def test_refused_document_leaves_nothing_applied(mesh: LocalMesh, tmp_path: Path) -> None:
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    before = dict(mesh.objects)
    bad = copy.deepcopy(docs("bookinfo/bookinfo.yaml", "Deployment")[0])
    bad["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/unknown/app:1"
    with pytest.raises(UnsupportedResource, match="image 'example.com/unknown/app:1'"):
        mesh.apply(docs("bookinfo/bookinfo.yaml", "Service") + [bad], "ns")
    assert mesh.objects == before and mesh.running() == []
    assert mesh_processes(str(tmp_path)) == []


def test_missing_namespace_is_refused(mesh: LocalMesh) -> None:
    with pytest.raises(ConformanceError, match="namespace 'nowhere' does not exist"):
        mesh.apply(docs("clients/curl.yaml"), "nowhere")


@pytest.mark.parametrize(("labels", "injected"), [({"istio-injection": "enabled"}, True), ({}, False)])
def test_injection_follows_namespace_label(mesh: LocalMesh, tmp_path: Path, labels: dict, injected: bool) -> None:
    mesh.apply([namespace_doc("ns", labels)], "ns")
    mesh.apply(docs("clients/curl.yaml"), "ns")
    mesh.wait_ready("ns", 30, 0.05)
    (pod,) = mesh.running()
    view = pod.view()
    assert ("istio-proxy" in view.containers) is injected
    assert ("sidecar.istio.io/status" in view.annotations) is injected
    assert (pod.proxy is not None) is injected
    assert len(mesh_processes(str(tmp_path))) == (2 if injected else 1)


@pytest.mark.parametrize(("namespace", "annotations", "host_network", "injected"), [
    ("ns", {}, None, True),
    # istio/istio pkg/kube/inject/inject.go injectRequired: the annotation counts when no label says.
    ("ns", {"sidecar.istio.io/inject": "false"}, None, False),
    ("ns", {"sidecar.istio.io/inject": "false"}, False, False),
    ("ns", {}, True, False),  # inject.go: never a hostNetwork pod
    ("kube-system", {}, None, False),  # pkg/kube/inject/initializer.go IgnoredNamespaces
])
def test_the_pod_template_reaches_the_injection_decision(
    mesh: LocalMesh, namespace: str, annotations: dict, host_network: bool | None, injected: bool
) -> None:
    mesh.apply([namespace_doc(namespace, {"istio-injection": "enabled"})], namespace)
    mesh.apply([deployment_doc("web", annotations=annotations, host_network=host_network)], namespace)
    mesh.wait_ready(namespace, 30, 0.05)
    (pod,) = mesh.running()
    assert (pod.proxy is not None) is injected, pod.admitted["metadata"]
    assert ("istio-proxy" in pod.view().containers) is injected


def test_deleting_a_deployment_stops_its_processes(mesh: LocalMesh, tmp_path: Path) -> None:
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    curl = docs("clients/curl.yaml")
    mesh.apply(curl, "ns")
    mesh.wait_ready("ns", 30, 0.05)
    mesh.delete([d for d in curl if d["kind"] == "Deployment"], "ns")
    assert mesh.running() == [] and mesh_processes(str(tmp_path)) == []


def _pushes(mesh: LocalMesh) -> dict[str, int]:
    return {pod.workload.name: mesh.control_plane.pushes(pod.proxy.node_id) for pod in mesh.running() if pod.proxy}


def test_a_push_reaches_only_the_proxies_whose_resources_changed(mesh: LocalMesh) -> None:
    """A Gateway and its VirtualService change the gateway's routes alone; a mesh VirtualService
    changes every sidecar's outbound route and nothing of the gateway's. Each proxy gets one
    response, for RDS, and has ACKed it when apply() returns."""
    mesh.apply([namespace_doc(ISTIO_NAMESPACE, {})], ISTIO_NAMESPACE)
    mesh.apply(manifests.load(GATEWAY_MANIFEST), ISTIO_NAMESPACE)
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    mesh.apply(docs("clients/httpbin.yaml") + docs("clients/curl.yaml"), "ns")
    mesh.wait_ready(None, 30, 0.05)
    before = _pushes(mesh)
    assert set(before) == {INGRESS_GATEWAY, "httpbin", "curl"}
    gateway = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "web"},
               "spec": {"selector": {"istio": "ingressgateway"},
                        "servers": [{"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}
    exposed = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
               "spec": {"hosts": ["*"], "gateways": ["web"],
                        "http": [{"route": [{"destination": {"host": "httpbin", "port": {"number": 8000}}}]}]}}
    mesh.apply([gateway, exposed], "ns")
    after_gateway = _pushes(mesh)
    assert {name: after_gateway[name] - before[name] for name in before} == {INGRESS_GATEWAY: 2, "httpbin": 0, "curl": 0}
    mesh.apply([_teapot("httpbin")], "ns")
    after_mesh = _pushes(mesh)
    assert {name: after_mesh[name] - after_gateway[name] for name in before} == {INGRESS_GATEWAY: 0, "httpbin": 1, "curl": 1}
    assert all(set(pod.proxy.sync_status().values()) == {"SYNCED"} for pod in mesh.running() if pod.proxy)
    assert http_get(curl_ip(mesh), OUTBOUND_PORT, "http://httpbin.ns:8000/get")[0] == 418


def curl_ip(mesh: LocalMesh) -> str:
    return next(p.model.ip for p in mesh.running() if p.workload.name == "curl")


def test_a_document_refused_in_translation_is_not_kept(mesh: LocalMesh, tmp_path: Path) -> None:
    """A route the translator cannot build is refused at apply and removed again: later
    applies still work, and the proxies keep the configuration they had."""
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    mesh.apply(docs("clients/curl.yaml"), "ns")
    mesh.wait_ready("ns", 30, 0.05)
    before = dict(mesh.objects)
    no_destination = {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "curl-broken", "namespace": "ns"},
        "spec": {"hosts": ["curl"], "http": [{"match": [{"uri": {"prefix": "/"}}]}]},
    }
    with pytest.raises(ConformanceError, match="has no route"):
        mesh.apply([no_destination], "ns")
    assert mesh.objects == before
    mesh.apply(docs("clients/curl.yaml"), "ns")  # the next push translates without it
    assert len(mesh.running()) == 1


# ---------------------------------------------------------------------------------------------
# Configuration Envoy refuses: a NACK, Envoy's request with error_detail (envoyproxy/envoy
# api/envoy/service/discovery/v3/discovery.proto), also counted in the subscription's
# update_rejected (docs/root/configuration/overview/mgmt_server.rst)

# RE2, Envoy's regex engine, has no lookahead: Envoy refuses the route configuration. Istio's
# validation webhook refuses it first, so these tests take the webhook away, as a cluster whose
# istiod is down and whose webhook says failurePolicy Ignore would.
LOOKAHEAD = "/(?=x)"


def _without_validation(mesh: LocalMesh) -> None:
    mesh.delete(manifests.load(VALIDATOR_MANIFEST), "")


def _regex_route(name: str, host: str, regex: str) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name},
            "spec": {"hosts": [host], "http": [{"match": [{"uri": {"regex": regex}}],
                                                 "route": [{"destination": {"host": host}}]}]}}


def _teapot(host: str) -> dict:
    abort = {"abort": {"httpStatus": 418, "percentage": {"value": 100}}}
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "teapot"},
            "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host}}], "fault": abort}]}}


def test_a_configuration_envoy_refuses_fails_the_apply_and_is_not_kept(mesh: LocalMesh) -> None:
    """Envoy refuses a route with a lookahead regex: apply() names the proxy, the xDS type and
    Envoy's reason, restores the previous objects, and every proxy gets the previous
    configuration again; Envoy kept serving the old one meanwhile."""
    _without_validation(mesh)
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    # Istio's proxies keep no RDS stats unless asked: this curl's asks for them.
    curl_docs = docs("clients/curl.yaml")
    template = next(d for d in curl_docs if d["kind"] == "Deployment")["spec"]["template"]["metadata"]
    template["annotations"] = {"proxy.istio.io/config": 'proxyStatsMatcher: {inclusionRegexps: [".*\\\\.rds\\\\..*"]}'}
    mesh.apply(docs("clients/httpbin.yaml") + curl_docs, "ns")
    mesh.wait_ready("ns", 30, 0.05)
    [curl] = [p for p in mesh.running() if p.workload.name == "curl"]
    assert curl.proxy is not None

    def get() -> int:
        return http_get(curl.model.ip, OUTBOUND_PORT, "http://httpbin.ns:8000/get")[0]

    assert get() == 200
    before, refused_version = dict(mesh.objects), mesh.control_plane.version + 1
    refused = rf"proxy ns/{curl.model.name}: Envoy refused RDS version {refused_version}: .*invalid perl operator: \(\?="
    with pytest.raises(ConformanceError, match=refused):
        mesh.apply([_regex_route("lookahead", "httpbin", LOOKAHEAD)], "ns")
    assert mesh.objects == before
    # The previous configuration was pushed again, with a newer version, and taken.
    counters = envoy_stats.parse(curl.proxy.stats())
    assert counters["http.outbound_127.0.0.1_15001;.rds.outbound.update_rejected"] == 1
    [taken] = re.findall(r'rds\.outbound\.version_text: "(\d+)"', curl.proxy.admin("/stats?filter=version_text").text)
    assert int(taken) > refused_version
    assert curl.proxy.refusal() is None and get() == 200
    mesh.apply([_teapot("httpbin")], "ns")  # a later apply takes effect at once
    assert get() == 418


def test_a_proxy_that_refuses_its_first_configuration_fails_wait_ready_with_envoys_reason(
    mesh: LocalMesh,
) -> None:
    """No Envoy runs when the VirtualService is applied; the curl sidecar reads it as it starts,
    refuses it, and wait_ready says so at once instead of at its timeout."""
    _without_validation(mesh)
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    mesh.apply([_regex_route("lookahead", "curl", LOOKAHEAD)], "ns")
    mesh.apply(docs("clients/curl.yaml"), "ns")
    [curl] = mesh.running()
    refused = rf"pod ns/{curl.model.name}: proxy ns/{curl.model.name}: Envoy refused RDS version \d+: .*invalid perl operator"
    with pytest.raises(ConformanceError, match=refused):
        mesh.wait_ready("ns", 30, 0.05)
    assert not curl.ready()


def test_every_proxy_is_served_its_workload_certificate_and_the_mesh_root(mesh: LocalMesh) -> None:
    """As istio-agent: `default`, with the pod's SPIFFE identity, and `ROOTCA`, by SDS on demand."""
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    mesh.apply(docs("clients/curl.yaml"), "ns")
    mesh.wait_ready("ns", 30, 0.05)
    [curl] = mesh.running()
    assert curl.proxy is not None
    served = mesh.control_plane.resources(curl.proxy.node_id, SECRET_TYPE)
    assert sorted(served) == ["ROOTCA", "default"]
    chain = served["default"]["tls_certificate"]["certificate_chain"]["inline_string"]
    identity = x509.load_pem_x509_certificate(chain.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert identity == [f"spiffe://cluster.local/ns/ns/sa/{curl.model.service_account}"]
    assert served["ROOTCA"]["validation_context"]["trusted_ca"]["inline_string"] == mesh.ca.root_pem
    # Nothing names them yet: Envoy asked for none, and is in sync.
    assert curl.proxy.sync_status()["SDS"] == "SYNCED"


def test_a_pod_the_injector_cannot_be_asked_about_is_refused_with_the_api_servers_words(mesh: LocalMesh) -> None:
    """Istio's injector webhooks say failurePolicy Fail: with the injector down, the pod is not
    created, the apply fails with the API server's message, and nothing of it stays."""
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    before = dict(mesh.objects)
    mesh.admission.injector.stop()
    refused = (r'Deployment ns/curl: pod curl-\S+: Internal error occurred: failed calling webhook '
               r'"namespace.sidecar-injector.istio.io": failed to call webhook: Post "https://127\.')
    with pytest.raises(ConformanceError, match=refused):
        mesh.apply(docs("clients/curl.yaml"), "ns")
    assert mesh.objects == before and mesh.running() == []
    mesh.admission.injector.start()  # the same address: the webhook is back
    mesh.apply(docs("clients/curl.yaml"), "ns")
    [curl] = mesh.running()
    assert curl.proxy is not None and "istio-proxy" in curl.view().containers


def test_istios_validation_webhook_refuses_what_istio_refuses_before_anything_changes(mesh: LocalMesh) -> None:
    mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
    before = dict(mesh.objects)
    refused = (r'VirtualService ns/lookahead: admission webhook "validation.istio.io" denied the request: '
               r'configuration is invalid: "uri": error parsing regexp: invalid perl operator: \(\?=')
    with pytest.raises(ConformanceError, match=refused):
        mesh.apply([_regex_route("lookahead", "curl", LOOKAHEAD)], "ns")
    assert mesh.objects == before


def test_an_object_its_crd_schema_refuses_is_refused_as_the_api_server_words_it_before_any_webhook(
        mesh: LocalMesh) -> None:
    """The API server checks a custom resource against its CRD's schema before validating admission:
    a 422 Invalid in its words, Istio's webhook never asked, and nothing of the apply stored."""
    mesh.apply([namespace_doc("ns", {})], "ns")
    before = dict(mesh.objects)
    asked: list[str] = []  # the objects Istio's validating webhook was sent
    istiod = mesh.admission.injector
    answer = istiod.routes[validator.VALIDATE_PATH]
    istiod.routes[validator.VALIDATE_PATH] = lambda review: asked.append(review["request"]["name"]) or answer(review)
    no_host = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "no-host"},
               "spec": {"subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}
    refused = 'DestinationRule ns/no-host: DestinationRule.networking.istio.io "no-host" is invalid: spec.host: Required value'
    with pytest.raises(AdmissionRefused, match=f"^{re.escape(refused)}$"):
        mesh.apply([_regex_route("valid", "curl", "/v1"), no_host], "ns")
    assert asked == ["valid"]  # the valid VirtualService before it was; the DestinationRule never
    assert mesh.objects == before
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "unnamed-parent"},
             "spec": {"parentRefs": [{"group": "", "kind": "Service"}],
                      "rules": [{"backendRefs": [{"name": "curl", "port": 80, "weight": -1}]}]}}
    several = ('HTTPRoute ns/unnamed-parent: HTTPRoute.gateway.networking.k8s.io "unnamed-parent" is invalid: '
               "[spec.parentRefs[0].name: Required value, spec.rules[0].backendRefs[0].weight: Invalid value: ")
    with pytest.raises(AdmissionRefused, match=f"^{re.escape(several)}"):
        mesh.apply([route], "ns")
    assert asked == ["valid"] and mesh.objects == before


def test_the_crd_schema_refuses_what_a_mesh_without_istios_validation_lets_in(tmp_path: Path) -> None:
    """With the validation-off mutant Istio's webhook allows everything; the schema still refuses."""
    mesh = LocalMesh(tmp_path / "run", frozenset({VALIDATION_OFF}))
    try:
        mesh.apply([namespace_doc("ns", {})], "ns")
        lookahead = _regex_route("lookahead", "curl", LOOKAHEAD)  # Istio's webhook refuses it
        mesh.apply([lookahead], "ns")
        assert mesh.holds(lookahead, "ns")  # the mutant is live
        no_host = manifests.load("validation/dr-no-host.yaml")
        with pytest.raises(AdmissionRefused, match=re.escape('"invalid-no-host" is invalid: spec.host: Required value')):
            mesh.apply(no_host, "ns")
        assert not mesh.holds(no_host[0], "ns")
    finally:
        mesh.stop()
    assert mesh_processes(str(tmp_path)) == []
