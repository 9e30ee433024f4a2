"""The feature catalogue: every suite test names exactly one feature from here."""

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from conformance.errors import ConformanceError


class Level(StrEnum):
    CORE = "core"
    EXTENDED = "extended"


PROFILES = (
    "MESH-INJECTION",
    "MESH-TRAFFIC",
    "MESH-RESILIENCE",
    "MESH-SECURITY",
    "MESH-INGRESS",
    "MESH-TELEMETRY",
)


@dataclass(frozen=True)
class Feature:
    name: str
    profile: str
    level: Level
    description: str
    # What its test covers, in a few words: the title after the feature's name in reports
    # ("WeightedSplit: 80/20, 50/50, 50/30/20").
    covers: str


CATALOGUE: tuple[Feature, ...] = (
    Feature(
        "SidecarInjection",
        "MESH-INJECTION",
        Level.CORE,
        "Istio's injection policy: namespace labels x pod labels and annotations, 14 cases; an injected "
        "pod's requests go through its sidecar, an uninjected pod's do not.",
        "14 namespace x pod label cases, requests through the sidecar or around it",
    ),
    Feature(
        "ValidationWebhook",
        "MESH-INJECTION",
        Level.CORE,
        "Six invalid Istio resources (Istio's own validation rules) are refused at apply by Istio's "
        "webhook, naming the problem, and not stored; one the CRD schema refuses is refused by it "
        "first; a valid one is accepted.",
        "6 invalid resources refused by the webhook, 1 by the CRD schema, a valid one accepted",
    ),
    Feature(
        "RevisionInjection",
        "MESH-INJECTION",
        Level.EXTENDED,
        "With a second revision (canary) installed, istio.io/rev on the namespace or the pod selects that "
        "revision's injector (the namespace's before the pod's, istio-injection=enabled before both), and the "
        "injected proxy reports the canary's istiod; a default-revision namespace stays with the default.",
        "istio.io/rev on namespace or pod selects the canary injector",
    ),
    Feature(
        "WebhookConfiguration",
        "MESH-INJECTION",
        Level.EXTENDED,
        "Istio's webhooks as installed: a CA in each caBundle, failurePolicy Fail, selectors implementing "
        "the injection policy (11 label cases); a dry-run pod is injected in a plain namespace, not in "
        "kube-system.",
        "caBundle, failurePolicy Fail, 11 selector cases, a dry-run pod",
    ),
    Feature(
        "MutualTLSStrict",
        "MESH-SECURITY",
        Level.CORE,
        "PeerAuthentication STRICT, namespace-wide and then mesh-wide: the legacy client (no sidecar) gets no "
        "answer from httpbin, the injected curl gets 200 and httpbin sees its SPIFFE identity in "
        "X-Forwarded-Client-Cert (URI=.../sa/curl, By=.../sa/httpbin); httpbin's proxy counted the refusals.",
        "STRICT namespace-wide then mesh-wide: legacy refused, client identity in XFCC",
    ),
    Feature(
        "MutualTLSPermissive",
        "MESH-SECURITY",
        Level.CORE,
        "PeerAuthentication PERMISSIVE: both clients get 200; only the injected one's identity reaches httpbin.",
        "PERMISSIVE: plaintext and mutual TLS both answered",
    ),
    Feature(
        "MutualTLSMigration",
        "MESH-SECURITY",
        Level.EXTENDED,
        "PERMISSIVE to STRICT under continuous traffic from the injected client: none of its requests fails; "
        "the legacy client is refused once STRICT holds.",
        "PERMISSIVE to STRICT under load, no request failed",
    ),
    Feature(
        "PortLevelMTLS",
        "MESH-SECURITY",
        Level.EXTENDED,
        "A port-level DISABLE under a STRICT namespace answers plaintext; a port-level STRICT under a "
        "PERMISSIVE namespace refuses it.",
        "port DISABLE under STRICT, port STRICT under PERMISSIVE",
    ),
    Feature(
        "DestinationRuleTLS",
        "MESH-SECURITY",
        Level.EXTENDED,
        "Toward a STRICT httpbin, a DestinationRule with tls mode DISABLE fails every request; ISTIO_MUTUAL "
        "succeeds with the client's identity.",
        "DISABLE and ISTIO_MUTUAL toward STRICT, ISTIO_MUTUAL toward DISABLE",
    ),
    Feature(
        "AuthorizationPolicy",
        "MESH-SECURITY",
        Level.EXTENDED,
        "ALLOW by principal (only curl may GET /headers), DENY by path, namespace-wide deny-all and "
        "allow-nothing: denied requests get 403 'RBAC: access denied', allowed ones 200, every request decided.",
        "ALLOW by principal, DENY by path, deny-all, allow-nothing",
    ),
    Feature(
        "CircuitBreaking",
        "MESH-RESILIENCE",
        Level.CORE,
        "A DestinationRule with Istio's task limits (1 connection, 1 pending request) on httpbin: a concurrent "
        "load gets 503s marked x-envoy-overloaded, exactly as many as the client proxy's "
        "upstream_rq_pending_overflow counted; the same load without it gets none; one request at a time "
        "succeeds afterwards.",
        "1 connection, 1 pending: overflow 503s as counted",
    ),
    Feature(
        "OutlierDetection",
        "MESH-RESILIENCE",
        Level.EXTENDED,
        "A Service with a healthy endpoint and one answering 503: with outlierDetection the failing one is "
        "ejected (ejections_enforced_total) and every request then succeeds until the ejection ends.",
        "a 503 endpoint ejected, then every request succeeds",
    ),
    Feature(
        "Retries",
        "MESH-RESILIENCE",
        Level.EXTENDED,
        "In front of an upstream failing half its requests, retries (attempts 2, 5xx) give a success share "
        "decided against 1 - 0.5^3 and attempts 0 one decided against 0.5; upstream_rq_retry equals the "
        "extra attempts the upstream received.",
        "attempts 2 and 0 against an upstream failing half its requests",
    ),
    Feature(
        "StandardMetrics",
        "MESH-TELEMETRY",
        Level.CORE,
        "After N requests from curl to reviews v2 and N through productpage, Prometheus holds "
        "istio_requests_total with Istio's labels (reporter source and destination, workloads, version, "
        "service, response code, connection security policy), increased by exactly N per edge (2N for "
        "reviews to ratings), and istio_request_duration_milliseconds alike; the time they took to appear "
        "is reported.",
        "istio_requests_total and request duration, N per edge",
    ),
    Feature(
        "ProxyStats",
        "MESH-TELEMETRY",
        Level.CORE,
        "Under an 80/20 reviews split, the client proxy's upstream_rq_2xx of each subset cluster increases by "
        "exactly the replies the client saw from that version.",
        "80/20: upstream_rq_2xx per subset as the client saw",
    ),
    Feature(
        "ServiceGraph",
        "MESH-TELEMETRY",
        Level.EXTENDED,
        "Kiali's graph of the Bookinfo namespace shows the edges productpage to reviews v1, v2 and v3 and "
        "reviews to ratings for the traffic sent.",
        "Kiali edges productpage to reviews v1, v2, v3 and reviews to ratings",
    ),
    Feature(
        "IngressGateway",
        "MESH-INGRESS",
        Level.CORE,
        "An Istio Gateway + VirtualService expose /productpage; a host no Gateway serves gets 404.",
        "/productpage through an Istio Gateway, an unserved host 404",
    ),
    Feature(
        "IngressTLS",
        "MESH-INGRESS",
        Level.CORE,
        "HTTPS at the edge (tls mode SIMPLE, credentialName): the client verifies the chain of a test CA and "
        "the SNI; a host the Gateway does not serve gets no certificate for it; httpsRedirect answers 301.",
        "SIMPLE TLS by SNI, an unserved host, httpsRedirect 301",
    ),
    Feature(
        "GatewayAPIIngress",
        "MESH-INGRESS",
        Level.CORE,
        "Bookinfo's /productpage through a Gateway API Gateway (gatewayClassName istio, deployed by Istio) and "
        "an HTTPRoute; an unrouted host gets 404; status and latency p50/p95 reported.",
        "/productpage through a Gateway API Gateway, an unrouted host 404",
    ),
    Feature(
        "KubernetesIngress",
        "MESH-INGRESS",
        Level.EXTENDED,
        "The same page through a Kubernetes Ingress with ingressClassName istio; status and latency p50/p95 "
        "reported beside the Istio Gateway's.",
        "/productpage through an Ingress of class istio",
    ),
    Feature(
        "RouteToVersion",
        "MESH-TRAFFIC",
        Level.CORE,
        "A VirtualService routing reviews to one subset sends every request there (v1, then v3).",
        "all to v1, then to v3",
    ),
    Feature(
        "WeightedSplit",
        "MESH-TRAFFIC",
        Level.CORE,
        "Weighted reviews routes (80/20 v1/v2, 50/50 v1/v3, 50/30/20) hold, decided by a stated-error test.",
        "80/20, 50/50, 50/30/20",
    ),
    Feature(
        "HeaderMatchRouting",
        "MESH-TRAFFIC",
        Level.CORE,
        "end-user: jason goes to reviews v2, everyone else to v1 (via productpage login and direct).",
        "end-user jason to v2, everyone else to v1",
    ),
    Feature(
        "CanaryProgression",
        "MESH-TRAFFIC",
        Level.EXTENDED,
        "Shifting reviews v1 to v3 in steps 100/0, 90/10, 50/50, 0/100: each step converges and holds.",
        "100/0, 90/10, 50/50, 0/100",
    ),
    Feature(
        "FaultInjection",
        "MESH-TRAFFIC",
        Level.EXTENDED,
        "An abort (500 for jason on ratings) and a partial delay (share decided, delay measured).",
        "an abort for jason, a partial delay",
    ),
    Feature(
        "RequestTimeout",
        "MESH-TRAFFIC",
        Level.EXTENDED,
        "A route timeout shorter than the upstream's delay gives 504 within the timeout plus a margin.",
        "a route timeout answers 504 in time",
    ),
    Feature(
        "MeshHTTPRouteWeights",
        "MESH-TRAFFIC",
        Level.EXTENDED,
        "An 80/20 split as a Gateway API HTTPRoute whose parent is the reviews Service (GAMMA).",
        "80/20 by an HTTPRoute on the reviews Service (GAMMA)",
    ),
    Feature(
        "ConfigChangeUnderLoad",
        "MESH-TRAFFIC",
        Level.CORE,
        "A new subset and a route to it applied together under continuous load give no 5xx: the harness applies "
        "make-before-break (DestinationRule before the VirtualService; the reverse when removing).",
        "a new subset and its route under load, no failed request",
    ),
    Feature(
        "BlueGreen",
        "MESH-TRAFFIC",
        Level.EXTENDED,
        "reviews switched from blue (v1) to green (v3) in one VirtualService change under continuous load: no "
        "failed request, every request before the switch answered by blue, every one after convergence by "
        "green; the switch time measured.",
        "v1 to v3 in one change under load",
    ),
    Feature(
        "MeshUpgrade",
        "MESH-TRAFFIC",
        Level.EXTENDED,
        "A canary upgrade under continuous load: workloads injected by the old Istio's revision move to the mesh's "
        "own (namespace istio.io/rev, rolling restart) and the old revision is removed; no request fails, every "
        "proxy ends on the new istiod and Istio version, each step timed (clusters where meshconf installs Istio).",
        "a canary upgrade by revision under load",
    ),
)

BY_NAME: dict[str, Feature] = {f.name: f for f in CATALOGUE}


def get(name: str) -> Feature:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ConformanceError(f"unknown feature {name!r}; known: {', '.join(sorted(BY_NAME))}") from None


def in_catalogue_order(names: Iterable[str]) -> list[Feature]:
    """The named features, in the catalogue's order (reports and summaries list them so)."""
    wanted = set(names)
    return [f for f in CATALOGUE if f.name in wanted]


def select(profiles: list[str], features: list[str]) -> list[Feature]:
    """The features a run covers: the union of the named profiles and features, or all."""
    for p in profiles:
        if p not in PROFILES:
            raise ConformanceError(f"unknown profile {p!r}; known: {', '.join(PROFILES)}")
    for f in features:
        get(f)
    if not profiles and not features:
        return list(CATALOGUE)
    return [f for f in CATALOGUE if f.profile in profiles or f.name in features]
