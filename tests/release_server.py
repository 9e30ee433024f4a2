"""A local stand-in for Istio's release downloads (shared by test_istio and test_kind_up).

Tests ask for the `release_server` fixture by name (tests/conftest.py loads this module).

`release_server.url` is a base URL with the official layout, <base>/<v>/istio-<v>-<os>-<arch>.tar.gz
and its .sha256 beside it; publish() puts an archive there (by default for this machine's platform).
"""

import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from conformance.targets import istio_release


class ReleaseServer:
    """A local HTTP server answering from `files` (path -> bytes) and recording request paths."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.drop_next = 0  # close the connection without answering this many times
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if server.drop_next:
                    server.drop_next -= 1
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/releases"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def publish(self, version: str, archive: bytes, digest: str | None = None, platform: str | None = None) -> None:
        name = istio_release.archive_name(version, platform)
        digest = digest or hashlib.sha256(archive).hexdigest()
        self.files[f"/releases/{version}/{name}"] = archive
        # The format istio/release-builder writes: "<hex> <file name>\n".
        self.files[f"/releases/{version}/{name}.sha256"] = f"{digest} {name}\n".encode()


@pytest.fixture
def release_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReleaseServer]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    found = ReleaseServer()
    found.thread.start()
    yield found
    found.httpd.shutdown()
    found.httpd.server_close()


def tarball(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A .tar.gz of these files (those under a bin/ folder executable) and symlinks.

    Byte-for-byte the same on every call (gzip mtime 0): tests compare digests.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if "/bin/" in name else 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return gzip.compress(buffer.getvalue(), mtime=0)
