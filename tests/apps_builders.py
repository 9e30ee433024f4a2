"""Shared helpers for the local mesh's app processes run for real on loopback ports: start an
app, stand-in upstreams that record what reaches them, and the service registry the apps read."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NS = "bookinfo"
STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.005)
    raise TimeoutError(f"nothing listening on port {port}")


@dataclass
class Recorded:
    target: str
    headers: dict[str, str]
    peer_port: int


class Recorder:
    """A stand-in upstream in the test process: records what reaches it, answers with a fixed JSON."""

    def __init__(self, reply: object) -> None:
        self.seen: list[Recorded] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                headers = {name.lower(): value for name, value in self.headers.items()}
                recorder.seen.append(Recorded(self.path, headers, self.client_address[1]))
                body = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Apps:
    """App processes started for one test, and the service registry they read."""

    tmp: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    recorders: list[Recorder] = field(default_factory=list)
    services: dict[str, list[str]] = field(default_factory=dict)

    @property
    def registry(self) -> Path:
        return self.tmp / "registry.json"

    def start(self, app: str, pod: str, *args: str, namespace: str = NS) -> str:
        """Start one app process; return its base URL once it listens."""
        port = free_port()
        cmd = [sys.executable, "-m", "conformance.targets.local.apps", app, "--listen", f"127.0.0.1:{port}"]
        cmd += ["--pod", pod, "--namespace", namespace, "--registry", str(self.registry), *args]
        log = open(self.tmp / f"{pod}.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
        log.close()
        self.procs.append(proc)
        wait_listening(proc, port)
        return f"http://127.0.0.1:{port}"

    def recorder(self, reply: object) -> Recorder:
        recorder = Recorder(reply)
        self.recorders.append(recorder)
        return recorder

    def register(self, name: str, *endpoints: str, port: int = 9080, namespace: str = NS) -> None:
        """Point name.namespace:port at endpoints (base URLs or IP:PORT); written atomically."""
        addresses = [endpoint.removeprefix("http://") for endpoint in endpoints]
        self.services[f"{name}.{namespace}.svc.cluster.local:{port}"] = addresses
        partial = self.tmp / "registry.json.tmp"
        partial.write_text(json.dumps(self.services))
        os.replace(partial, self.registry)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for recorder in self.recorders:
            recorder.close()


def dead_endpoint() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused
