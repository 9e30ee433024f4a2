"""A few requests to the fake Kubernetes API from a fake tool (standard library only).

The server comes from the kubeconfig the tool was given, as the real tools read it; the
kubeconfigs tests write are JSON or plain block YAML, so one `server:` line is enough.
"""

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

_SERVER = re.compile(r'^\s*"?server"?\s*:\s*"?([^"\s,]+)"?', re.MULTILINE)


class Unreachable(Exception):
    """No API server answers at the kubeconfig's address."""


def server_of(kubeconfig: Path) -> str:
    """The API server URL of the kubeconfig's only cluster."""
    text = kubeconfig.read_text()
    servers = set(_SERVER.findall(text))
    if len(servers) != 1:
        raise ValueError(f"{kubeconfig}: expected one cluster server, found {sorted(servers) or 'none'}")
    return servers.pop()


class Api:
    def __init__(self, server: str, manager: str) -> None:
        self.server = server.rstrip("/")
        self.manager = manager  # the field manager of every write, as the real tool sends it

    def call(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        url = self.server + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, _decode(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read())
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise Unreachable(f'{method.title()} "{url}": {reason}') from None

    def reachable(self) -> None:
        self.call("GET", "/version")

    def get(self, path: str) -> dict[str, Any] | None:
        code, body = self.call("GET", path)
        return body if code == 200 else None

    def create(self, collection: str, obj: dict[str, Any]) -> tuple[int, Any]:
        return self.call("POST", collection, obj, {"fieldManager": self.manager})

    def merge_patch(self, path: str, patch: dict[str, Any]) -> tuple[int, Any]:
        return self.call("PATCH", path, patch, {"fieldManager": self.manager}, "application/merge-patch+json")

    def delete(self, path: str) -> tuple[int, Any]:
        return self.call("DELETE", path)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")
