"""The Target protocol and the value types every target returns.

Suites talk only to a Target: never to kubernetes, kind, Envoy or subprocess.
"""

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

Doc = Mapping[str, Any]


@dataclass(frozen=True)
class TargetFacts:
    """What a report must say about where it ran."""

    target: str  # kind | kubeconfig | local
    mode: str  # e.g. "local reference mesh (Envoy sidecars, no Kubernetes)"
    mesh: str  # e.g. "istio" or "meshconf-local"
    mesh_version: str
    envoy_version: str
    kubernetes_version: str | None = None
    context: str | None = None


@dataclass(frozen=True)
class PodView:
    name: str
    namespace: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    containers: tuple[str, ...]
    init_containers: tuple[str, ...]
    ip: str
    ready: bool
    service_account: str
    # Being deleted (metadata.deletionTimestamp): a pod a rollout replaced may still run, and even be
    # Ready, for its grace period.
    terminating: bool = False


@dataclass(frozen=True)
class Reply:
    """One HTTP exchange as a client saw it; status 0 means no HTTP response."""

    status: int
    headers: Mapping[str, str]
    body: str  # an excerpt: enough to classify and to explain
    served_by: str | None = None  # the pod that served it, when the body says so
    error: str | None = None
    elapsed: float = 0.0
    # When the request started, in seconds since the epoch on the CLIENT's clock (the client pod's
    # on a cluster); None when the client does not say. conformance/load.py relates it to the harness's.
    started: float | None = None


@dataclass(frozen=True)
class Batch:
    url: str
    client: str
    replies: tuple[Reply, ...]
    request_headers: Mapping[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.replies)

    def __iter__(self) -> Iterator[Reply]:
        return iter(self.replies)

    def statuses(self) -> Counter[int]:
        return Counter(r.status for r in self.replies)

    def served_by(self) -> Counter[str]:
        return Counter(r.served_by or "<unknown>" for r in self.replies)

    def errors(self) -> Counter[str]:
        return Counter(r.error for r in self.replies if r.error)


@dataclass(frozen=True)
class HttpsIngress:
    """The ingress gateway's HTTPS address (the test host reaches it there), and the namespace of its
    pods, where a Gateway's credentialName must name a Secret: istiod reads it there."""

    url: str
    namespace: str


class RevisionHandle(Protocol):
    """A control plane revision installed for a block (Target.revision)."""

    @property
    def name(self) -> str: ...

    def remove(self) -> None:
        """Uninstall it now, before the block ends."""
        ...


@runtime_checkable
class Client(Protocol):
    """A client workload in the mesh; one send() is one batch (one exec on a cluster).

    Replies come back in request order; concurrency is the number of parallel
    keep-alive connections.
    """

    name: str
    namespace: str

    def send(
        self,
        url: str,
        count: int = 1,
        concurrency: int = 1,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        body: str | None = None,
    ) -> Batch: ...


@runtime_checkable
class Target(Protocol):
    name: str

    # lifecycle
    def up(self) -> None: ...
    def down(self) -> None: ...
    def facts(self) -> TargetFacts: ...
    def phases(self) -> Mapping[str, float]:
        """Wall seconds per bring-up/teardown phase, for reports and bench/."""
        ...

    # configuration
    def apply(self, docs: Sequence[Doc], namespace: str) -> None: ...
    def delete(self, docs: Sequence[Doc], namespace: str) -> None: ...
    def namespace(self, name: str, labels: Mapping[str, str]) -> AbstractContextManager[str]: ...
    def wait_ready(self, namespace: str, first_pull: bool = False) -> None:
        """Until every Deployment of the namespace has rolled out; `first_pull`: its pods pull images no
        pod of this run has used yet (e.g. another Istio's proxy), which gets the first deploy's budget."""
        ...
    def exists(self, doc: Doc, namespace: str) -> bool:
        """Whether the API server holds an object of doc's kind and name (in `namespace`)."""
        ...

    # admission
    def webhook_configurations(self) -> list[dict[str, Any]]:
        """The MutatingWebhookConfigurations and ValidatingWebhookConfigurations in force, as the
        API server stores them (istiod has patched its caBundle in)."""
        ...

    def admitted_pod(self, doc: Doc, namespace: str) -> PodView:
        """The Pod `doc` as admission makes it in `namespace`: a server-side dry run, so the
        webhooks are called and nothing is stored (they declare sideEffects None)."""
        ...

    def revision(self, name: str, version: str | None = None) -> AbstractContextManager["RevisionHandle"]:
        """A second Istio control plane, revision `name` of Istio `version` (None: the mesh's own),
        installed for the block and removed after it unless its handle's remove() did first; only
        where meshconf owns the mesh (supports("RevisionInjection"); another version: supports("MeshUpgrade"))."""
        ...

    def relabel_namespace(self, name: str, labels: Mapping[str, str | None]) -> None:
        """Set labels of a namespace this run created (None removes one), as `kubectl label` does."""
        ...

    def restart_workloads(self, namespace: str) -> list[str]:
        """Restart every Deployment of the namespace as `kubectl rollout restart` does, and return
        their names once every one has rolled out (supports("MeshUpgrade"))."""
        ...

    # observation
    def pods(self, namespace: str) -> list[PodView]: ...
    def proxy_stats(self, pod: str, namespace: str) -> str: ...
    def proxy_config(self, pod: str, namespace: str) -> dict[str, Any]: ...
    def logs(self, pod: str, namespace: str) -> str: ...
    def collect_debug(self, directory: Path) -> None: ...

    # telemetry
    def prometheus_query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query of the mesh's Prometheus (/api/v1/query): the result's series, each
        {"metric": {label: value}, "value": [time, "number"]}."""
        ...

    def prometheus_unavailable(self) -> str | None:
        """Why there is no Prometheus to query here and how to get one, or None when there is."""
        ...

    def kiali_graph(self, namespace: str, duration: int) -> dict[str, Any]:
        """Kiali's workload graph of a namespace over the last `duration` seconds:
        {"nodes": [...], "edges": [...]}."""
        ...

    # traffic
    def client(self, name: str, namespace: str) -> Client: ...
    def ingress_url(self) -> str: ...
    def https_ingress(self) -> HttpsIngress:
        """Where the ingress gateway terminates TLS; ConformanceError if it has no HTTPS port."""
        ...

    def outside_client(self) -> Client:
        """A client outside the mesh (the test host), for ingress and negative checks."""
        ...

    def gateway_api_url(self, gateway: str, namespace: str, port: int) -> AbstractContextManager[str]:
        """The URL of listener port `port` of the gateway Istio deploys for Gateway API Gateway
        `gateway`, held for the block; entered once the Gateway is Programmed and the gateway's
        Deployment ready (conformance/targets/gateway_api_ingress.py)."""
        ...

    def supports(self, feature: str) -> bool: ...


@runtime_checkable
class ExplainsSupport(Protocol):
    """A target that can say why it does not support a feature, and how to make it."""

    def unsupported_reason(self, feature: str) -> str | None: ...
