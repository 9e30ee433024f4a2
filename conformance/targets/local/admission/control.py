"""The API server's part of admission in the local mesh: the webhook configurations applied to the
mesh, the istiods they name (the local injector and validator per revision, on the mesh's own
address), each new pod sent through them before it runs, and each object before it is stored."""

import base64
import copy
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from conformance import manifests
from conformance.errors import ConformanceError
from conformance.names import CANARY_REVISION, DEFAULT_REVISION, ISTIO_NAMESPACE, istiod_name
from conformance.targets.crd_schema import schema_set, split_api_version
from conformance.targets.field_errors import invalid_message
from conformance.targets.local.admission import validator
from conformance.targets.local.admission.injector import Injector
from conformance.targets.local.admission.review import AdmissionRefused, admit
from conformance.targets.local.translator.mutants import REVISION_IGNORED, WEBHOOK_FAIL_OPEN
from conformance.targets.local.xds.secrets import MeshCA
from conformance.webhooks import IGNORE, MUTATING, VALIDATING, Webhook, configurations

# Istio's sidecar injector and validation webhooks, as its charts install them with istiod, and
# the injector webhooks of a second revision (the chart with revision=canary).
INJECTOR_MANIFEST = "local/istio-sidecar-injector.yaml"
VALIDATOR_MANIFEST = "local/istio-validator.yaml"
REVISION_MANIFESTS = {CANARY_REVISION: "local/istio-sidecar-injector-canary.yaml"}
# istiod's webhook port (the istiod Service maps 443 to it: istio/istio
# manifests/charts/istio-control/istio-discovery/templates/service.yaml, https-webhook).
WEBHOOK_PORT = 15017
SERVICE_PORT = 443
POD_RESOURCE = ("", "v1", "pods")
POD_KIND = ("", "v1", "Pod")


