"""Who is at the other end of a request: the workloads and services of the mesh as istio_stats
learns them, from the mesh's own model (never from what a check expects).

In Istio a proxy knows itself from its node metadata (WORKLOAD_NAME, NAMESPACE, LABELS,
CLUSTER_ID) and its peer from metadata exchange, which only a peer with a proxy takes part in;
a client proxy also has the telemetry metadata istiod puts on each endpoint and on each cluster
(istio/istio 1.28.0 pilot/pkg/networking/util/util.go AppendLbEndpointMetadata,
pilot/pkg/networking/core/cluster_builder.go addTelemetryMetadata). Here the same facts come from
the mesh's pods and Services, looked up by the addresses an access log record names. A pod's
address is never given to another pod of the same mesh, so a record read after its pod is gone
still names it: the directory keeps every pod and Service it saw.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from conformance.targets.local.model import Pod, Service
from conformance.targets.local.xds.bootstrap import CLUSTER_ID

# The labels a workload's canonical service and revision are read from, in order (istio/istio
# 1.28.0 pkg/kube/labels/labels.go CanonicalService; the injection template gives every injected
# pod the same two labels, manifests/charts/istio-control/istio-discovery/files/injection-template.yaml).
CANONICAL_NAME_LABELS = ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
CANONICAL_REVISION_LABELS = ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")
DEFAULT_CANONICAL_REVISION = "latest"
# The labels istio_stats reads a workload's app and version from (istio/proxy 1.28.0
# extensions/common/metadata_object.h AppNameLabel, AppVersionLabel).
APP_LABEL = "app"
VERSION_LABEL = "version"


def _first_label(labels: Mapping[str, str], keys: Sequence[str]) -> str | None:
    return next((labels[key] for key in keys if key in labels), None)


@dataclass(frozen=True)
class WorkloadMetadata:
    """A pod as its proxy's node metadata describes it: `name` is its workload (the Deployment)."""

    name: str
    pod: Pod
    cluster: str = CLUSTER_ID

    @property
    def namespace(self) -> str:
        return self.pod.namespace

    @property
    def labels(self) -> Mapping[str, str]:
        return self.pod.labels

    @property
    def has_proxy(self) -> bool:
        return self.pod.proxy != "none"

    @property
    def app(self) -> str:
        return self.labels.get(APP_LABEL, "")

    @property
    def version(self) -> str:
        return self.labels.get(VERSION_LABEL, "")

    @property
    def canonical_service(self) -> str:
        return _first_label(self.labels, CANONICAL_NAME_LABELS) or self.name

    @property
    def canonical_revision(self) -> str:
        return _first_label(self.labels, CANONICAL_REVISION_LABELS) or DEFAULT_CANONICAL_REVISION


@dataclass(frozen=True)
class Peer:
    """What istio_stats knows of a peer (istio/proxy 1.28.0 extensions/common/metadata_object.h
    WorkloadMetadataObject): every field may be empty, and an empty one is reported unknown."""

    workload: str = ""
    namespace: str = ""
    cluster: str = ""
    canonical_service: str = ""
    canonical_revision: str = ""
    app: str = ""
    version: str = ""

    @staticmethod
    def exchanged(workload: WorkloadMetadata) -> "Peer":
        """Learnt by metadata exchange: the peer proxy's own node metadata."""
        return Peer(workload.name, workload.namespace, workload.cluster, workload.canonical_service,
                    workload.canonical_revision, workload.app, workload.version)

    @staticmethod
    def from_endpoint(workload: WorkloadMetadata) -> "Peer":
        """Learnt from the endpoint's telemetry metadata, `workload;namespace;canonical service;
        canonical revision;cluster` (util.go AppendLbEndpointMetadata, which leaves a "latest"
        revision out; metadata_object.cc convertEndpointMetadata): no app nor version."""
        revision = "" if workload.canonical_revision == DEFAULT_CANONICAL_REVISION else workload.canonical_revision
        return Peer(workload.name, workload.namespace, workload.cluster, workload.canonical_service, revision)


@dataclass
class Directory:
    """Every workload and Service the mesh ran, and the Services of each pod's ports."""

    by_ip: dict[str, WorkloadMetadata] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)  # fqdn -> Service
    # (namespace, pod) -> target port -> the Service istiod's inbound cluster of that port names first
    inbound: dict[tuple[str, str], dict[int, Service]] = field(default_factory=dict)

    def update(self, workloads: Iterable[WorkloadMetadata], services: Sequence[Service]) -> None:
        self.services.update((svc.fqdn, svc) for svc in services)
        for workload in workloads:
            self.by_ip[workload.pod.ip] = workload
            self.inbound[(workload.namespace, workload.pod.name)] = _inbound_services(workload.pod, services)

    def at(self, address: str) -> WorkloadMetadata | None:
        """The workload at `address` ("ip:port"), if a pod of the mesh had that ip."""
        return self.by_ip.get(address.rpartition(":")[0])

    def inbound_service(self, workload: WorkloadMetadata, port: int) -> Service | None:
        return self.inbound.get((workload.namespace, workload.pod.name), {}).get(port)


def _inbound_services(pod: Pod, services: Sequence[Service]) -> dict[int, Service]:
    """The first Service (in creation order) selecting the pod on each of its target ports: the one
    whose name istio_stats reports (istio/istio 1.28.0 pilot/pkg/networking/core/cluster.go
    buildInboundClustersFromServiceInstances: "the first one wins")."""
    first: dict[int, Service] = {}
    for svc in services:
        if svc.selects(pod):
            for port in svc.ports:
                first.setdefault(port.target_port, svc)
    return first
