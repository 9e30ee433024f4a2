"""The translator's Envoy resources (JSON with "@type") as protobuf Any, ready for a DiscoveryResponse.

Conversion is the costly step of a push, and sidecars of one namespace share most of their
resources: each distinct resource is converted once and kept while a push still uses it.
"""

import importlib
import json
import pkgutil
from collections.abc import Mapping
from typing import Any

from google.protobuf import any_pb2, json_format

from conformance.targets.local.translator.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)

# Short names, as istioctl proxy-status prints them.
SHORT_NAMES = {CLUSTER_TYPE: "CDS", LISTENER_TYPE: "LDS", ENDPOINT_TYPE: "EDS", ROUTE_TYPE: "RDS", SECRET_TYPE: "SDS"}
# The order a push sends a proxy's changes in, as istiod: clusters and their endpoints before
# the listeners and routes that use them (istio/istio pilot/pkg/xds/ads.go, PushOrder).
PUSH_ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE)
# Types Envoy subscribes to by name (the others are wildcard: Envoy takes all it is given).
BY_NAME = frozenset({ROUTE_TYPE, ENDPOINT_TYPE, SECRET_TYPE})


def canonical(resource: Mapping[str, Any]) -> str:
    """A resource's identity for change detection: equal JSON means an equal resource."""
    return json.dumps(resource, sort_keys=True, separators=(",", ":"))


class Converter:
    """JSON resources to Any, each distinct one converted once per generation of resources."""

    def __init__(self) -> None:
        self._cache: dict[str, any_pb2.Any] = {}
        self._used: dict[str, any_pb2.Any] = {}

    def to_any(self, key: str, resource: Mapping[str, Any]) -> any_pb2.Any:
        """`resource` as Any; `key` is its canonical() form. Raises ValueError if it is not valid."""
        found = self._used.get(key) or self._cache.get(key)
        if found is None:
            found = any_pb2.Any()
            _register_types(resource)
            try:
                json_format.ParseDict(dict(resource), found)
            except json_format.ParseError as error:
                raise ValueError(f"{resource.get('@type', '?')} {resource.get('name', '')!r}: {error}") from error
        self._used[key] = found
        return found

    def next_generation(self) -> None:
        """Forget what the last push did not use (call after each push)."""
        self._cache, self._used = self._used, {}


_registered: set[str] = set()


def _register_types(value: Any) -> None:
    """Import the xds-protos modules of every "@type" in `value`: json_format resolves a type URL
    only once its message is registered, and a module registers its messages when imported."""
    if isinstance(value, Mapping):
        type_url = value.get("@type")
        if isinstance(type_url, str):
            _register_package(type_url.rpartition("/")[2].rpartition(".")[0])
        for item in value.values():
            _register_types(item)
    elif isinstance(value, list):
        for item in value:
            _register_types(item)


def _register_package(package: str) -> None:
    if package in _registered:
        return
    module = importlib.import_module(package)
    for found in pkgutil.iter_modules(module.__path__):
        if found.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{found.name}")
    _registered.add(package)
