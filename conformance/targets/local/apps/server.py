"""The HTTP server every app runs: an app is a function from Request to AppReply."""

import json
import signal
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit


# NamedTuple rather than dataclass: importing dataclasses costs ~10 ms of start-up per process.
class Request(NamedTuple):
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    target: str  # the request-target as received, query included
    headers: Message
    body: bytes
    client_ip: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class AppReply(NamedTuple):
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


App = Callable[[Request], AppReply]


def json_reply(value: object, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> AppReply:
    body = json.dumps(value).encode()
    return AppReply(status, body, "application/json", headers)


def text_reply(text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> AppReply:
    return AppReply(status, text.encode(), content_type)


def not_found() -> AppReply:
    return json_reply({"error": "not found"}, 404)


_log_lock = threading.Lock()


def log_line(line: str) -> None:
    # One lock so lines from concurrent handler threads never interleave.
    with _log_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every reply carries Content-Length
    # Headers and body go out in separate writes: with Nagle on, the body waits for the
    # peer's delayed ACK (~40 ms) on every keep-alive request.
    disable_nagle_algorithm = True
    server_version = "meshconf-app"
    sys_version = ""
    server: "AppServer"

    def _dispatch(self) -> None:
        started = time.perf_counter()
        try:
            request = self._read_request()
        except ValueError as exc:
            self.close_connection = True
            reply = text_reply(f"bad request: {exc}\n", 400)
        else:
            try:
                reply = self.server.app(request)
            except Exception:  # an app bug must answer 500, not kill the connection silently
                traceback.print_exc(file=sys.stderr)
                reply = text_reply("internal error\n", 500)
        # Logged before the reply goes out (the time is the app's, to a ready reply): a client that has
        # its reply may stop the app at once (SIGTERM), and the daemon handler thread with it.
        elapsed_ms = (time.perf_counter() - started) * 1000
        log_line(
            f'{time.strftime("%H:%M:%S")} {self.server.pod} {self.client_address[0]} '
            f'"{self.requestline}" {reply.status} {len(reply.body)} {elapsed_ms:.1f}ms'
        )
        try:
            self._write(reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    def _read_request(self) -> Request:
        # Behind a proxy the target is origin-form, but accept absolute-form too.
        parts = urlsplit(self.path)
        return Request(
            method=self.command,
            path=parts.path or "/",
            query=parse_qs(parts.query, keep_blank_values=True),
            target=self.path,
            headers=self.headers,
            body=self._read_body(),
            client_ip=self.client_address[0],
        )

    def _read_body(self) -> bytes:
        # The whole body must be consumed, or the next request on this connection is garbage.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        if not raw.strip().isdigit():
            raise ValueError("invalid Content-Length")
        return self.rfile.read(int(raw))

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size_line = self.rfile.readline(65537).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ValueError("invalid chunk size") from None
            if size == 0:
                break
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk
        while self.rfile.readline(65537).strip():  # trailers up to the blank line
            pass
        return b"".join(chunks)

    def _write(self, reply: AppReply) -> None:
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and reply.body:
            self.wfile.write(reply.body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _dispatch logs one line per request, with the elapsed time

    def log_message(self, format: str, *args: object) -> None:
        # Protocol errors http.server answers itself (bad request line, timeouts...).
        log_line(f'{time.strftime("%H:%M:%S")} {self.server.pod} {self.address_string()} {format % args}')


class AppServer(ThreadingHTTPServer):
    daemon_threads = True  # never wait for in-flight requests on exit
    allow_reuse_address = True
    request_queue_size = 128  # a burst of fresh connections must not be refused

    def __init__(self, address: tuple[str, int], app: App, pod: str) -> None:
        self.app = app
        self.pod = pod
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the address with getfqdn(): a reverse DNS
        # lookup that can cost seconds. We only need the socket bound.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(address: tuple[str, int], app: App, pod: str, name: str) -> None:
    """Listen on address and serve app until SIGTERM or SIGINT."""
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = AppServer(address, app, pod)
    log_line(f"{pod}: {name} listening on {address[0]}:{address[1]}")
    try:
        server.serve_forever()
    finally:
        server.server_close()
