"""The streams under Kube.exec and Kube.port_forward: draining an exec, reading its exit code,
and a local port bridged to a pod through one port-forward per connection.
"""

import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from conformance.errors import ConformanceError, NotConverged
from conformance.targets.kube_views import one_line

log = logging.getLogger(__name__)


class Forward(Protocol):
    """What kubernetes.stream.portforward returns (ws_client.PortForward)."""

    def socket(self, port_number: int) -> socket.socket: ...
    def error(self, port_number: int) -> str | None: ...
    def close(self) -> None: ...


def drain(ws: Any, deadline: float, timeout_message: str) -> None:
    """Buffer the exec's output until the server closes the stream, or give up at deadline."""
    while ws.is_open():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NotConverged(timeout_message)
        ws.update(timeout=remaining)


def exit_code(status: bytes | str, what: str) -> int:
    """The exit code from the error channel's Status (v4/v5 channel protocols)."""
    text = status.decode("utf-8", errors="replace") if isinstance(status, bytes) else status
    if not text.strip():
        raise ConformanceError(f"{what}: the stream closed without an exit status")
    try:
        data = json.loads(text)
    except ValueError:
        raise ConformanceError(f"{what}: unreadable exit status {one_line(text)[:200]}") from None
    if data.get("status") == "Success":
        return 0
    for cause in (data.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", "1"))
    # Not an exit code: the command could not run at all (no such container, binary, ...).
    raise ConformanceError(f"{what}: {one_line(str(data.get('message') or text))}")


class Bridge:
    """A local listening socket; each accepted connection gets its own forward, in its own thread."""

    def __init__(self, open_remote: Callable[[], AbstractContextManager[socket.socket]], what: str) -> None:
        self._open_remote = open_remote  # opens one forward, yields its pod-side socket
        self._what = what
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        # A timeout lets the accept loop notice close(): closing a socket does not wake accept().
        self._listener.settimeout(0.1)
        self.address: tuple[str, int] = ("127.0.0.1", self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, name=f"meshconf {what}", daemon=True)
        self._accepter.start()

    def close(self) -> None:
        self._closing.set()
        self._accepter.join(timeout=5)
        self._listener.close()
        for thread in list(self._threads):
            thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setblocking(True)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                      name=f"meshconf {self._what} connection")
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with self._open_remote() as remote:
                _pump(conn, remote, self._closing)
        except Exception as exc:  # one connection failing must not end the others
            log.warning("%s: %s", self._what, one_line(str(exc)))
        finally:
            conn.close()


def _pump(local: socket.socket, remote: socket.socket, closing: threading.Event) -> None:
    """Copy bytes both ways until either side closes or the bridge shuts down."""
    while not closing.is_set():
        readable, _, _ = select.select([local, remote], [], [], 0.1)
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            (remote if sock is local else local).sendall(data)
