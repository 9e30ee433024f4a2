"""The ingress gateway of a cluster: finding it, and binding the manifests' Gateways to it.

meshconf's Gateway manifests select the pods `istio=ingressgateway` and listen on 8080: the
ingress gateway of istioctl's profiles, whose Service maps its `http2` port 80 to targetPort 8080
(manifests/kind/ingress-nodeports.yaml keeps that shape on kind). Another install differs:
- istio.io "Install with Helm" (https://istio.io/latest/docs/setup/install/helm/) installs the
  gateway chart as release `istio-ingress` in namespace `istio-ingress`; the chart labels its pods
  `istio: <release name without "istio-">`, so `istio=ingress`
  (istio/istio manifests/charts/gateway/templates/_helpers.tpl, gateway.selectorLabels);
- the chart's Service maps `http2` port 80 to targetPort 80
  (istio/istio manifests/charts/gateway/values.yaml, service.ports).

A Gateway server binds to its port number as given when no port of the gateway's Service has
that number, and to that port's targetPort when one has (istio/istio pilot/pkg/model/gateway.go,
resolvePorts). So a Gateway that listens on the http2 targetPort is reached through the Service's
http2 port in both shapes: GatewayBinding.bind rewrites the manifests' Gateways to the selector and
targetPort of the gateway found, and is the only place that does. HTTPS servers likewise listen on the
`https` port's targetPort, so a port-forward to that pod port reaches them as the Service's https port
does (the gateway chart: 443 -> 443; istioctl's profiles: 443 -> 8443).
"""

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conformance.errors import ConformanceError, TargetUnavailable
from conformance.names import (GATEWAY_HTTP_PORT, GATEWAY_HTTPS_PORT, INGRESS_GATEWAY_LABEL, ISTIO_NAMESPACE,
                               ISTIO_NETWORKING_GROUP)
from conformance.targets.base import Doc

if TYPE_CHECKING:
    from conformance.targets.kube import Kube

# Where and by which pod label a gateway is looked for when none is named: istioctl's profiles
# (and meshconf's own install) in istio-system, and the istio.io Helm install in istio-ingress.
HELM_INGRESS_NAMESPACE = "istio-ingress"
KNOWN_NAMESPACES = (ISTIO_NAMESPACE, HELM_INGRESS_NAMESPACE)
KNOWN_SELECTORS = ("=".join(INGRESS_GATEWAY_LABEL), "istio=ingress")
# The Service ports both shapes name for plain HTTP and for HTTPS (istioctl's profiles: 443 -> 8443;
# the gateway chart: 443 -> 443).
HTTP_PORT_NAME = "http2"
HTTPS_PORT_NAME = "https"


@dataclass(frozen=True)
class GatewayBinding:
    """The pods Istio Gateways select, and the port their HTTP servers listen on."""

    selector: Mapping[str, str] = field(default_factory=lambda: dict([INGRESS_GATEWAY_LABEL]))
    port: int = GATEWAY_HTTP_PORT
    https_port: int = GATEWAY_HTTPS_PORT  # where HTTPS servers listen: the https targetPort

    @property
    def is_the_manifests(self) -> bool:
        return (dict(self.selector) == dict([INGRESS_GATEWAY_LABEL]) and self.port == GATEWAY_HTTP_PORT
                and self.https_port == GATEWAY_HTTPS_PORT)

    def bind(self, docs: Sequence[Doc]) -> list[Doc]:
        """The documents with every Istio Gateway that selects the manifests' gateway moved to this
        selector, and its servers on the manifests' port moved to this port; the rest as they are."""
        if self.is_the_manifests:
            return list(docs)
        return [self._bind_gateway(doc) if _selects_the_manifests_gateway(doc) else doc for doc in docs]

    def describe(self) -> str:
        """For the target's description: what the Gateways were changed to, and why."""
        return (f"Istio Gateways bound to the ingress gateway {_selector_text(self.selector)} on port {self.port}, "
                f"its Service's {HTTP_PORT_NAME} targetPort (the manifests say "
                f"{'='.join(INGRESS_GATEWAY_LABEL)} on port {GATEWAY_HTTP_PORT})")

    def _bind_gateway(self, doc: Doc) -> Doc:
        bound: dict[str, Any] = copy.deepcopy(dict(doc))
        bound["spec"]["selector"] = dict(self.selector)
        for server in bound["spec"].get("servers") or []:
            port = server.get("port") or {}
            if port.get("number") == GATEWAY_HTTP_PORT:
                port["number"] = self.port
            elif port.get("number") == GATEWAY_HTTPS_PORT:
                port["number"] = self.https_port
        return bound


