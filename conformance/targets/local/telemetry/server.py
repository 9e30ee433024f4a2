"""The local stand-in for pilot-agent's merged metrics: each pod's Envoy stats and Istio metrics.

pilot-agent serves on :15020/stats/prometheus its Envoy's /stats/prometheus, where istio_stats
keeps the istio_* metrics, merged with its own and the app's (istio/istio 1.28.0
pilot/cmd/pilot-agent/status/server.go handleStats). Here one server on the mesh's control-plane
address serves every pod, named by the query parameter `pod` (<namespace>/<name>), and works the
pod's new access log records into its metrics when it is scraped: what a scrape returns counts
every request the proxy had logged by then.
"""

import json
import threading
from collections.abc import Callable
from typing import Any
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from conformance.errors import ConformanceError
from conformance.names import STATS_PATH, STATUS_PORT

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Where Prometheus asks for its scrape targets (http_sd_configs), every second.
TARGETS_PATH = "/targets"

# pod ("<namespace>/<name>") -> its merged metrics, or None for a pod it does not know.
Scrape = Callable[[str], bytes | None]
# The scrape targets now, as Prometheus's HTTP service discovery takes them (target groups).
Targets = Callable[[], list[dict[str, Any]]]


class MetricsServer:
    def __init__(self, address: str, scrape: Scrape, targets: Targets, port: int = STATUS_PORT) -> None:
        handler = type("Handler", (_Handler,), {"scrape": staticmethod(scrape), "targets": staticmethod(targets)})
        try:
            self._server = ThreadingHTTPServer((address, port), handler)
        except OSError as exc:
            raise ConformanceError(f"the local mesh's metrics cannot listen on {address}:{port}: "
                                   f"{exc.strerror or exc}") from None
        self._server.daemon_threads = True
        self.address = f"{address}:{self._server.server_address[1]}"  # the port bound, when asked for 0
        self.targets_url = f"http://{self.address}{TARGETS_PATH}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="meshconf-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    scrape: Scrape
    targets: Targets

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == TARGETS_PATH:
            self._reply(200, json.dumps(self.targets()).encode(), "application/json")
            return
        pods = parse_qs(url.query).get("pod", [])
        if url.path != STATS_PATH or len(pods) != 1:
            self._reply(404, f"GET {STATS_PATH}?pod=<namespace>/<name>\n".encode())
            return
        try:
            body = self.scrape(pods[0])
        # The pod's Envoy did not answer, or its access log holds a record that cannot be counted.
        except (ConformanceError, OSError, ValueError) as exc:
            self._reply(503, f"{exc}\n".encode())
            return
        if body is None:
            self._reply(404, f"no pod {pods[0]} with a proxy\n".encode())
            return
        self._reply(200, body, CONTENT_TYPE)

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per scrape per pod per second would drown the harness's output
