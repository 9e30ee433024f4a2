"""Names the harness and the mesh agree on, each defined once."""

# Every namespace a run creates carries this label with the run's id; teardown and the
# debug bundle select by it, and nothing without it is ever deleted.
RUN_ID_LABEL = "meshconf.dev/run-id"

# Istio's control-plane namespace: istiod, the ingress gateway and the telemetry addons.
ISTIO_NAMESPACE = "istio-system"

# The sidecar container Istio injects into every meshed pod (the local mesh reports the same).
PROXY_CONTAINER = "istio-proxy"

# The ingress gateway of Istio's demo profile, which meshconf's Helm install and the local mesh
# reproduce: the name of its Deployment, Service (and Helm release), and the container port its
# HTTP servers listen on (the Service maps port 80 onto it, which is why Gateways say 8080).
INGRESS_GATEWAY = "istio-ingressgateway"
GATEWAY_HTTP_PORT = 8080
# ... and the container port its HTTPS servers listen on (its Service maps port 443 onto it).
GATEWAY_HTTPS_PORT = 8443
# The pod label of that gateway, which the manifests' Gateways select (istio=ingressgateway).
INGRESS_GATEWAY_LABEL = ("istio", "ingressgateway")

# The reserved gateway name that binds a VirtualService to every sidecar; a VirtualService
# without `gateways` has it alone (istio/istio pkg/config/constants/constants.go IstioMeshGateway).
MESH_GATEWAY = "mesh"

# The API groups of the configuration meshconf applies: Istio's networking kinds (VirtualService,
# DestinationRule, Gateway) and the Gateway API's (HTTPRoute and the CRDs it comes with).
ISTIO_NETWORKING_GROUP = "networking.istio.io"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
# What Istio's injector writes on every pod it injects (istio/istio pkg/kube/inject/inject.go).
SIDECAR_STATUS_ANNOTATION = "sidecar.istio.io/status"
# How the API server words a denial by Istio's validation webhook (istio/istio
# pkg/webhooks/validation/server/server.go; kubernetes/kubernetes staging/src/k8s.io/apiserver/
# pkg/admission/plugin/webhook/errors/statuserror.go).
ISTIO_VALIDATION_DENIED = 'admission webhook "validation.istio.io" denied the request'

# The namespace label that turns the default revision's injection on or off ("enabled",
# "disabled"), and the pod label (or annotation) that opts a pod in or out (istio.io docs
# setup/additional-setup/sidecar-injection).
INJECTION_LABEL = "istio-injection"
INJECT = "sidecar.istio.io/inject"
# Istio's revision key: a namespace or pod label choosing the revision whose injector handles the
# pod, and the annotation that injector writes on the pods it injects (istio/istio
# manifests/charts/istio-control/istio-discovery/files/injection-template.yaml).
ISTIO_REV = "istio.io/rev"
# The revision istiod installs without one; its istiod is plain "istiod".
DEFAULT_REVISION = "default"
# The second revision meshconf installs for RevisionInjection (istio.io docs/setup/upgrade/canary).
CANARY_REVISION = "canary"
# istiod's xDS port (and the address pilot-agent connects to: ProxyConfig.discoveryAddress).
ISTIOD_XDS_PORT = 15012


def istiod_name(revision: str) -> str:
    """The istiod Deployment and Service of a revision (istio/istio manifests/charts/
    istio-control/istio-discovery: istiod, or istiod-<revision>)."""
    return "istiod" if revision == DEFAULT_REVISION else f"istiod-{revision}"


def discovery_address(revision: str) -> str:
    """Where a proxy injected by `revision` gets its configuration (the chart's
    meshConfig.defaultConfig.discoveryAddress, templates/configmap.yaml)."""
    return f"{istiod_name(revision)}.{ISTIO_NAMESPACE}.svc:{ISTIOD_XDS_PORT}"


# Istio's trust domain defaults to the cluster's DNS domain (istio/istio pilot/cmd/pilot-agent/
# options/options.go TRUST_DOMAIN).
TRUST_DOMAIN = "cluster.local"


# What begins every workload identity, a SPIFFE URI (istio/istio pkg/spiffe/spiffe.go URIPrefix).
SPIFFE_PREFIX = "spiffe://"


def spiffe_id(namespace: str, service_account: str) -> str:
    """A workload's identity, as Istio writes it (istio/istio pkg/spiffe/spiffe.go)."""
    return f"{SPIFFE_PREFIX}{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"

# The label the injector gives a pod whose sidecar takes Istio's mutual TLS (the injection
# template); istiod reads it to mark the pod's endpoints (istio/api label security.istio.io/tlsMode;
# istio/istio pilot/pkg/model/service.go IstioMutualTLSModeLabel).
TLS_MODE_LABEL = "security.istio.io/tlsMode"
TLS_MODE_ISTIO = "istio"

# pilot-agent's status port (ProxyConfig statusPort): it serves the pod's merged metrics there.
STATUS_PORT = 15020
# The annotations Istio's injection points Prometheus with (pkg/kube/inject/webhook.go
# applyPrometheusMerge); Istio's samples/addons Prometheus scrapes the pods that carry them.
PROMETHEUS_SCRAPE = "prometheus.io/scrape"
PROMETHEUS_PORT = "prometheus.io/port"
PROMETHEUS_PATH = "prometheus.io/path"
# Where pilot-agent serves the merged metrics, and Envoy's admin its own, in Prometheus's format.
STATS_PATH = "/stats/prometheus"