@dataclass(frozen=True)
class IngressGateway:
    """An ingress gateway found on a cluster: its Service and what Gateways must say to use it."""

    namespace: str
    service: str
    selector: Mapping[str, str]
    port: int  # the Service's http2 port: what a LoadBalancer address answers on
    target_port: int  # the pods' port behind it: where Gateway servers must listen
    address: str | None  # the LoadBalancer's IP or host name, if it has one
    # The Service's https port and the pods' port behind it, when it has one with a numbered targetPort.
    https: tuple[int, int] | None = None

    @property
    def https_target_port(self) -> int | None:
        """The pods' port behind the Service's https port: where HTTPS servers listen, and what a
        port-forward for HTTPS goes to; None without an https port."""
        return self.https[1] if self.https else None

    @property
    def binding(self) -> GatewayBinding:
        https_port = self.https_target_port
        return GatewayBinding(dict(self.selector), self.target_port,
                              GATEWAY_HTTPS_PORT if https_port is None else https_port)

    @property
    def https_url(self) -> str | None:
        """The gateway's HTTPS URL through its LoadBalancer, if it has one and an https port."""
        if self.address is None or self.https is None:
            return None
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}:{self.https[0]}"

    @property
    def url(self) -> str | None:
        """The gateway's HTTP URL through its LoadBalancer, if it has one."""
        if self.address is None:
            return None
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


def parse_selector(text: str) -> dict[str, str]:
    """'istio=ingress' -> {'istio': 'ingress'}; one label, as --ingress-selector takes it."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip() or "," in text:
        raise ConformanceError(f"{text!r} is not a pod label like istio=ingress")
    return {key.strip(): value.strip()}


def find(kube: "Kube", namespace: str | None = None, selector: str | None = None) -> IngressGateway:
    """The one gateway Service that selects `selector`'s pods in `namespace`; each left out is
    looked for among the known ones. None, or more than one, is an error naming what was tried."""
    namespaces = (namespace,) if namespace else KNOWN_NAMESPACES
    selectors = (selector,) if selector else KNOWN_SELECTORS
    found: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    for where in namespaces:
        services = kube.list_objects("v1", "Service", where)
        for text in selectors:
            labels = parse_selector(text)
            found += [(where, labels, s) for s in services if _selects(s, labels)]
    tried = ", ".join(f"{text} in {where}" for where in namespaces for text in selectors)
    if not found:
        raise TargetUnavailable(
            f"no ingress gateway Service found (looked for a Service selecting {tried}); "
            "name it with --ingress-selector KEY=VALUE and --ingress-namespace NAME"
        )
    if len(found) > 1:
        names = ", ".join(f"{where}/{s['metadata']['name']} ({_selector_text(labels)})" for where, labels, s in found)
        raise ConformanceError(
            f"more than one ingress gateway Service found: {names}; "
            "choose one with --ingress-selector KEY=VALUE and --ingress-namespace NAME"
        )
    where, labels, service = found[0]
    return _gateway(where, labels, service)


def _selects(service: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    chosen = (service.get("spec") or {}).get("selector") or {}
    return all(chosen.get(k) == v for k, v in labels.items())


def _gateway(namespace: str, labels: dict[str, str], service: Mapping[str, Any]) -> IngressGateway:
    name = str(service["metadata"]["name"])
    ports = (service.get("spec") or {}).get("ports") or []
    http = next((p for p in ports if p.get("name") == HTTP_PORT_NAME), None)
    if http is None:
        named = ", ".join(str(p.get("name")) for p in ports) or "none"
        raise TargetUnavailable(f"Service {namespace}/{name} has no port named {HTTP_PORT_NAME} (ports: {named})")
    target = http.get("targetPort", http["port"])
    if not isinstance(target, int):
        raise TargetUnavailable(
            f"Service {namespace}/{name} port {HTTP_PORT_NAME} has the named targetPort {target!r}; "
            "meshconf needs a number to bind Gateways to"
        )
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    address = next((e.get("ip") or e.get("hostname") for e in ingress if e.get("ip") or e.get("hostname")), None)
    https = next((p for p in ports if p.get("name") == HTTPS_PORT_NAME), None)
    https_ports = None
    if https is not None and isinstance(https.get("targetPort", https["port"]), int):
        https_ports = (int(https["port"]), int(https.get("targetPort", https["port"])))
    return IngressGateway(namespace, name, labels, int(http["port"]), target, address, https_ports)


def _selects_the_manifests_gateway(doc: Doc) -> bool:
    return (doc.get("kind") == "Gateway" and str(doc.get("apiVersion", "")).startswith(f"{ISTIO_NETWORKING_GROUP}/")
            and dict((doc.get("spec") or {}).get("selector") or {}) == dict([INGRESS_GATEWAY_LABEL]))


def _selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())
