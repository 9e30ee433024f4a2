"""The fake Kubernetes API server itself (tests/fakeapi.py): it must refuse what a kind cluster's
API server refuses, as that does.

It serves a CRD-backed kind only while its CRD is applied, validates against the CRD's schema,
answers conflicts and Services as a kind cluster's API server, creates nothing in a namespace that
does not exist, runs dry runs and admission webhooks, and a Deployment's pods through admission.
"""

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from conformance.errors import ConformanceError, UnsupportedResource
from conformance.targets.kube import Kube
from conformance.targets.local.xds.secrets import MeshCA
from tests.admission_builders import WebhookServer, answer_of, configuration_doc, hook_doc
from tests.cluster_builders import seed_namespace
from tests.release_builders import ISTIO_CRDS, install_crds, upstream_crd
from tests.fakeapi import FakeApi

VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews"},
      "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}}
VS_PATH = "/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices/reviews"


# --- the API server: CRD kinds, schemas, conflicts, Services ----------------------------------------


def raw(api: FakeApi, method: str, path: str, body: Any = None, content_type: str = "application/json",
        **query: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request as any client would send it: (status, JSON body, headers)."""
    url = f"{api.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request) as reply:
            return reply.status, json.loads(reply.read()), dict(reply.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def apply(api: FakeApi, path: str, body: dict[str, Any], manager: str = "meshconf",
          **query: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    return raw(api, "PATCH", path, body, "application/apply-patch+yaml", fieldManager=manager, **query)


def test_a_crd_kind_is_not_found_until_its_crd_is_applied_and_again_after_it_is_deleted(
        api: FakeApi, kube: Kube) -> None:
    seed_namespace(api, "bookinfo")
    with pytest.raises(ResourceNotFoundError):
        kube.dynamic.resources.get(api_version="networking.istio.io/v1", kind="VirtualService")
    with pytest.raises(UnsupportedResource, match="is its CRD installed"):
        kube.apply([VS], "bookinfo")
    code, body, _ = apply(api, VS_PATH, VS)
    assert (code, body["reason"], body["message"]) == (404, "NotFound", "the server could not find the requested resource")

    crd = upstream_crd("virtualservices.networking.istio.io")
    kube.apply([crd], "bookinfo")
    kube.apply([VS], "bookinfo")
    assert api.objects[VS_PATH]["spec"]["hosts"] == ["reviews"]

    kube.delete([crd], "bookinfo")
    assert VS_PATH not in api.objects  # its objects went with it
    assert raw(api, "GET", VS_PATH)[0] == 404 and raw(api, "GET", "/apis/networking.istio.io/v1")[0] == 404


def test_an_object_against_its_crd_schema_is_refused_as_the_api_server_words_it(api: FakeApi, kube: Kube) -> None:
    seed_namespace(api, "bookinfo")
    install_crds(api, *ISTIO_CRDS)
    invalid = {**VS, "spec": {"hosts": "reviews", "http": [{"route": [{"destination": {}}]}]}}
    code, body, _ = apply(api, VS_PATH, invalid)
    assert code == 422 and body["reason"] == "Invalid" and body["code"] == 422
    assert body["message"].startswith('VirtualService.networking.istio.io "reviews" is invalid: [')
    assert body["details"]["name"] == "reviews" and body["details"]["group"] == "networking.istio.io"
    causes = {c["field"]: c for c in body["details"]["causes"]}
    assert causes["spec.hosts"]["reason"] == "FieldValueInvalid"
    assert causes["spec.http[0].route[0].destination.host"] == {
        "reason": "FieldValueRequired", "message": "Required value", "field": "spec.http[0].route[0].destination.host"}
    assert VS_PATH not in api.objects
    with pytest.raises(ConformanceError, match="HTTP 422 .*is invalid"):
        kube.apply([invalid], "bookinfo")


def test_an_undeclared_field_is_pruned_with_a_warning_or_refused_when_strict(api: FakeApi) -> None:
    seed_namespace(api, "bookinfo")
    install_crds(api, *ISTIO_CRDS)
    typo = {**VS, "spec": {**VS["spec"], "htttp": []}}
    code, body, _ = apply(api, VS_PATH, typo, fieldValidation="Strict")
    assert code == 400 and "strict decoding error: unknown field \"spec.htttp\"" in body["message"]
    code, body, headers = apply(api, VS_PATH, typo)
    assert code == 201 and "htttp" not in body["spec"]
    assert headers["Warning"] == '299 - "unknown field \"spec.htttp\""'


def test_create_of_a_taken_name_is_already_exists(api: FakeApi) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bookinfo"}}
    assert raw(api, "POST", "/api/v1/namespaces", namespace)[0] == 201
    code, body, _ = raw(api, "POST", "/api/v1/namespaces", namespace)
    assert (code, body["reason"], body["message"]) == (409, "AlreadyExists", 'namespaces "bookinfo" already exists')


def test_apply_conflicts_with_another_manager_unless_forced(api: FakeApi) -> None:
    seed_namespace(api, "istio-system")
    path = "/api/v1/namespaces/istio-system/configmaps/mesh"
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mesh"}, "data": {"mesh": "a"}}
    assert apply(api, path, config, manager="istioctl")[0] == 201
    assert apply(api, path, config)[0] == 200  # the same value: shared, no conflict
    changed = {**config, "data": {"mesh": "b"}}
    code, body, _ = apply(api, path, changed)
    assert code == 409 and body["reason"] == "Conflict"
    assert body["message"] == 'Apply failed with 1 conflict: conflict with "istioctl": .data.mesh'
    assert body["details"]["causes"] == [{"reason": "FieldManagerConflict", "message": 'conflict with "istioctl"',
                                          "field": ".data.mesh"}]
    code, body, _ = apply(api, path, changed, force="true")  # what meshconf sends (kube.py)
    assert code == 200 and body["data"] == {"mesh": "b"}
    owners = {f["manager"]: f["fieldsV1"] for f in body["metadata"]["managedFields"]}
    assert owners == {"meshconf": {"f:data": {"f:mesh": {}}}}


def test_apply_refuses_an_object_of_another_namespace_than_the_url(api: FakeApi) -> None:
    seed_namespace(api, "istio-system")
    path = "/api/v1/namespaces/istio-system/configmaps/mesh"
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mesh", "namespace": "default"}}
    code, body, _ = apply(api, path, config)
    assert (code, body["reason"]) == (400, "BadRequest") and "does not match the namespace" in body["message"]
    assert path not in api.objects
    assert apply(api, path, {**config, "metadata": {"name": "mesh", "namespace": "istio-system"}})[0] == 201


def test_a_load_balancer_gets_no_address_on_kind(api: FakeApi) -> None:
    seed_namespace(api, "istio-system")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gw"},
               "spec": {"type": "LoadBalancer", "ports": [{"name": "http2", "port": 80}]}}
    code, body, _ = apply(api, "/api/v1/namespaces/istio-system/services/gw", service)
    assert code == 201 and body["spec"]["clusterIP"]
    assert 30000 <= body["spec"]["ports"][0]["nodePort"] <= 32767
    assert body["status"] == {"loadBalancer": {}}
    taken = {**service, "metadata": {"name": "other"},
             "spec": {"type": "NodePort", "ports": [{"name": "http2", "port": 80,
                                                     "nodePort": body["spec"]["ports"][0]["nodePort"]}]}}
    code, body, _ = apply(api, "/api/v1/namespaces/istio-system/services/other", taken)
    assert code == 422 and "provided port is already allocated" in body["message"]


# --- the API server: dry runs, typed lists, admission webhooks, a Deployment's pods -------------

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}}
APPS = "/api/v1/namespaces/apps"
PODS = f"{APPS}/pods"


def test_a_dry_run_create_answers_the_object_and_stores_nothing(api: FakeApi) -> None:
    seed_namespace(api, "apps")
    code, body, _ = raw(api, "POST", PODS, POD, dryRun="All")
    assert code == 201 and body["metadata"]["name"].startswith("web-") and len(body["metadata"]["name"]) == 9
    assert body["metadata"]["uid"] and body["metadata"]["namespace"] == "apps"
    assert "resourceVersion" not in body["metadata"]
    assert list(api.objects) == [APPS]
    code, body, _ = raw(api, "POST", PODS, POD, dryRun="Yes")  # only All exists (metav1.DryRunAll)
    assert (code, body["reason"], body["message"]) == (422, "Invalid", 'CreateOptions.meta.k8s.io "" is invalid: '
                                                       'dryRun: Unsupported value: []string{"Yes"}: supported values: "All"')
    assert body["details"]["causes"] == [{"reason": "FieldValueNotSupported", "field": "dryRun",
                                          "message": 'Unsupported value: []string{"Yes"}: supported values: "All"'}]
    code, body, _ = apply(api, f"{PODS}/web", {**POD, "metadata": {"name": "web"}}, dryRun="All")
    assert code == 405 and "not modelled" in body["message"]  # loudly: a dry-run apply is not modelled
    assert list(api.objects) == [APPS]


def test_nothing_is_created_in_a_namespace_that_does_not_exist(api: FakeApi) -> None:
    # The NamespaceLifecycle admission plugin's NotFound (kubernetes/kubernetes plugin/pkg/admission/
    # namespace/lifecycle/admission.go), before any webhook and for a dry run or an apply too.
    missing = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": 'namespaces "apps" not found', "reason": "NotFound",
               "details": {"name": "apps", "kind": "namespaces"}, "code": 404}
    assert raw(api, "POST", PODS, POD)[:2] == (404, missing)
    assert raw(api, "POST", PODS, POD, dryRun="All")[:2] == (404, missing)
    assert apply(api, f"{PODS}/web", {**POD, "metadata": {"name": "web"}})[:2] == (404, missing)
    assert api.objects == {}
    # Cluster-scoped kinds need no namespace; once it exists, the pod goes in.
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}
    assert raw(api, "POST", "/api/v1/namespaces", namespace)[0] == 201
    assert raw(api, "POST", PODS, POD)[0] == 201


def test_a_built_in_kinds_list_items_carry_no_kind_a_crds_do(api: FakeApi) -> None:
    seed_namespace(api, "apps")
    seed_namespace(api, "bookinfo")
    install_crds(api, *ISTIO_CRDS)
    assert raw(api, "POST", PODS, {**POD, "metadata": {"name": "web"}})[0] == 201
    assert apply(api, VS_PATH, VS)[0] == 201
    [pod] = raw(api, "GET", PODS)[1]["items"]
    assert "kind" not in pod and "apiVersion" not in pod and pod["metadata"]["name"] == "web"
    [vs] = raw(api, "GET", VS_PATH.rsplit("/", 1)[0])[1]["items"]
    assert (vs["apiVersion"], vs["kind"]) == ("networking.istio.io/v1", "VirtualService")
    assert raw(api, "GET", f"{PODS}/web")[1]["kind"] == "Pod"  # a single object carries its kind


@dataclass
class Hooks:
    """A webhook server of the tests' own: its response fields (`replies`) and the reviews it got."""

    replies: dict[str, Any]
    seen: list[dict[str, Any]]


@pytest.fixture
def hooks(api: FakeApi, ca: MeshCA, tmp_path: Path) -> Iterator[Hooks]:
    """The webhook server behind Service tests/hooks, which the fake API resolves; allowing until a
    test changes its replies."""
    replies: dict[str, Any] = {"allowed": True}
    server = WebhookServer(ca, "hooks.tests.svc", lambda review: (200, answer_of(review, **replies)), tmp_path)
    api.webhook_services[("tests", "hooks", 443)] = server.address
    yield Hooks(replies, server.seen)
    server.close()


def store_configuration(api: FakeApi, kind: str, ca: MeshCA, **fields: Any) -> None:
    trusted = {"service": {"namespace": "tests", "name": "hooks", "path": "/hook"},
               "caBundle": base64.b64encode(ca.root_pem.encode()).decode()}
    doc = configuration_doc(kind, hook_doc(clientConfig=trusted, **fields))
    code, body, _ = raw(api, "POST", f"/apis/admissionregistration.k8s.io/v1/{kind.lower()}s", doc)
    assert code == 201, body


def test_a_webhooks_denial_is_the_api_servers_400_and_nothing_is_stored(api: FakeApi, ca: MeshCA, hooks: Hooks) -> None:
    seed_namespace(api, "apps")
    store_configuration(api, "ValidatingWebhookConfiguration", ca)
    hooks.replies.update(allowed=False, status={"message": "no pods today"})
    code, body, _ = raw(api, "POST", PODS, POD)
    # ToStatusErr: the webhook set no code, so 400; its message after the API server's words.
    assert (code, body) == (400, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": 'admission webhook "hook.tests.example.com" denied the request: '
                                             "no pods today", "code": 400})
    assert hooks.seen[0]["request"]["operation"] == "CREATE" and not any("/pods/" in p for p in api.objects)
    assert raw(api, "POST", PODS, POD, dryRun="All")[0] == 400  # a dry run is admitted too