def istiod_webhooks(root_pem: str, mutants: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The default revision's webhook configurations as istiod leaves them once it runs: its
    root in every caBundle (istio/istio pkg/webhooks/webhookpatch.go)."""
    injector = manifests.load(INJECTOR_MANIFEST)
    if WEBHOOK_FAIL_OPEN in mutants:
        for hook in (h for doc in injector for h in doc["webhooks"]):
            hook["failurePolicy"] = IGNORE
    return [_with_ca_bundle(doc, root_pem) for doc in [*injector, *manifests.load(VALIDATOR_MANIFEST)]]


def revision_webhooks(revision: str, root_pem: str, mutants: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """A second revision's injector webhooks, caBundle filled as its istiod does."""
    if revision not in REVISION_MANIFESTS:
        raise ConformanceError(f"the local mesh has no revision {revision!r} (it has {', '.join(REVISION_MANIFESTS)})")
    docs = manifests.load(REVISION_MANIFESTS[revision])
    if REVISION_IGNORED in mutants:  # a revision whose webhooks still call the default istiod
        for hook in (h for doc in docs for h in doc["webhooks"]):
            hook["clientConfig"]["service"]["name"] = istiod_name(DEFAULT_REVISION)
    return [_with_ca_bundle(doc, root_pem) for doc in docs]


def _with_ca_bundle(doc: Mapping[str, Any], root_pem: str) -> dict[str, Any]:
    out = copy.deepcopy(dict(doc))
    for hook in out.get("webhooks") or ():
        hook.setdefault("clientConfig", {}).setdefault("caBundle", base64.b64encode(root_pem.encode()).decode())
    return out


class AdmissionControl:
    """Runs the local istiods' webhooks (one per revision) and admits pods and objects through the
    webhooks the mesh holds."""

    def __init__(self, ca: MeshCA, host: str, mutants: frozenset[str] = frozenset()) -> None:
        self._ca, self._host, self._mutants = ca, host, mutants
        default = Injector(ca, host, WEBHOOK_PORT, mutants=mutants)
        # istiod serves validation on its webhook port too.
        default.serve(validator.VALIDATE_PATH, partial(validator.review_response, mutants=mutants))
        default.start()
        self.injectors = {DEFAULT_REVISION: default}

    def istiod_webhooks(self) -> list[dict[str, Any]]:
        """The default revision's webhook configurations, trusting this mesh's istiod."""
        return istiod_webhooks(self._ca.root_pem, self._mutants)

    def revision_webhooks(self, revision: str) -> list[dict[str, Any]]:
        return revision_webhooks(revision, self._ca.root_pem, self._mutants)

    @property
    def injector(self) -> Injector:
        """The default revision's istiod."""
        return self.injectors[DEFAULT_REVISION]

    def add_revision(self, revision: str) -> None:
        if revision in self.injectors:
            raise ConformanceError(f"revision {revision!r} already runs in the local mesh")
        injector = Injector(self._ca, self._host, revision=revision, mutants=self._mutants)
        injector.start()
        self.injectors[revision] = injector

    def remove_revision(self, revision: str) -> None:
        if revision != DEFAULT_REVISION:
            injector = self.injectors.pop(revision, None)
            if injector is not None:
                injector.stop()

    def stop(self) -> None:
        for injector in self.injectors.values():
            injector.stop()

    def admit_pod(self, pod: Mapping[str, Any], namespace: str, namespace_labels: Mapping[str, str],
                  webhook_docs: Sequence[Mapping[str, Any]], dry_run: bool = False) -> dict[str, Any]:
        """The pod as the API server would create it, or AdmissionRefused with its message."""
        return admit(configurations(webhook_docs), pod, operation="CREATE", namespace=namespace,
                     namespace_labels=namespace_labels, resource=POD_RESOURCE, kind=POD_KIND, resolve=self._resolve,
                     dry_run=dry_run)

    def admit_object(self, doc: Mapping[str, Any], operation: str, namespace: str,
                     namespace_labels: Mapping[str, str], webhook_docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The object as the webhooks whose rules select it admit it (Istio's validator for Istio's
        configuration); AdmissionRefused with the API server's message if one refuses it.

        In the API server's order (kubernetes/kubernetes staging/src/k8s.io/apiserver/pkg/endpoints/
        handlers/create.go): mutating webhooks, then a custom resource's CRD schema (422 Invalid;
        apiextensions-apiserver pkg/registry/customresource/validator.go), then validating webhooks,
        which never see an object its schema refuses."""
        group, version = split_api_version(str(doc.get("apiVersion", "")))
        kind = str(doc.get("kind", ""))
        # The plural the API server's resource names use for these kinds (virtualservices, ...).
        resource = (group, version, f"{kind.lower()}s")
        hooks = configurations(webhook_docs)
        phase = partial(admit, operation=operation, namespace=namespace, namespace_labels=namespace_labels,
                        resource=resource, kind=(group, version, kind), resolve=self._resolve)
        mutated = phase([h for h in hooks if h.kind == MUTATING], doc)
        checked = schema_set().check(mutated)  # None: no CRD here defines it, not a schema question
        if checked is not None and checked.causes:
            name = str(mutated.get("metadata", {}).get("name", ""))
            raise AdmissionRefused(invalid_message(kind, group, name, checked.causes))
        return phase([h for h in hooks if h.kind == VALIDATING], mutated)

    def _resolve(self, hook: Webhook) -> str:
        """The address of the istiod a webhook's Service names; a revision not running has none."""
        service = hook.service
        running = {istiod_name(rev): injector for rev, injector in self.injectors.items()}
        if service is None or service.namespace != ISTIO_NAMESPACE or service.port != SERVICE_PORT \
                or service.name not in running:
            where = f"{service.namespace}/{service.name}:{service.port}" if service else "no service"
            known = ", ".join(f"{name}.{ISTIO_NAMESPACE}:{SERVICE_PORT}" for name in running)
            raise ConformanceError(f"webhook {hook.name}: service {where} does not run in the local mesh "
                                   f"(only {known}, the local istiod)")
        host, port = running[service.name].address
        return f"https://{host}:{port}{service.path or '/'}"
