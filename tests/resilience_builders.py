"""Shared helpers of the resilience tests: DestinationRule traffic policies and the upstream they
are tried on; on a cluster, the proxies' stats as pilot-agent prints them and a stand-in for a
client sidecar's circuit breaker.

Test files import these from here; the rest of the shared helpers are in tests/builders.py and
tests/envoy_builders.py.
"""

import http.server
import itertools
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from tests.builders import ISTIO_API, NS, metadata

# Istio's circuit-breaking task (istio.io docs/tasks/traffic-management/circuit-breaking).
TASK_POOL = {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1}}
WEB_CLUSTER = f"outbound|9080||web.{NS}.svc.cluster.local"


def traffic_rule(host: str, policy: dict, subsets: Sequence[str] = (), namespace: str = NS) -> dict:
    spec: dict[str, Any] = {"host": host, "trafficPolicy": policy}
    if subsets:
        spec["subsets"] = [{"name": s, "labels": {"version": s}} for s in subsets]
    return {"apiVersion": ISTIO_API, "kind": "DestinationRule", "metadata": metadata(host, namespace), "spec": spec}


# ---------------------------------------------------------------------------------------------
# On a cluster: the proxies' stats as pilot-agent prints them, and the client's sidecar refusing
# requests as a circuit breaker does

# What suites/test_resilience.py sends to and reads: httpbin's (and flaky's) Service port, and the
# container port behind it, which names httpbin's inbound HTTP manager.
HTTPBIN_PORT, HTTPBIN_TARGET_PORT = 8000, 8080
# Envoy's local reply to a request its circuit breaker refused: 503 with this body, marked
# x-envoy-overloaded: true unless the router suppresses Envoy's headers, which Istio's sidecars do
# not by default (envoyproxy/envoy source/common/router/router.cc; istio/istio
# pilot/pkg/networking/core/listener_builder.go, SuppressDebugHeaders).
OVERFLOW_BODY = "upstream connect error or disconnect/reset before headers. reset reason: overflow"


def _stats_text(stats: Mapping[str, int], histograms: Sequence[str] = ()) -> str:
    """Envoy's admin /stats as pilot-agent request GET stats prints it: `name: value` sorted by
    name, then the histograms as quantiles."""
    lines = [f"{name}: {value}" for name, value in sorted(stats.items())]
    return "\n".join([*lines, *(f"{h}: P0(nan,0) P25(nan,1.025) P50(nan,2.05) P100(nan,12)" for h in histograms), ""])


def client_proxy_stats(ns: str, overflow: int, retries: int, ejections: int, omit: str = "") -> str:
    """curl's proxy on Istio 1.24+ ("<cluster>;." names): Istio's required stats and what its
    proxy.istio.io/config keeps (manifests/clients/curl.yaml), i.e. the three counters the suite
    reads beside their near misses: the same counter of other clusters (the xDS cluster, another
    port, another worker's namespace, which a parallel run's sidecars also see) and counters whose
    names extend it, each with a value of its own. `omit` leaves out the suite's counter of that name."""
    httpbin, flaky = (f"cluster.outbound|{HTTPBIN_PORT}||{s}.{ns}.svc.cluster.local;." for s in ("httpbin", "flaky"))
    other = f"cluster.outbound|{HTTPBIN_PORT}||httpbin.{ns}-gw1.svc.cluster.local;."
    read = {f"{httpbin}upstream_rq_pending_overflow": overflow, f"{httpbin}upstream_rq_retry": retries,
            f"{flaky}outlier_detection.ejections_enforced_total": ejections}
    near_misses = {
        "cluster.xds-grpc.upstream_rq_pending_overflow": 2,
        f"cluster.outbound|80||curl.{ns}.svc.cluster.local;.upstream_rq_pending_overflow": 3,
        f"{other}upstream_rq_pending_overflow": 40 + overflow,
        f"{other}upstream_rq_retry": 50 + retries,
        f"{httpbin}upstream_rq_retry_backoff_exponential": retries,
        f"{httpbin}upstream_rq_retry_backoff_ratelimited": 0,
        f"{httpbin}upstream_rq_retry_limit_exceeded": 4 + retries // 3,
        f"{httpbin}upstream_rq_retry_overflow": 1,
        f"{httpbin}upstream_rq_retry_success": retries // 2,
        f"{flaky}outlier_detection.ejections_active": min(ejections, 1),
        f"{flaky}outlier_detection.ejections_detected_consecutive_5xx": ejections + 1,
        f"{flaky}outlier_detection.ejections_enforced_consecutive_5xx": ejections,
        f"{flaky}outlier_detection.ejections_overflow": 0,
        f"{flaky}outlier_detection.ejections_total": ejections,
        f"cluster.outbound|{HTTPBIN_PORT}||flaky.{ns}-gw1.svc.cluster.local;.outlier_detection.ejections_enforced_total": 9,
    }
    required = {"cluster_manager.cds.update_success": 7, "listener_manager.total_listeners_active": 21, "server.live": 1}
    kept = {name: value for name, value in read.items() if not (omit and name.endswith(f";.{omit}"))}
    return _stats_text({**kept, **near_misses, **required}, ["cluster.xds-grpc.upstream_cx_length_ms"])


def server_proxy_stats(received: int) -> str:
    """httpbin's proxy on Istio 1.24+: Istio's required stats and what its proxy.istio.io/config
    keeps (manifests/clients/httpbin.yaml), the inbound manager's request count among them."""
    inbound = f"http.inbound_0.0.0.0_{HTTPBIN_TARGET_PORT};."
    stats = {
        f"{inbound}downstream_rq_total": received,
        f"{inbound}rbac.allowed": 0,
        f"{inbound}rbac.denied": 0,
        "listener.0.0.0.0_15006.no_filter_chain_match": 0,
        "listener.0.0.0.0_15006.ssl.handshake": received,
        "server.live": 1,
    }
    return _stats_text(stats, [f"{inbound}downstream_rq_time"])


class RefusingSidecar:
    """Stands in for the client's sidecar under a connection pool limit, on 127.0.0.1: of the
    requests in arrival order, every second one is refused with Envoy's overflow reply (or, with
    `marked` off, with a plain 503 such as an upstream's own), the others answered 200. Which ones
    Envoy refuses depends on timing (proven on real Envoy in tests/test_resilience_envoy.py); here
    only what crosses the exec into the pod is at stake."""

    def __init__(self, marked: bool = True) -> None:
        self.refused = 0
        self._arrivals = itertools.count(1)
        self._lock = threading.Lock()
        sidecar = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with sidecar._lock:
                    refuse = next(sidecar._arrivals) % 2 == 0
                    sidecar.refused += refuse
                body = OVERFLOW_BODY if refuse else json.dumps({"url": self.path})
                self.send_response(503 if refuse else 200)
                if refuse and marked:
                    self.send_header("x-envoy-overloaded", "true")
                self.send_header("content-type", "text/plain" if refuse else "application/json")
                self.send_header("content-length", str(len(body)))
                self.send_header("server", "envoy")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def __enter__(self) -> "RefusingSidecar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
