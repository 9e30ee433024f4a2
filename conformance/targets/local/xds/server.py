"""The control plane's gRPC server: the Aggregated Discovery Service on loopback, one stream per Envoy.

gRPC's asyncio server runs on a thread of its own: one event loop holds every proxy's stream,
however many proxies there are. The mesh, on its own thread, sets each proxy's resources and
waits for the ACKs; a lock orders the two, and a condition wakes whoever waits on an ACK.
"""

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from conformance.errors import ConformanceError
from conformance.targets.local.xds.sync import ProxySync, Resource

# How long stop() lets streams end before the server closes them.
STOP_GRACE = 1.0
# How long the server may take to start listening.
START_TIMEOUT = 10.0


class ControlPlane:
    """Serves each registered proxy the resources set for it, and tracks its ACKs and NACKs."""

    def __init__(self, host: str, port: int = 0) -> None:
        """Listen on host:port (port 0: any free port; `endpoint` says which)."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._proxies: dict[str, ProxySync] = {}
        self._wakeups: dict[str, asyncio.Event] = {}  # node id -> its stream's
        # One set per wait_settled in progress: the proxies heard from since it last looked.
        # At 150 proxies, looking at every one on every ACK cost more than the ACKs.
        self._watchers: list[set[str]] = []
        self._version = 0
        self._loop = asyncio.new_event_loop()
        self._server: grpc.aio.Server | None = None
        self._port = 0
        started = threading.Event()
        address = f"{host}:{port}"
        self._thread = threading.Thread(target=self._serve, args=(address, started), name="meshconf-xds", daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT) or self._server is None:
            raise ConformanceError(f"the local control plane could not listen on {address}: {self._start_error}")
        self.endpoint = (host, self._port)

    # -- the mesh's side -------------------------------------------------------

    def register(self, node_id: str, name: str) -> None:
        with self._lock:
            self._proxies.setdefault(node_id, ProxySync(node_id, name))

    def forget(self, node_id: str) -> None:
        with self._lock:
            self._proxies.pop(node_id, None)
            wakeup = self._wakeups.pop(node_id, None)
        if wakeup is not None:
            self._loop.call_soon_threadsafe(wakeup.set)  # its stream ends

    def push(self, resources: Mapping[str, Mapping[str, Mapping[str, Resource]]]) -> list[str]:
        """Set each proxy's resources (node id -> type -> name -> resource); send what changed to
        those connected. Returns the node ids of the proxies whose resources changed."""
        with self._lock:
            self._version += 1
            changed = [node for node, by_type in resources.items()
                       if node in self._proxies and self._proxies[node].update(by_type, self._version)]
            wakeups = [self._wakeups[node] for node in changed if node in self._wakeups]
        for wakeup in wakeups:
            self._loop.call_soon_threadsafe(wakeup.set)
        return changed

    def wait_settled(self, node_ids: Collection[str], timeout: float, since: int = 0) -> None:
        """Wait until each connected proxy of `node_ids` ACKed or NACKed what it was pushed;
        raise ConformanceError with Envoy's reasons for any NACK of a version `since` or later
        (an older one was reported when it came). A proxy not connected yet gets everything
        when it connects, and its readiness says when it took it."""
        deadline = time.monotonic() + timeout
        remaining = set(node_ids)
        touched = set(node_ids)  # proxies heard from since last looked at: at first, all
        with self._changed:
            self._watchers.append(touched)
            try:
                while True:
                    for node in touched & remaining:
                        proxy = self._proxies.get(node)
                        if proxy is None or not proxy.connected or proxy.settled():
                            remaining.discard(node)
                    touched.clear()
                    if not remaining or (left := deadline - time.monotonic()) <= 0:
                        break
                    self._changed.wait(left)
            finally:
                self._watchers.remove(touched)
            refusals = [r for n in node_ids if (p := self._proxies.get(n)) is not None for r in p.refusals(since)]
            pending = [f"{p.name} ({_describe(p.status())})" for n in sorted(remaining) if (p := self._proxies.get(n))]
        if refusals:
            raise ConformanceError("; ".join(refusals))
        if pending:
            raise ConformanceError(f"after {timeout:.0f}s, Envoy has not answered the push: {', '.join(pending)}")

    @property
    def version(self) -> int:
        """The version of the last push: a resource type changed by it carries this version."""
        with self._lock:
            return self._version

    def status(self, node_id: str) -> dict[str, str]:
        with self._lock:
            proxy = self._proxies.get(node_id)
            return proxy.status() if proxy is not None else {}

    def refusals(self, node_id: str) -> list[str]:
        with self._lock:
            proxy = self._proxies.get(node_id)
            return proxy.refusals() if proxy is not None else []

    def resources(self, node_id: str, type_url: str) -> dict[str, dict[str, Any]]:
        """What the proxy is to have of `type_url`, by name, as JSON (what istioctl proxy-config
        shows of istiod's side)."""
        with self._lock:
            proxy = self._proxies.get(node_id)
            held = dict(proxy.types[type_url].resources) if proxy is not None else {}
        return {name: json_format.MessageToDict(r.message, preserving_proto_field_name=True)
                for name, r in held.items()}

    def pushes(self, node_id: str) -> int:
        with self._lock:
            proxy = self._proxies.get(node_id)
            return proxy.pushes if proxy is not None else 0

    def snapshot(self) -> list[tuple[str, bool, dict[str, str]]]:
        """(name, connected, status by type) of every proxy: what proxy-status prints."""
        with self._lock:
            return [(p.name, p.connected, p.status()) for p in self._proxies.values()]

    def stop(self) -> None:
        try:
            if self._server is not None and self._loop.is_running():
                asyncio.run_coroutine_threadsafe(self._server.stop(STOP_GRACE), self._loop).result(STOP_GRACE + 5)
        finally:
            if self._loop.is_running():
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_GRACE + 5)

    # -- the server's side ------------------------------------------------------

    _start_error = "it did not start"

    def _serve(self, address: str, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start(address))
        except Exception as error:  # reported by __init__, on the caller's thread
            self._start_error = f"{type(error).__name__}: {error}"
            started.set()
            self._loop.close()
            return
        started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()  # its selector's descriptors, or each mesh would leak them

    async def _start(self, address: str) -> None:
        server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Ads(self), server)
        self._port = server.add_insecure_port(address)
        await server.start()
        self._server = server

    def _attach(self, node_id: str, wakeup: asyncio.Event) -> ProxySync | None:
        with self._lock:
            proxy = self._proxies.get(node_id)
            if proxy is not None:
                proxy.connected_anew()
                replaced = self._wakeups.get(node_id)
                self._wakeups[node_id] = wakeup
                if replaced is not None:
                    replaced.set()  # the proxy's earlier stream ends: this one serves it now
            return proxy

    def _serves(self, node_id: str, wakeup: asyncio.Event) -> bool:
        """Whether the stream of `wakeup` is still the proxy's (not forgotten, not replaced)."""
        with self._lock:
            return self._wakeups.get(node_id) is wakeup

    def _detach(self, node_id: str, wakeup: asyncio.Event) -> None:
        with self._changed:
            if self._wakeups.get(node_id) is wakeup:
                del self._wakeups[node_id]
                if (proxy := self._proxies.get(node_id)) is not None:
                    proxy.connected = False
            self._heard_from(node_id)

    def _received(self, proxy: ProxySync, request: discovery_pb2.DiscoveryRequest) -> None:
        error = (request.error_detail.message or "no reason given") if request.HasField("error_detail") else None
        with self._changed:
            proxy.requested(request.type_url, frozenset(request.resource_names), request.response_nonce,
                            request.version_info, error)
            self._heard_from(proxy.node_id)

    def _heard_from(self, node_id: str) -> None:
        """Under the lock: wake whoever waits, telling them which proxy to look at again."""
        for touched in self._watchers:
            touched.add(node_id)
        self._changed.notify_all()

    def _due(self, proxy: ProxySync) -> list[discovery_pb2.DiscoveryResponse]:
        with self._lock:
            return [
                discovery_pb2.DiscoveryResponse(version_info=r.version, type_url=r.type_url, nonce=r.nonce,
                                                resources=list(r.resources))
                for r in proxy.due()
            ]


