"""How an app reaches another service by its Kubernetes name.

With a sidecar (--proxy) every request goes to the proxy in absolute form and Envoy
routes on the Host. Without one, the name is resolved through the registry file the
harness writes, and an endpoint is picked at random per connection, as kube-proxy does.
"""

import json
import random
import socket
from http.client import HTTPConnection, HTTPException, IncompleteRead
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 10.0
SVC_SUFFIX = "svc.cluster.local"


class UnknownHost(ConnectionError):
    """The name does not resolve: the local equivalent of a DNS failure."""


class Url(NamedTuple):
    host: str
    port: int
    authority: str  # as written in the URL; it becomes the Host header
    path: str  # origin-form request target, query included

    @property
    def absolute(self) -> str:
        return f"http://{self.authority}{self.path}"


class Response(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def parse_url(url: str) -> Url:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported: {url!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Url(parts.hostname.lower(), parts.port or 80, parts.netloc, path)


def service_key(host: str, port: int, namespace: str) -> str:
    """The registry key for a name as a pod in namespace would resolve it."""
    labels = host.rstrip(".").split(".")
    if len(labels) == 1:  # "reviews": the pod's own namespace
        labels += [namespace]
    if len(labels) == 2:  # "reviews.other"
        labels += ["svc"]
    if len(labels) == 3 and labels[2] == "svc":  # "reviews.other.svc"
        labels += SVC_SUFFIX.split(".")[1:]
    return f"{'.'.join(labels)}:{port}"


def read_registry(path: Path) -> dict[str, list[str]]:
    # Re-read on every connection: the harness rewrites it as pods come and go.
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"registry {path} unreadable: {exc}") from None
    return data if isinstance(data, dict) else {}


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected IP:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


def describe_error(exc: BaseException) -> str:
    """A short, curl-like name for a request that got no HTTP response."""
    if isinstance(exc, UnknownHost):
        return "unknown host"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, IncompleteRead)):
        return "connection reset"
    if isinstance(exc, HTTPException):
        return f"protocol error: {type(exc).__name__}"
    return f"connection error: {exc}"


class Outbound:
    def __init__(self, namespace: str, proxy: tuple[str, int] | None, registry: Path | None) -> None:
        self.namespace = namespace
        self.proxy = proxy
        self.registry = registry

    def destination(self, url: Url) -> str:
        """What one connection is bound to: the proxy, or one service (or IP) of the registry."""
        if self.proxy:
            return "proxy"
        if _is_ip(url.host):
            return f"{url.host}:{url.port}"
        return service_key(url.host, url.port, self.namespace)

    def connect_address(self, url: Url) -> tuple[str, int]:
        if self.proxy:
            return self.proxy
        if _is_ip(url.host):
            return url.host, url.port
        key = service_key(url.host, url.port, self.namespace)
        if self.registry is None:
            raise UnknownHost(f"cannot resolve {url.host}: no registry")
        endpoints = read_registry(self.registry).get(key)
        if endpoints is None:
            raise UnknownHost(f"cannot resolve {key}")
        if not endpoints:  # a Service with no ready pods: kube-proxy rejects the connection
            raise ConnectionRefusedError(f"no endpoints for {key}")
        return split_address(random.choice(endpoints))

    def request_target(self, url: Url) -> str:
        return url.absolute if self.proxy else url.path

    def session(self, timeout: float = DEFAULT_TIMEOUT) -> "Session":
        return Session(self, timeout)

    def fetch(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        body: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Response:
        """One request on a fresh connection. Raises OSError/HTTPException when there is no response."""
        with self.session(timeout) as session:
            return session.send(parse_url(url), method, headers or {}, body)


class Session:
    """One persistent keep-alive connection, reopened after an error or for another destination."""

    def __init__(self, outbound: Outbound, timeout: float) -> None:
        self._outbound = outbound
        self._timeout = timeout
        self._conn: HTTPConnection | None = None
        self._destination: str | None = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def send(self, url: Url, method: str, headers: dict[str, str], body: bytes | None) -> Response:
        destination = self._outbound.destination(url)
        if self._conn is None or destination != self._destination:
            self.close()
            host, port = self._outbound.connect_address(url)
            self._conn = HTTPConnection(host, port, timeout=self._timeout)
            self._destination = destination
        all_headers = {"Host": url.authority}
        for name, value in headers.items():
            if name.lower() == "host":
                all_headers.pop("Host", None)
            all_headers[name] = value
        try:
            self._conn.request(method, self._outbound.request_target(url), body=body, headers=all_headers)
            response = self._conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()  # the connection state is unknown: start over on the next request
            raise
        merged: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        if response.will_close:
            self.close()
        return Response(response.status, merged, data)
