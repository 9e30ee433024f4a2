"""The API server's part of admission in the local mesh: the webhook configurations applied to the
mesh, the istiod they name (the local injector and validator, on the mesh's own address), each
new pod sent through them before it runs, and each object before it is stored."""

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from conformance.errors import ConformanceError
from conformance.names import ISTIO_NAMESPACE
from conformance.targets.local.admission import validator
from conformance.targets.local.admission.injector import Injector
from conformance.targets.local.admission.review import admit
from conformance.targets.local.admission.webhooks import Webhook, configurations
from conformance.targets.local.xds.secrets import MeshCA

# istiod's webhook port (the istiod Service maps 443 to it: istio/istio
# manifests/charts/istio-control/istio-discovery/templates/service.yaml, https-webhook).
WEBHOOK_PORT = 15017
ISTIOD = (ISTIO_NAMESPACE, "istiod", 443)  # the Service Istio's webhooks name: namespace, name, port
POD_RESOURCE = ("", "v1", "pods")
POD_KIND = ("", "v1", "Pod")


class AdmissionControl:
    """Runs the local istiod's webhooks and admits pods and objects through the webhooks the mesh holds."""

    def __init__(self, ca: MeshCA, host: str, mutants: frozenset[str] = frozenset()) -> None:
        self._ca = ca
        self.injector = Injector(ca, host, WEBHOOK_PORT, mutants=mutants)
        # istiod serves validation on its webhook port too.
        self.injector.serve(validator.VALIDATE_PATH, partial(validator.review_response, mutants=mutants))
        self.injector.start()

    def stop(self) -> None:
        self.injector.stop()

    def admit_pod(self, pod: Mapping[str, Any], namespace: str, namespace_labels: Mapping[str, str],
                  webhook_docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The pod as the API server would create it, or AdmissionRefused with its message."""
        return admit(self._hooks(webhook_docs), pod, operation="CREATE", namespace=namespace,
                     namespace_labels=namespace_labels, resource=POD_RESOURCE, kind=POD_KIND, resolve=self._resolve)

    def admit_object(self, doc: Mapping[str, Any], operation: str, namespace: str,
                     namespace_labels: Mapping[str, str], webhook_docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The object as the webhooks whose rules select it admit it (Istio's validator for Istio's
        configuration); AdmissionRefused with the API server's message if one refuses it."""
        group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
        kind = str(doc.get("kind", ""))
        # The plural the API server's resource names use for these kinds (virtualservices, ...).
        resource = (group, version, f"{kind.lower()}s")
        return admit(self._hooks(webhook_docs), doc, operation=operation, namespace=namespace,
                     namespace_labels=namespace_labels, resource=resource, kind=(group, version, kind),
                     resolve=self._resolve)

    def _hooks(self, webhook_docs: Sequence[Mapping[str, Any]]) -> list[Webhook]:
        # istiod patches its root into its own webhooks' caBundle (istio/istio pkg/webhooks/webhookpatch.go).
        return [h if h.ca_bundle else h.with_ca_bundle(self._ca.root_pem) for h in configurations(webhook_docs)]

    def _resolve(self, hook: Webhook) -> str:
        service = hook.service
        if service is None or (service.namespace, service.name, service.port) != ISTIOD:
            where = f"{service.namespace}/{service.name}:{service.port}" if service else "no service"
            raise ConformanceError(f"webhook {hook.name}: service {where} does not run in the local mesh "
                                   f"(only {ISTIOD[1]}.{ISTIOD[0]}:{ISTIOD[2]}, the local istiod)")
        host, port = self.injector.address
        return f"https://{host}:{port}{service.path or '/'}"
