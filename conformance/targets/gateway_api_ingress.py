"""The gateway Istio deploys for a Gateway API Gateway, and how a run reaches it.

For a Gateway of class `istio`, istiod's deployment controller creates a ServiceAccount, a
Deployment and a Service named `<gateway>-istio` in the Gateway's namespace, whose pods carry
the label `gateway.networking.k8s.io/gateway-name: <gateway>` (istio/istio 1.28.0
pilot/pkg/config/kube/gateway/deploymentcontroller.go and
manifests/charts/istio-control/istio-discovery/files/kube-gateway.yaml). The Service is a
LoadBalancer unless the Gateway's annotation `networking.istio.io/service-type` says otherwise;
istiod writes the Gateway's `Programmed` condition once that Service has an address
(pilot/pkg/config/kube/gateway/conversion.go setProgrammedCondition).

On a cluster the run reaches the gateway by a port-forward to one of its ready pods: that works
on any cluster, with or without a load-balancer controller or nodes reachable from the host.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from conformance.errors import ConformanceError
from conformance import features
from conformance.names import GATEWAY_API_GROUP, INGRESS_GATEWAY_LABEL
from conformance.targets.kube_views import rollout_gap
from conformance.settings import Timeouts
from conformance.waiting import wait_for

if TYPE_CHECKING:
    from conformance.targets.kube import Kube

GATEWAY_API_VERSION = f"{GATEWAY_API_GROUP}/v1"
GATEWAY_KIND = "Gateway"
# The GatewayClass istiod implements, with gateways it deploys (istio/istio pkg/config/constants).
ISTIO_GATEWAY_CLASS = "istio"
# Labels the deployment controller sets on what it creates; the first selects the gateway's pods.
GATEWAY_NAME_LABEL = f"{GATEWAY_API_GROUP}/gateway-name"
GATEWAY_CLASS_LABEL = f"{GATEWAY_API_GROUP}/gateway-class-name"
MANAGED_LABEL = "gateway.istio.io/managed"
MANAGED_BY_ISTIO = "istio.io-gateway-controller"
# The Gateway annotation choosing the Service's type (istio/istio pilot/pkg/config/kube/gateway
# deploymentcontroller.go; LoadBalancer without it for class istio).
SERVICE_TYPE_ANNOTATION = "networking.istio.io/service-type"
DEFAULT_SERVICE_TYPE = "LoadBalancer"
PROGRAMMED = "Programmed"


def managed_name(gateway: str) -> str:
    """The Deployment, Service and ServiceAccount istiod creates for Gateway `gateway`."""
    return f"{gateway}-istio"


def condition(doc: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (doc.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def programmed_gap(doc: Mapping[str, Any] | None, where: str) -> str | None:
    """Why the Gateway is not Programmed yet, as its status says; None once it is."""
    if doc is None:
        return f"Gateway {where} does not exist"
    cond = condition(doc, PROGRAMMED)
    if cond is None:
        return f"Gateway {where} has no {PROGRAMMED} condition (status: {dict(doc.get('status') or {})})"
    if cond.get("status") != "True":
        return (f"Gateway {where} {PROGRAMMED}={cond.get('status')} "
                f"({cond.get('reason') or 'no reason'}: {cond.get('message') or ''})")
    return None


def deployment_gap(doc: Mapping[str, Any] | None, where: str) -> str | None:
    """Why the gateway's Deployment is not rolled out (kube_views.rollout_gap); None once it is."""
    if doc is None:
        return f"Deployment {where} does not exist (no gateway deployed for the Gateway)"
    gap = rollout_gap(doc)
    return f"Deployment {gap}" if gap else None


@contextmanager
def reach_cluster_gateway(kube: "Kube", gateway: str, namespace: str, port: int,
                          timeouts: Timeouts) -> Iterator[str]:
    """The URL of the listener `port` of the gateway Istio deployed for `gateway`, held for the
    block: after the Gateway is Programmed and its Deployment ready, through a port-forward."""
    where = f"{namespace}/{gateway}"
    deployment = f"{namespace}/{managed_name(gateway)}"

    def pending() -> str | None:
        return (programmed_gap(kube.get(GATEWAY_API_VERSION, GATEWAY_KIND, gateway, namespace), where)
                or deployment_gap(kube.get("apps/v1", "Deployment", managed_name(gateway), namespace), deployment))

    wait_for(pending, timeouts.rollout, timeouts.poll, f"gateway for Gateway {where}")
    pods = kube.ready_pods(namespace, {GATEWAY_NAME_LABEL: gateway})
    if not pods:
        raise ConformanceError(f"Gateway {where}: Deployment {deployment} is ready but no pod labelled "
                               f"{GATEWAY_NAME_LABEL}={gateway} is")
    with kube.port_forward(pods[0].name, namespace, port) as (host, local_port):
        yield f"http://{host}:{local_port}"


# Kubernetes Ingress, which istiod serves on the gateway meshConfig.ingressSelector names: by
# default the pods labelled istio=ingressgateway (istio/istio 1.28.0 pilot/pkg/config/kube/ingress/
# gateways.go getIngressGatewaySelector; pkg/config/mesh/mesh.go leaves ingressSelector unset).
KUBERNETES_INGRESS_FEATURE = features.get("KubernetesIngress").name  # fails at import if renamed there


def ingress_gap(gateway_selector: Mapping[str, str]) -> str | None:
    """Why Ingress cannot be checked through the ingress gateway found, or None."""
    if dict(gateway_selector) == dict([INGRESS_GATEWAY_LABEL]):
        return None
    found = ", ".join(f"{k}={v}" for k, v in gateway_selector.items())
    return (f"istiod serves Kubernetes Ingress on the gateway meshConfig.ingressSelector names, "
            f"{'='.join(INGRESS_GATEWAY_LABEL)} by default; this cluster's ingress gateway is {found} "
            f"(choose one labelled {'='.join(INGRESS_GATEWAY_LABEL)} with --ingress-selector)")