def test_a_webhook_that_cannot_be_called_fails_the_request_under_failure_policy_fail(
        api: FakeApi, ca: MeshCA, hooks: Hooks) -> None:
    seed_namespace(api, "apps")
    everything = [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]
    store_configuration(api, "MutatingWebhookConfiguration", ca, rules=everything)
    api.webhook_services.clear()
    code, body, _ = raw(api, "POST", PODS, POD)
    assert (code, body["reason"]) == (500, "InternalError")
    assert body["message"] == ('Internal error occurred: failed calling webhook "hook.tests.example.com": '
                               'service "hooks" not found')
    # Webhook configurations themselves are never admitted by webhooks: this one goes in.
    store_configuration(api, "ValidatingWebhookConfiguration", ca)
    assert hooks.seen == []


def test_webhooks_mutate_before_the_schema_and_validate_after_it(api: FakeApi, ca: MeshCA, hooks: Hooks) -> None:
    seed_namespace(api, "bookinfo")
    install_crds(api, *ISTIO_CRDS)
    rules = [{"operations": ["CREATE"], "apiGroups": ["networking.istio.io"], "apiVersions": ["*"],
              "resources": ["*"]}]
    store_configuration(api, "MutatingWebhookConfiguration", ca, rules=rules)
    store_configuration(api, "ValidatingWebhookConfiguration", ca, rules=rules)
    invalid = {**VS, "spec": {"hosts": "reviews", "http": [{"route": [{"destination": {"host": "reviews"}}]}]}}
    code, body, _ = apply(api, VS_PATH, invalid)
    assert (code, body["reason"]) == (422, "Invalid")
    assert len(hooks.seen) == 1  # the mutating webhook only: validating webhooks never see a schema refusal
    assert apply(api, VS_PATH, VS)[0] == 201 and len(hooks.seen) == 3


