"""Make-before-break: the order the targets apply and delete Istio routing in.

Istio's documented pitfall (istio.io docs/ops/common-problems/network-issues, "503 errors after
setting destination rule"; and best practices, "Avoid 503 errors while reconfiguring service
routes"): a VirtualService that names a subset before the proxies have its DestinationRule routes
to a cluster that does not exist yet, and Envoy answers 503 (response flag NC). So an apply sends
the DestinationRules first and waits until the proxies have their subsets' clusters before it
sends the VirtualServices; a delete removes the VirtualServices first and waits until no proxy's
routes name those subsets before it removes the DestinationRules.

A proxy has a subset when its config_dump lists the cluster among its dynamic_active_clusters: a
cluster still warming is not listed there (Envoy answers a route to it 503 NC), and an active one
may have no host (a subset selecting no pod). It no longer routes to a subset when no route of its
dynamic_route_configs names the cluster.

The local target applies in the same phases. Each of its applies is one push that returns once
the proxies ACKed it, but an ACKed subset cluster may still be warming (its endpoints not taken
yet), so it too waits for the subsets in its Envoys' config_dump; and one push sends a proxy its clusters
before its routes (CDS before RDS, as istiod orders them), so a subset and its route deleted in one
push would leave the route naming a cluster that is gone.
"""

from collections.abc import Callable, Sequence

from conformance.targets.base import Doc
from conformance.waiting import wait_for

DESTINATION_RULE = "DestinationRule"
VIRTUAL_SERVICE = "VirtualService"
# Where a proxy's subset clusters and its routes are read (pilot-agent request GET <path>).
CLUSTERS_PATH = "config_dump?resource=dynamic_active_clusters"
ROUTES_PATH = "config_dump?resource=dynamic_route_configs"


def apply_phases(docs: Sequence[Doc]) -> tuple[list[Doc], list[Doc]]:
    """(everything but the VirtualServices, the VirtualServices): the second waits for the first's
    subsets; when either is empty there is nothing to wait for."""
    return ([d for d in docs if d.get("kind") != VIRTUAL_SERVICE],
            [d for d in docs if d.get("kind") == VIRTUAL_SERVICE])


def delete_phases(docs: Sequence[Doc]) -> tuple[list[Doc], list[Doc]]:
    """(the VirtualServices, everything else): the routes leave before the subsets they name."""
    first, then = apply_phases(docs)
    return then, first


def subset_clusters(docs: Sequence[Doc], namespace: str) -> list[str]:
    """What names each DestinationRule subset's cluster in Envoy, port aside: `|<subset>|<host FQDN>`
    of Istio's `outbound|<port>|<subset>|<host>` (pilot/pkg/model/service.go BuildSubsetKey)."""
    markers = []
    for doc in docs:
        if doc.get("kind") != DESTINATION_RULE:
            continue
        spec = doc.get("spec") or {}
        host = fqdn(str(spec.get("host", "")), doc.get("metadata", {}).get("namespace") or namespace)
        markers += [f"|{s['name']}|{host}" for s in spec.get("subsets") or []]
    return markers


def fqdn(host: str, namespace: str) -> str:
    """A DestinationRule host as Istio resolves it: a name without a dot is short, in the rule's
    namespace; any other is taken as written (pilot/pkg/model/config.go ResolveShortnameToFQDN)."""
    return host if "." in host or host == "*" else f"{host}.{namespace}.svc.cluster.local"


def wait_for_proxies(read: Callable[[str], str], proxies: Callable[[], list[str]], path: str,
                     markers: Sequence[str], present: bool, timeout: float, poll: float, what: str) -> None:
    """Until every proxy's `path` (what `read` returns for a pod) names all `markers` (present) or
    none of them (not present)."""
    if not markers:
        return

    def pending() -> str | None:
        lagging = []
        for pod in proxies():
            text = read(pod)
            found = [m for m in markers if m in text]
            if (len(found) < len(markers)) if present else found:
                lagging.append(pod)
        return f"not yet in {path}: {', '.join(lagging)}" if lagging else None

    wait_for(pending, timeout, poll, what)
