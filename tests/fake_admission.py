"""What the fake Kubernetes API (tests/fakeapi.py) does around a write: admission, and the Deployment
controller that creates pods through it.

- NamespaceLifecycle (kubernetes/kubernetes plugin/pkg/admission/namespace/lifecycle/admission.go):
  a namespaced object is not created in a namespace that does not exist: 404 `namespaces "x" not found`;
- admission webhooks: the Mutating- and ValidatingWebhookConfigurations among the fake's objects,
  called over HTTPS with AdmissionReview v1 by the local mesh's client
  (conformance/targets/local/admission/review.py admit: selectors, order, JSONPatch, caBundle); the
  admissionregistration kinds themselves are exempt (apiserver pkg/admission/plugin/webhook/generic/
  webhook.go). A webhook's Service is found in the fake's `webhook_services`. A denial is the Status
  ToStatusErr makes (400 unless the webhook set a code; plugin/webhook/errors/statuserror.go), a
  failed call under failurePolicy Fail an InternalError (500);
- the Deployment and ReplicaSet controllers and the kubelet in one: a written Deployment's pods are
  created through admission (generateName <name>-<hash>-) and run ready, and the Deployment is rolled
  out; a pod admission refuses leaves it unavailable with a ReplicaFailure condition, as the
  ReplicaSet controller reports FailedCreate.
"""

import copy
import hashlib
import json
import random
from collections.abc import Callable
from typing import Any

from conformance.errors import ConformanceError
from conformance.targets.kube_views import GENERATED_NAME_ALPHABET
from conformance.targets.local.admission.review import AdmissionRefused, admit
from conformance.webhooks import CONFIGURATION_KINDS, Webhook, configurations
from tests import fake_discovery
from tests.fake_apply import Owners
from tests.fake_discovery import Route

ADMISSION_GROUP = "admissionregistration.k8s.io"
INTERNAL_ERROR = "Internal error occurred: "
CONTROLLER_MANAGER = "kube-controller-manager"

Objects = dict[str, dict[str, Any]]  # the fake's objects, by path
Refusal = tuple[int, dict[str, Any]]  # an HTTP code and the Status the API server answers with


def missing_namespace(objects: Objects, route: Route) -> Refusal | None:
    """NamespaceLifecycle's refusal of a namespaced object created in a namespace that does not exist."""
    if not route.resource.namespaced or not route.namespace:
        return None
    if f"/api/v1/namespaces/{route.namespace}" in objects:
        return None
    return 404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": f'namespaces "{route.namespace}" not found', "reason": "NotFound",
                 "details": {"name": route.namespace, "kind": "namespaces"}, "code": 404}


class Webhooks:
    """The MutatingAdmissionWebhook and ValidatingAdmissionWebhook plugins."""

    def __init__(self, objects: Objects, services: dict[tuple[str, str, int], tuple[str, int]]) -> None:
        self._objects = objects
        self._services = services  # (namespace, name, port) -> where a test's webhook server listens

    def admit(self, phase: str, route: Route, obj: dict[str, Any],
              before: dict[str, Any] | None) -> tuple[dict[str, Any], Refusal | None]:
        """The object as the `phase` webhooks admit it, or the API server's refusal."""
        if route.resource.group == ADMISSION_GROUP:  # webhooks are never called for their own kinds
            return obj, None
        try:
            hooks = [hook for hook in configurations(self._configurations()) if hook.kind == phase]
        except ConformanceError as exc:
            return obj, _internal_error(f"fake API: webhook configuration not modelled: {exc}")
        if not hooks:
            return obj, None
        resource = route.resource
        try:
            admitted = admit(hooks, obj, operation="CREATE" if before is None else "UPDATE",
                             namespace=route.namespace or "", namespace_labels=self._namespace_labels(route.namespace),
                             resource=(resource.group, resource.version, resource.plural),
                             kind=(resource.group, resource.version, resource.kind), resolve=self._resolve)
        except AdmissionRefused as refused:
            return obj, _refusal(str(refused))
        return admitted, None

    def _configurations(self) -> list[dict[str, Any]]:
        prefix = f"/apis/{ADMISSION_GROUP}/v1/"
        return [obj for path, obj in self._objects.items()
                if path.startswith(prefix) and obj.get("kind") in CONFIGURATION_KINDS]

    def _namespace_labels(self, namespace: str | None) -> dict[str, str]:
        found = self._objects.get(f"/api/v1/namespaces/{namespace}") if namespace else None
        return dict(((found or {}).get("metadata") or {}).get("labels") or {})

    def _resolve(self, hook: Webhook) -> str:
        """The URL of a webhook's Service, as the API server's service resolver finds it."""
        service = hook.service
        address = self._services.get((service.namespace, service.name, service.port)) if service else None
        if service is None or address is None:
            raise ConformanceError(f'service "{service.name if service else "?"}" not found')
        return f"https://{address[0]}:{address[1]}{service.path or ''}"


