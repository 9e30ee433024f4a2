"""The port a gateway server listens on for an Istio Gateway's server port number."""

from conformance.targets.local.model import Pod
from conformance.targets.local.translator.index import MeshIndex


def listen_port(pod: Pod, number: int, index: MeshIndex) -> int:
    """The targetPort of the first Service port numbered `number` among the Services selecting the
    gateway pod, else the number itself (istio/istio 1.28.0 pilot/pkg/model/gateway.go resolvePorts,
    legacy selector: istioctl's ingress gateway Service maps 80 to 8080, so an Ingress's port-80
    server listens on 8080, and a server on 8080, which no Service port names, on 8080)."""
    for service in index.state.services:
        if not service.selects(pod):
            continue
        for port in service.ports:
            if port.port == number:
                return port.target_port
    return number
