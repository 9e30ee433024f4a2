"""A stand-in for Istio's ingress gateway behind kind's host port, for contract tests.

It listens only once start() is called (the readiness Gateway was applied): before that
the port is free, as it is before `kind create cluster` publishes it. It answers as
Envoy does for a host with a listener and no route (Envoy's router: no route for the host): 404 with
`server: istio-envoy`; `reply` can make it answer like something else.
"""

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeGateway:
    def __init__(self) -> None:
        self.port = free_port()
        self.reply = (404, "istio-envoy")  # (status, server header)
        self.hosts: list[str] = []  # the Host of every request seen
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        if self._server is not None:
            return
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gateway.hosts.append(self.headers.get("host", ""))
                status, server = gateway.reply
                self.send_response_only(status)
                self.send_header("server", server)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    yield fake
    fake.stop()
