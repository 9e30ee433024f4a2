"""The access log every proxy's HTTP connection managers write: the record the local mesh's Istio
metrics are made from, one JSON object per request, in a file in the proxy's directory.

The fields are Envoy's command operators: Istio's default JSON access log format (istio/istio
1.28.0 pilot/pkg/model/telemetry_logging.go EnvoyJSONLogFormatIstio) plus what istio_stats reads
from the stream and the connections (istio/proxy 1.28.0 source/extensions/filters/http/
istio_stats/istio_stats.cc IstioStatsFilter::log, populatePeerInfo): the certificates' URI SANs,
the request's content type and gRPC status, and which reporter the connection manager is.
Logging changes nothing in how a request is handled.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.errors import ConformanceError
from conformance.targets.local.model import Pod

# istio_stats' reporters: a sidecar's outbound and a gateway report as "source", a sidecar's
# inbound as "destination" (istio_stats.cc Reporter ClientSidecar, ServerSidecar).
SOURCE = "source"
DESTINATION = "destination"

FILE_LOGGER = "envoy.access_loggers.file"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
# Each proxy's access log, in its directory (envoy.EnvoyProxy.dir: <run dir>/proxies/<ns>.<pod>).
ACCESS_LOG_NAME = "access.log"

# Envoy renders a value that is one command operator with its type (a number for a status code
# or a duration), and an absent value as null.
FIELDS = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "duration": "%DURATION%",
    "authority": "%REQ(:AUTHORITY)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "route_name": "%ROUTE_NAME%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    # What istio_stats reads besides: the peers' identities (the URI SANs of the certificates of
    # each connection), and whether the request is gRPC (its content type) and how it ended.
    "downstream_peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
    "downstream_local_uri_san": "%DOWNSTREAM_LOCAL_URI_SAN%",
    "upstream_peer_uri_san": "%UPSTREAM_PEER_URI_SAN%",
    "upstream_local_uri_san": "%UPSTREAM_LOCAL_URI_SAN%",
    "content_type": "%REQ(CONTENT-TYPE)%",
    "grpc_status": "%GRPC_STATUS_NUMBER%",
}


def access_log_path(proxy_dir: Path) -> Path:
    return proxy_dir / ACCESS_LOG_NAME


def file_access_log(path: str, reporter: str) -> dict[str, Any]:
    """An Envoy file access log of one JSON line per request, naming its connection manager's reporter."""
    return {
        "name": FILE_LOGGER,
        "typed_config": {
            "@type": FILE_LOG_TYPE,
            "path": path,
            "log_format": {"json_format": {**FIELDS, "reporter": reporter}},
        },
    }


def access_logs(pod: Pod, reporter: str) -> list[dict[str, Any]]:
    """The access logs of a connection manager of `pod`'s proxy: none when the pod has no log file."""
    return [] if pod.access_log is None else [file_access_log(pod.access_log, reporter)]


@dataclass(frozen=True)
class LoggedRequest:
    """One access log record, absent values as "" (Envoy writes null, or "-" inside a string)."""

    reporter: str
    response_code: int
    response_flags: str
    response_code_details: str
    duration_ms: int | None  # None: the request never completed
    authority: str
    route_name: str
    upstream_cluster: str
    upstream_host: str
    downstream_remote_address: str
    downstream_local_address: str
    downstream_peer_uri_san: str
    downstream_local_uri_san: str
    upstream_peer_uri_san: str
    upstream_local_uri_san: str
    content_type: str
    grpc_status: str


def parse_record(line: str) -> LoggedRequest:
    fields = json.loads(line)

    def text(name: str) -> str:
        value = fields.get(name)
        return "" if value is None or value == "-" else str(value)

    duration = text("duration")
    return LoggedRequest(
        reporter=text("reporter"),
        response_code=int(text("response_code") or 0),
        # Envoy's "-" for no flag is also istio_stats' value (ResponseFlagUtils::toShortString).
        response_flags=str(fields.get("response_flags") or "-"),
        response_code_details=text("response_code_details"),
        duration_ms=int(duration) if duration else None,
        authority=text("authority"),
        route_name=text("route_name"),
        upstream_cluster=text("upstream_cluster"),
        upstream_host=text("upstream_host"),
        downstream_remote_address=text("downstream_remote_address"),
        downstream_local_address=text("downstream_local_address"),
        downstream_peer_uri_san=_first_san(text("downstream_peer_uri_san")),
        downstream_local_uri_san=_first_san(text("downstream_local_uri_san")),
        upstream_peer_uri_san=_first_san(text("upstream_peer_uri_san")),
        upstream_local_uri_san=_first_san(text("upstream_local_uri_san")),
        content_type=text("content_type"),
        grpc_status=text("grpc_status"),
    )


def _first_san(sans: str) -> str:
    """Envoy lists a certificate's URI SANs with commas; istio_stats takes the first."""
    return sans.split(",")[0]


class AccessLogTail:
    """The records a proxy wrote to its access log since the last read. Envoy writes whole lines,
    but a read may come between two writes of its buffer: a line without its end waits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def read(self) -> Iterator[LoggedRequest]:
        """Each new complete record, moving past it only once the caller has taken it: a line
        that does not parse, or whose record the caller fails on, stops this read and every later
        one there, with the error, and no record is lost or counted twice."""
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:  # nothing logged yet: Envoy creates the file with its first listener
            return
        start = 0
        while (end := data.find(b"\n", start) + 1) > 0:  # a line without its end is not written yet
            line, start = data[start:end], end
            if line.strip():
                yield self._parse(line)
            self._offset += len(line)

    def _parse(self, line: bytes) -> LoggedRequest:
        try:
            return parse_record(line.decode())
        except (ValueError, AttributeError) as exc:  # not JSON, not an object, or a field of the wrong type
            raise ConformanceError(f"{self.path}: the record at byte {self._offset} does not parse "
                                   f"({type(exc).__name__}: {exc}): {line[:200]!r}") from None
