"""The local mesh's mutants: each one named deviation from Istio, to prove a check can fail."""

from conformance.errors import ConformanceError

SWAP_SUBSETS = "swap-subsets"
IGNORE_WEIGHTS = "ignore-weights"
IGNORE_HEADER_MATCH = "ignore-header-match"
NO_FAULT_INJECTION = "no-fault-injection"
NO_TIMEOUTS = "no-timeouts"
NO_INJECTION = "no-injection"
INJECT_OPTED_OUT = "inject-opted-out"
VALIDATION_OFF = "validation-off"
WEBHOOK_FAIL_OPEN = "webhook-fail-open"
REVISION_IGNORED = "revision-ignored"
STRICT_AS_PERMISSIVE = "strict-as-permissive"
NO_PEER_VERIFICATION = "no-peer-verification"
SHARED_IDENTITY = "shared-identity"
AUTHZ_IGNORED = "authz-ignored"
NO_CIRCUIT_BREAKER = "no-circuit-breaker"
NO_OUTLIER_DETECTION = "no-outlier-detection"
NO_RETRIES = "no-retries"
METRICS_SWAPPED_LABELS = "metrics-swapped-labels"
METRICS_UNDERCOUNT = "metrics-undercount"
GATEWAY_API_IGNORED = "gateway-api-ignored"
SWITCH_DROPS_REQUESTS = "switch-drops-requests"
GATEWAY_IGNORES_SNI = "gateway-ignores-sni"
# The one identity (namespace, service account) every workload gets under SHARED_IDENTITY.
SHARED_ACCOUNT = ("default", "default")

KNOWN_MUTANTS: dict[str, str] = {
    SWAP_SUBSETS: "a route to a subset goes to the next subset of its DestinationRule "
    "(v1->v2, v2->v3, v3->v1)",
    IGNORE_WEIGHTS: "weighted destinations (VirtualService and HTTPRoute) all get equal weight, "
    "zero weights included",
    IGNORE_HEADER_MATCH: "header conditions of VirtualService and HTTPRoute matches are dropped "
    "(a match with only headers matches every request)",
    NO_FAULT_INJECTION: "VirtualService faults (abort, delay) are not configured",
    NO_TIMEOUTS: "route timeouts (VirtualService timeout, HTTPRoute timeouts.request) are not "
    "configured: no timeout, as by Istio's default",
    NO_INJECTION: "the sidecar injector never patches a pod: every pod runs without a sidecar",
    INJECT_OPTED_OUT: "the sidecar injector ignores sidecar.istio.io/inject=false on the pods it is "
    "asked about (the webhooks' selectors still see the label)",
    VALIDATION_OFF: "Istio's validation webhook accepts every configuration",
    WEBHOOK_FAIL_OPEN: "the sidecar injector's webhooks have failurePolicy Ignore: a pod is created "
    "without its sidecar whenever the injector is down",
    REVISION_IGNORED: "a second revision's injector webhooks call the default revision's istiod",
    STRICT_AS_PERMISSIVE: "a port whose PeerAuthentication mode is STRICT is served as PERMISSIVE: "
    "plaintext is accepted too",
    NO_PEER_VERIFICATION: "a sidecar's mutual-TLS chains (STRICT and PERMISSIVE ports) ask for no client "
    "certificate and verify none: any TLS client is accepted, and no client identity is seen",
    SHARED_IDENTITY: "every workload's certificate carries one identity, "
    "spiffe://cluster.local/ns/default/sa/default, whatever its service account, and clients accept it "
    "from every server",
    AUTHZ_IGNORED: "AuthorizationPolicies are not configured: sidecars get no RBAC filter, every request is allowed",
    NO_CIRCUIT_BREAKER: "DestinationRule connectionPool settings are ignored: every cluster keeps Istio's default "
    "circuit breakers (no limit) and connection reuse",
    NO_OUTLIER_DETECTION: "DestinationRule outlierDetection is ignored: no endpoint is ever ejected",
    NO_RETRIES: "VirtualService retries are ignored: every route keeps Istio's default retry policy "
    "(connection failures only, twice), attempts 0 included",
    METRICS_SWAPPED_LABELS: "Istio's request metrics give every source_* label the destination_* value and "
    "the reverse (workload, namespace, principal, app, version, canonical service and revision, cluster)",
    METRICS_UNDERCOUNT: "Istio's request metrics leave one request in every ten uncounted, on every proxy",
    GATEWAY_API_IGNORED: "Gateway API Gateways get no listeners: the gateway Istio deploys for one runs and is "
    "Programmed, but nothing listens on its listener ports",
    SWITCH_DROPS_REQUESTS: "a change of mesh configuration kills the Envoys whose resources it changed and starts "
    "them again (restarts.py), instead of updating them in place",
    GATEWAY_IGNORES_SNI: "the ingress gateway's first HTTPS server matches any SNI: a name no server has gets "
    "its certificate instead of a closed connection",
}


def check_mutants(mutants: frozenset[str]) -> None:
    """Refuse a mutant name the translator does not know: a typo must not run the correct mesh."""
    unknown = sorted(mutants - KNOWN_MUTANTS.keys())
    if unknown:
        raise ConformanceError(
            f"unknown local mutant(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_MUTANTS))}"
        )
