"""The wire of the fake Kubernetes API (tests/fakeapi.py): a request as the fake saw it, what a request
asks for in its query and headers, the reply and the Status body the API server answers with, and
the HTTP server that carries them.

- a reply's warnings go out as `Warning: 299 - "<text>"` headers, as the API server sends them;
- ?fieldManager= defaults to the user agent up to its first "/", ?fieldValidation= to Warn;
- ?dryRun= takes only All (apiserver pkg/endpoints/handlers/create.go, ValidateDryRun).
"""

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from conformance.targets.field_errors import NOT_SUPPORTED, FieldError, invalid_message

DRY_RUN_ALL = "All"  # the one dryRun value the API server accepts (metav1.DryRunAll)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: Any


Answer = tuple[int, Any]


@dataclass
class Reply:
    code: int
    payload: Any
    warnings: list[str] = field(default_factory=list)


Receive = Callable[[Seen], Reply]  # what the server does with each request it reads


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure" if code >= 300 else "Success",
            "message": message, "reason": reason, "code": code}
    return {**body, "details": details} if details is not None else body


# -- what a request asks for -----------------------------------------------------------------------

def field_manager(seen: Seen) -> str:
    """?fieldManager=, else the user agent up to its first "/" (as the API server defaults it)."""
    given = seen.query.get("fieldManager", [""])[0]
    return given or seen.headers.get("user-agent", "unknown").split("/", 1)[0]


def field_validation(seen: Seen) -> str:
    return seen.query.get("fieldValidation", ["Warn"])[0]


def invalid_dry_run(values: list[str]) -> dict[str, Any]:
    """422 for a dryRun other than All: ValidateDryRun's field.NotSupported (the value printed with
    Go's %#v), in NewInvalid's words for CreateOptions."""
    shown = "[]string{" + ", ".join(json.dumps(v) for v in values) + "}"
    error = FieldError(NOT_SUPPORTED, "dryRun", f'Unsupported value: {shown}: supported values: "{DRY_RUN_ALL}"')
    return status(422, "Invalid", invalid_message("CreateOptions", "meta.k8s.io", "", [error]),
                  details={"group": "meta.k8s.io", "kind": "CreateOptions",
                           "causes": [{"reason": error.reason, "message": error.message, "field": error.field}]})


# -- the server --------------------------------------------------------------------------------------

def make_handler(receive: Receive) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            seen = Seen(self.command, url.path, parse_qs(url.query),
                        {k.lower(): v for k, v in self.headers.items()}, body)
            reply = receive(seen)
            payload = reply.payload
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(reply.code)
            self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for warning in reply.warnings:
                self.send_header("Warning", f'299 - "{warning}"')
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_POST = do_DELETE = do_PUT = _handle

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def serve(receive: Receive) -> ThreadingHTTPServer:
    """An HTTP server on a free local port, answering from a daemon thread until it is shut down."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(receive))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    return server
