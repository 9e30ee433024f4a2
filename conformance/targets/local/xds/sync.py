"""What the control plane knows of one proxy: the resources it should have, what it was sent,
and what its Envoy ACKed or NACKed. Pure bookkeeping: the server drives it, under its lock.

State of the world: each response carries every resource of its type that the proxy is to
have (for the types Envoy subscribes to by name, every one it asked for). A proxy's state is
then one version per type, which is what an ACK names and what proxy-status shows; the cost,
resending a type's unchanged resources, falls only on proxies whose resources of that type
changed. Envoy takes an unchanged listener or cluster as a no-op, so nothing drains. (istiod
serves both this and the incremental protocol, which Istio's recent bootstraps choose; per
resource it would save resending a type's unchanged resources, which costs little here.)
"""

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2, wrappers_pb2

from conformance.targets.local.translator.resources import CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE
from conformance.targets.local.xds.protos import BY_NAME, PUSH_ORDER, SHORT_NAMES

SYNCED = "SYNCED"
STALE = "STALE"
NACK = "NACK"
NOT_SENT = "NOT SENT"

_nonces = itertools.count(1)


@dataclass(frozen=True)
class Resource:
    key: str  # canonical JSON: equal keys, equal resources
    message: any_pb2.Any


@dataclass(frozen=True)
class Response:
    type_url: str
    version: str
    nonce: str
    resources: tuple[any_pb2.Any, ...]


@dataclass
class TypeSync:
    """One resource type of one proxy."""

    resources: dict[str, Resource] = field(default_factory=dict)
    names: frozenset[str] = frozenset()  # of `resources`
    version: int = 0  # of `resources`; moves when they change
    requested: bool = False  # Envoy has subscribed to this type on its stream
    subscribed: frozenset[str] = frozenset()  # the names it asked for (BY_NAME types)
    sent_version: str = ""
    sent_nonce: str = ""
    sent_names: frozenset[str] = frozenset()
    acked_version: str = ""
    acked_names: frozenset[str] = frozenset()
    nack: str | None = None  # Envoy's reason for refusing the last response, if it did
    nack_version: int = 0  # the version it refused

    def wanted(self, type_url: str) -> frozenset[str]:
        """The names Envoy must hold for this type to be in sync: of the wildcard types every
        one; of the others those Envoy asked for, since a listener or cluster it refused asks
        for none. Envoy asks for a new listener's routes (a cluster's endpoints) before it ACKs
        the listeners (clusters): it holds those requests back while it takes the update
        (envoyproxy/envoy LdsApiImpl::onConfigUpdate, CdsApiHelper::onConfigUpdate: ScopedResume).
        Every route name asked for is answered, held or not (see empty_route)."""
        if type_url == ROUTE_TYPE:
            return self.subscribed
        return self.subscribed & self.names if type_url in BY_NAME else self.names

    def missing(self, type_url: str) -> frozenset[str]:
        """Names Envoy asked for that the control plane does not hold: what uses them waits
        (a listener whose certificate is missing stays warming)."""
        return self.subscribed - self.names if type_url in BY_NAME and type_url != ROUTE_TYPE else frozenset()

    def message(self, name: str) -> any_pb2.Any:
        held = self.resources.get(name)
        return held.message if held is not None else empty_route(name)

    def status(self, type_url: str) -> str:
        # A NACK stands for the version it refused; a newer one sent since is awaited like any push.
        if self.nack is not None and str(self.nack_version) == self.sent_version:
            return NACK
        if not self.requested:
            return NOT_SENT if self.wanted(type_url) else SYNCED
        if self.missing(type_url):
            return STALE
        synced = (self.sent_nonce != "" and self.acked_version == self.sent_version == str(self.version)
                  and self.acked_names >= self.wanted(type_url))
        return SYNCED if synced else STALE