# Creates a pod as the controller manager would: (HTTP code, the answer's body).
CreatePod = Callable[[Route, dict[str, Any]], tuple[int, Any]]


class DeploymentController:
    """The Deployment and ReplicaSet controllers, the garbage collector of their pods, and the kubelet."""

    def __init__(self, objects: Objects, owners: Owners, create_pod: CreatePod) -> None:
        self._objects = objects
        self._owners = owners
        self._create_pod = create_pod
        self._pods_of: dict[str, list[str]] = {}  # a Deployment's path -> its pods' paths

    def run(self, route: Route, deployment: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
        """Pods for a new or changed pod template, created through admission; the Deployment's status."""
        template = (deployment.get("spec") or {}).get("template") or {}
        unchanged = before is not None and ((before.get("spec") or {}).get("template") or {}) == template
        if unchanged and route.object_path in self._pods_of:
            return before.get("status") or _rolled_out(deployment)
        self.remove_pods(route.object_path)  # the old ReplicaSet scaled down
        template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        name = deployment["metadata"]["name"]
        pods: list[str] = []
        self._pods_of[route.object_path] = pods
        for _ in range((deployment.get("spec") or {}).get("replicas", 1)):
            meta = copy.deepcopy(template.get("metadata") or {})
            meta["labels"] = {**(meta.get("labels") or {}), "pod-template-hash": template_hash}
            meta["generateName"] = f"{name}-{template_hash}-"  # the ReplicaSet's name and "-"
            meta["name"] = generated_name(meta["generateName"])
            meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-{template_hash}",
                                        "controller": True, "blockOwnerDeletion": True}]
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                   "spec": copy.deepcopy(template.get("spec") or {})}
            pod_route = Route(fake_discovery.builtin_resource("v1", "pods"), route.namespace, meta["name"])
            code, body = self._create_pod(pod_route, pod)
            if code >= 300:
                return _replica_failure(deployment, body.get("message", ""))
            self._objects[pod_route.object_path]["status"] = _running(len(self._objects))
            pods.append(pod_route.object_path)
        return _rolled_out(deployment)

    def remove_pods(self, deployment_path: str) -> None:
        """A Deployment's pods gone with it (or with its old template)."""
        for path in self._pods_of.pop(deployment_path, []):
            self._objects.pop(path, None)
            self._owners.forget(path)


def generated_name(prefix: str) -> str:
    """A name from generateName: the prefix and five random characters (apiserver names.SimpleNameGenerator)."""
    return prefix + "".join(random.choices(GENERATED_NAME_ALPHABET, k=5))


def _rolled_out(deployment: dict[str, Any]) -> dict[str, Any]:
    want = (deployment.get("spec") or {}).get("replicas", 1)
    return {"observedGeneration": (deployment.get("metadata") or {}).get("generation", 1),
            "replicas": want, "updatedReplicas": want, "readyReplicas": want, "availableReplicas": want}


def _replica_failure(deployment: dict[str, Any], message: str) -> dict[str, Any]:
    """A Deployment whose ReplicaSet could not create its pods (the controller's FailedCreate)."""
    want = (deployment.get("spec") or {}).get("replicas", 1)
    return {"observedGeneration": (deployment.get("metadata") or {}).get("generation", 1), "replicas": 0,
            "updatedReplicas": 0, "availableReplicas": 0, "unavailableReplicas": want,
            "conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message}]}


def _running(number: int) -> dict[str, Any]:
    """A pod's status once the kubelet runs it and its probes pass."""
    return {"phase": "Running", "podIP": f"10.244.{number // 250}.{number % 250 + 2}",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]}


def _refusal(message: str) -> Refusal:
    """The Status of an admission refusal. A webhook's call that failed under failurePolicy Fail is
    an InternalError (500, apierrors.NewInternalError). A denial is ToStatusErr's: the webhook's own
    code if at least 400, else 400, with the webhook's reason if any; Istio's validator sets neither
    (istio/istio pkg/webhooks/validation/server/server.go toAdmissionResponse), and review.admit
    hands on only the message, so every denial here is 400 without a reason."""
    if message.startswith(INTERNAL_ERROR):
        return _internal_error(message, {"causes": [{"message": message.removeprefix(INTERNAL_ERROR)}]})
    return 400, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                 "code": 400}


def _internal_error(message: str, details: dict[str, Any] | None = None) -> Refusal:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "InternalError", "code": 500}
    return 500, ({**body, "details": details} if details is not None else body)
