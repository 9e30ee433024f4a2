"""The API server's part of admission in the local mesh: the webhook configurations applied to the
mesh, the istiod they name (the local injector, on the mesh's own address), and each new pod sent
through them before it runs."""

from collections.abc import Mapping, Sequence
from typing import Any

from conformance.errors import ConformanceError
from conformance.names import ISTIO_NAMESPACE
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
    """Runs the local injector and admits pods through the webhooks the mesh holds."""

    def __init__(self, ca: MeshCA, host: str, mutants: frozenset[str] = frozenset()) -> None:
        self._ca = ca
        self.injector = Injector(ca, host, WEBHOOK_PORT, mutants=mutants)
        self.injector.start()

    def stop(self) -> None:
        self.injector.stop()

    def admit_pod(self, pod: Mapping[str, Any], namespace: str, namespace_labels: Mapping[str, str],
                  webhook_docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The pod as the API server would create it, or AdmissionRefused with its message."""
        # istiod patches its root into its own webhooks' caBundle (istio/istio pkg/webhooks/webhookpatch.go).
        hooks = [h if h.ca_bundle else h.with_ca_bundle(self._ca.root_pem) for h in configurations(webhook_docs)]
        return admit(hooks, pod, operation="CREATE", namespace=namespace, namespace_labels=namespace_labels,
                     resource=POD_RESOURCE, kind=POD_KIND, resolve=self._resolve)

    def _resolve(self, hook: Webhook) -> str:
        service = hook.service
        if service is None or (service.namespace, service.name, service.port) != ISTIOD:
            where = f"{service.namespace}/{service.name}:{service.port}" if service else "no service"
            raise ConformanceError(f"webhook {hook.name}: service {where} does not run in the local mesh "
                                   f"(only {ISTIOD[1]}.{ISTIOD[0]}:{ISTIOD[2]}, the local istiod)")
        host, port = self.injector.address
        return f"https://{host}:{port}{service.path or '/'}"