class _Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane

    async def StreamAggregatedResources(  # noqa: N802 (the gRPC method's name)
        self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        first = await anext(aiter(requests), None)
        if first is None:
            return
        node_id = first.node.id
        wakeup = asyncio.Event()
        proxy = self._plane._attach(node_id, wakeup)
        if proxy is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no proxy {node_id!r} in this mesh")
            return
        reader = asyncio.create_task(self._read(proxy, first, requests, wakeup))
        # A stream Envoy closed ends the reader with an error: nothing to report, the stream is over.
        reader.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            while not reader.done() and self._plane._serves(node_id, wakeup):
                for response in self._plane._due(proxy):
                    yield response
                await wakeup.wait()
                wakeup.clear()
        finally:
            reader.cancel()
            self._plane._detach(node_id, wakeup)

    async def _read(self, proxy: ProxySync, first: discovery_pb2.DiscoveryRequest,
                    requests: AsyncIterator[discovery_pb2.DiscoveryRequest], wakeup: asyncio.Event) -> None:
        try:
            self._plane._received(proxy, first)
            wakeup.set()
            async for request in requests:
                if not self._plane._serves(proxy.node_id, wakeup):
                    return  # replaced by a newer stream of the proxy: its requests count
                self._plane._received(proxy, request)
                wakeup.set()
        finally:
            wakeup.set()


def _describe(status: Mapping[str, str]) -> str:
    return ", ".join(f"{kind} {state}" for kind, state in status.items())