def test_a_deployment_runs_its_pods_through_admission(api: FakeApi, ca: MeshCA, hooks: Hooks) -> None:
    seed_namespace(api, "apps")
    api.deployments_roll_out = True
    template = {"metadata": {"labels": {"app": "web"}}, "spec": POD["spec"]}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template}}
    path = "/apis/apps/v1/namespaces/apps/deployments/web"
    code, body, _ = apply(api, path, deployment)
    assert code == 201 and body["status"]["availableReplicas"] == 2
    pods = raw(api, "GET", PODS)[1]["items"]
    assert len(pods) == 2 and all(p["metadata"]["name"].startswith("web-") for p in pods)
    assert all(p["status"]["conditions"][0] == {"type": "Ready", "status": "True"} for p in pods)
    assert raw(api, "DELETE", path)[0] == 200 and raw(api, "GET", PODS)[1]["items"] == []  # garbage-collected

    store_configuration(api, "ValidatingWebhookConfiguration", ca)
    hooks.replies.update(allowed=False, status={"message": "no pods today"})
    code, body, _ = apply(api, path, deployment)
    assert code == 201 and body["status"]["availableReplicas"] == 0  # applied, but its pods are refused
    [condition] = body["status"]["conditions"]
    assert (condition["type"], condition["reason"]) == ("ReplicaFailure", "FailedCreate")
    assert "no pods today" in condition["message"] and raw(api, "GET", PODS)[1]["items"] == []
