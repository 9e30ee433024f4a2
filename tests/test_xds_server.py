"""The control plane's gRPC server, driven by a scripted ADS client: what Envoy does on its
stream, step by step (the real Envoy's side is in test_local_mesh and test_translator_envoy)."""

import os
import queue
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from conformance.errors import ConformanceError
from conformance.targets.local.translator import ProxyConfig
from conformance.targets.local.translator.resources import CLUSTER_TYPE
from conformance.targets.local.xds.server import ControlPlane
from conformance.targets.local.xds.snapshot import Snapshots
from tests.builders import eventually

NODE = "sidecar~127.0.0.1~a.ns~ns.svc.cluster.local"
WAIT = 5.0


class Stream:
    """One ADS stream, as Envoy holds it: requests written when we say, responses read in order."""

    def __init__(self, plane: ControlPlane, node_id: str) -> None:
        host, port = plane.endpoint
        self._channel = grpc.insecure_channel(f"{host}:{port}")
        self._requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
        self._node = node_id
        self.responses = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel).StreamAggregatedResources(
            self._outgoing())

    def _outgoing(self) -> Iterator[discovery_pb2.DiscoveryRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def ask(self, type_url: str, nonce: str = "", version: str = "", error: str | None = None) -> None:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, response_nonce=nonce, version_info=version)
        request.node.id = self._node
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._requests.put(request)

    def next(self) -> discovery_pb2.DiscoveryResponse:
        return next(self.responses)

    def close(self) -> None:
        self._requests.put(None)
        self._channel.close()


def cluster(name: str) -> dict:
    return {"@type": CLUSTER_TYPE, "name": name, "type": "STATIC", "connect_timeout": "1s"}


@pytest.fixture
def plane() -> Iterator[ControlPlane]:
    control_plane = ControlPlane("127.0.0.1")
    yield control_plane
    control_plane.stop()


def push(plane: ControlPlane, *names: str) -> list[str]:
    snapshots = Snapshots()
    try:
        return plane.push({NODE: snapshots.of(ProxyConfig([], [cluster(n) for n in names], {}))})
    finally:
        snapshots.done()


def test_a_proxy_not_in_the_mesh_is_refused(plane: ControlPlane) -> None:
    stream = Stream(plane, "sidecar~127.0.0.9~stranger.ns~ns.svc.cluster.local")
    stream.ask(CLUSTER_TYPE)
    with pytest.raises(grpc.RpcError) as refused:
        stream.next()
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no proxy 'sidecar~127.0.0.9~stranger.ns~ns.svc.cluster.local' in this mesh" in refused.value.details()
    stream.close()


def synced_stream(plane: ControlPlane) -> tuple[Stream, discovery_pb2.DiscoveryResponse]:
    """A proxy connected, sent its clusters (version 1) and ACKed them; the stream and that response."""
    plane.register(NODE, "ns/a")
    push(plane, "c1")
    stream = Stream(plane, NODE)
    stream.ask(CLUSTER_TYPE)
    first = stream.next()
    assert (first.version_info, [r.type_url for r in first.resources]) == ("1", [CLUSTER_TYPE])
    stream.ask(CLUSTER_TYPE, first.nonce, first.version_info)
    eventually(lambda: plane.status(NODE)["CDS"] == "SYNCED", "the ACK")
    return stream, first


def test_a_push_waits_for_the_ack_and_a_nack_fails_with_envoys_message(plane: ControlPlane) -> None:
    stream, first = synced_stream(plane)
    assert push(plane, "c1") == []  # unchanged: nobody to wait for
    assert push(plane, "c2") == [NODE]
    second = stream.next()
    with pytest.raises(ConformanceError, match="Envoy has not answered the push: ns/a \\(CDS STALE"):
        plane.wait_settled([NODE], 0.2)
    stream.ask(CLUSTER_TYPE, second.nonce, first.version_info, error="malformed IP address: not-an-ip")
    with pytest.raises(ConformanceError, match="proxy ns/a: Envoy refused CDS version 3: malformed IP address: not-an-ip"):
        plane.wait_settled([NODE], WAIT)
    stream.close()


def test_a_proxy_that_reconnects_gets_everything_again(plane: ControlPlane) -> None:
    stream, first = synced_stream(plane)
    stream.close()
    again = Stream(plane, NODE)
    again.ask(CLUSTER_TYPE, version=first.version_info)  # a new stream's first request: no nonce
    resent = again.next()
    assert resent.version_info == first.version_info and resent.nonce != first.nonce
    again.ask(CLUSTER_TYPE, resent.nonce, resent.version_info)
    plane.wait_settled([NODE], WAIT)
    assert plane.status(NODE)["CDS"] == "SYNCED"
    again.close()


def test_a_stopped_control_plane_leaves_no_descriptor_open() -> None:
    """One per mesh, and a test session starts many: each must give back its sockets and its
    event loop's descriptors (gRPC's own, set up once per process, stay). Counted in a process
    of its own, where nothing else opens or collects descriptors meanwhile."""
    code = (
        "import os\n"
        "from conformance.targets.local.xds.server import ControlPlane\n"
        "ControlPlane('127.0.0.1').stop()\n"  # gRPC's one-time setup
        "before = len(os.listdir('/proc/self/fd'))\n"
        "for _ in range(3):\n"
        "    ControlPlane('127.0.0.1').stop()\n"
        "print(before, len(os.listdir('/proc/self/fd')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.split()
    assert after == before


def test_grpc_imported_first_with_its_fork_handlers_on_is_refused_by_name() -> None:
    """Otherwise every Envoy and app the mesh forks may crash as it starts, with gRPC's own
    message in its log and nothing about why."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    code = "import grpc; import conformance.targets.local.xds"
    refused = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "set GRPC_ENABLE_FORK_SUPPORT=false" in refused.stderr, refused.stderr
    allowed = subprocess.run([sys.executable, "-c", code], env={**env, "GRPC_ENABLE_FORK_SUPPORT": "false"},
                             capture_output=True, text=True, timeout=60)
    assert allowed.returncode == 0, allowed.stderr
