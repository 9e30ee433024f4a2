"""A stand-in for the Kubernetes client's port-forward (ws_client.PortForward): the pod side
of each forward is a TCP server on this machine, chosen by the forwarded pod port. And a record of
the forwards a target holds (Kube.port_forward), opened and closed, connected to or not."""

import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from conformance.targets import kube as kube_module


class Forward:
    """One forward: a socketpair whose far end is relayed to `address`, both ways."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.app, inner = socket.socketpair()
        try:
            remote = socket.create_connection(address, timeout=5)
        except OSError:
            inner.close()  # nothing listens in the pod (yet): the connection just ends
            return
        remote.settimeout(None)
        for source, sink in ((inner, remote), (remote, inner)):
            threading.Thread(target=_relay, args=(source, sink), daemon=True).start()

    def socket(self, port_number: int) -> socket.socket:
        return self.app

    def error(self, port_number: int) -> str | None:
        return None

    def close(self) -> None:
        self.app.close()


def _relay(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def fake_port_forward(monkeypatch: pytest.MonkeyPatch,
                      pods: Mapping[int, tuple[str, int]]) -> list[tuple[str, str, int]]:
    """Forwards to pod port P reach pods[P]; returns the (pod, namespace, port) of every forward."""
    calls: list[tuple[str, str, int]] = []

    def portforward(api_method: Any, pod: str, namespace: str, ports: str) -> Forward:
        calls.append((pod, namespace, int(ports)))
        return Forward(pods[int(ports)])

    monkeypatch.setattr(kube_module, "portforward", portforward)
    return calls


@dataclass
class HeldForwards:
    """The (pod, namespace, port) of every Kube.port_forward opened, and of those closed again."""

    opened: list[tuple[str, str, int]] = field(default_factory=list)
    closed: list[tuple[str, str, int]] = field(default_factory=list)


def record_held_forwards(monkeypatch: pytest.MonkeyPatch) -> HeldForwards:
    held = HeldForwards()
    original = kube_module.Kube.port_forward

    @contextmanager
    def port_forward(self: kube_module.Kube, pod: str, namespace: str, port: int) -> Iterator[tuple[str, int]]:
        with original(self, pod, namespace, port) as address:
            held.opened.append((pod, namespace, port))
            try:
                yield address
            finally:
                held.closed.append((pod, namespace, port))

    monkeypatch.setattr(kube_module.Kube, "port_forward", port_forward)
    return held
