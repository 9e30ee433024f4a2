"""A proxy's translated configuration as the control plane serves it: by type, by name, as Any."""

from collections.abc import Mapping
from typing import Any

from conformance.targets.local.translator import ProxyConfig
from conformance.targets.local.translator.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)
from conformance.targets.local.xds.protos import Converter, canonical
from conformance.targets.local.xds.sync import Resource

Snapshot = dict[str, dict[str, Resource]]  # type URL -> name -> resource


class Snapshots:
    """Builds snapshots; a resource object shared by several proxies is converted once."""

    def __init__(self) -> None:
        self._converter = Converter()
        self._seen: dict[int, tuple[Mapping[str, Any], Resource]] = {}  # id -> (object, resource)

    def of(self, config: ProxyConfig, secrets: Mapping[str, Mapping[str, Any]] | None = None) -> Snapshot:
        """`secrets`: the proxy's SDS secrets by name (Secret JSON with "@type"), as istio-agent
        serves them; with those istiod serves it (config.secrets: a gateway's credentials)."""
        return {
            LISTENER_TYPE: {r["name"]: self._resource(r) for r in config.listeners},
            CLUSTER_TYPE: {r["name"]: self._resource(r) for r in config.clusters},
            ROUTE_TYPE: {name: self._resource(r) for name, r in config.routes.items()},
            ENDPOINT_TYPE: {name: self._resource(r) for name, r in config.endpoints.items()},
            SECRET_TYPE: {name: self._resource(r) for name, r in {**(secrets or {}), **config.secrets}.items()},
        }

    def done(self) -> None:
        """End of a push: converted resources the next push does not use again are dropped."""
        self._seen.clear()
        self._converter.next_generation()

    def _resource(self, resource: Mapping[str, Any]) -> Resource:
        # Keyed by identity within one push (the object is held, so its id stays its own).
        seen = self._seen.get(id(resource))
        if seen is None:
            key = canonical(resource)
            seen = (resource, Resource(key, self._converter.to_any(key, resource)))
            self._seen[id(resource)] = seen
        return seen[1]