def empty_route(name: str) -> any_pb2.Any:
    """istiod's answer for a route name it has no routes for: an empty route configuration. A
    listener draining after a change (45 s) still asks for the routes it was built with
    (istio/istio 1.28.0 pilot/pkg/networking/core/httproute.go BuildHTTPRoutes, and gateway.go
    buildGatewayHTTPRouteConfig: "Envoy will still request route information due to the
    draining of listeners")."""
    packed = any_pb2.Any()
    packed.Pack(route_pb2.RouteConfiguration(name=name, validate_clusters=wrappers_pb2.BoolValue(value=False)))
    return packed


class ProxySync:
    """The control plane's view of one proxy, by node id."""

    def __init__(self, node_id: str, name: str) -> None:
        self.node_id = node_id
        self.name = name  # <namespace>/<pod>, for messages
        self.types: dict[str, TypeSync] = {type_url: TypeSync() for type_url in PUSH_ORDER}
        self.connected = False
        self.pushes = 0  # responses sent, for tests and benchmarks

    def connected_anew(self) -> None:
        """A new stream: Envoy asks again for what it needs, and gets everything again."""
        self.connected = True
        for sync in self.types.values():
            sync.requested, sync.subscribed, sync.sent_nonce, sync.sent_names = False, frozenset(), "", frozenset()

    def update(self, resources: Mapping[str, Mapping[str, Resource]], version: int) -> list[str]:
        """Set the resources the proxy should have; return the types that changed (their version is `version`)."""
        changed = []
        for type_url in PUSH_ORDER:
            new = dict(resources.get(type_url, {}))
            sync = self.types[type_url]
            if {n: r.key for n, r in new.items()} != {n: r.key for n, r in sync.resources.items()}:
                sync.resources, sync.names, sync.version = new, frozenset(new), version
                changed.append(type_url)
        return changed

    def requested(self, type_url: str, names: frozenset[str], nonce: str, version: str, error: str | None) -> None:
        """Envoy asked for `type_url`, answering the response `nonce` ("" for its first request)."""
        sync = self.types.get(type_url)
        if sync is None:
            return  # a type this control plane does not serve: nothing is ever sent for it
        sync.requested = True
        if type_url in BY_NAME:
            sync.subscribed = names
        if not nonce or nonce != sync.sent_nonce:
            return  # first request, or an answer to a response since replaced: the newest counts
        if error is not None:
            sync.nack = f"Envoy refused {SHORT_NAMES[type_url]} version {sync.sent_version}: {error}"
            sync.nack_version = int(sync.sent_version)
        elif version == sync.sent_version:
            sync.acked_version, sync.acked_names, sync.nack = version, sync.sent_names, None
        # Else Envoy asks again after a NACK (new names, its last good version): no ACK, the NACK stands.

    def due(self) -> Iterator[Response]:
        """The responses Envoy should get now, in push order; each marks its type as sent."""
        for type_url in PUSH_ORDER:
            sync = self.types[type_url]
            if not sync.requested:
                continue
            names = sync.wanted(type_url)
            if sync.sent_nonce and sync.sent_version == str(sync.version) and sync.sent_names == names:
                continue
            sync.sent_version, sync.sent_nonce, sync.sent_names = str(sync.version), str(next(_nonces)), names
            self.pushes += 1
            if type_url == CLUSTER_TYPE:
                # A changed EDS cluster is a new cluster to Envoy: it warms until it gets its
                # endpoints again, yet asks with the names it asked before. Endpoints follow
                # every clusters push, as istiod's full push sends them.
                self.types[ENDPOINT_TYPE].sent_nonce = ""
            yield Response(type_url, sync.sent_version, sync.sent_nonce,
                           tuple(sync.message(name) for name in sorted(names)))

    def status(self) -> dict[str, str]:
        return {SHORT_NAMES[type_url]: sync.status(type_url) for type_url, sync in self.types.items()}

    def settled(self) -> bool:
        """Every type is in sync or refused: nothing more will come without a new push."""
        return all(status in (SYNCED, NACK) for status in self.status().values())

    def refusals(self, since: int = 0) -> list[str]:
        """Envoy's NACKs standing, of versions `since` or later."""
        return [f"proxy {self.name}: {sync.nack}" for sync in self.types.values()
                if sync.nack is not None and sync.nack_version >= since]
