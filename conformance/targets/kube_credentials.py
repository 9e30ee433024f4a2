"""Credentials in a kubeconfig: found, so they can be scrubbed from anything meshconf writes.

Debug bundles and error messages quote kubeconfigs, logs and API answers; no credential of
the kubeconfig may reach them, in any form (as written, base64-decoded, or as a Basic header).
"""

import base64
import os
from pathlib import Path
from typing import Any

import yaml

from conformance.errors import ConformanceError

# kubeconfig keys whose values are credentials (the last four are auth-provider config).
SECRET_KEYS = frozenset({
    "token", "client-key-data", "client-certificate-data", "password",
    "certificate-authority-data",
    "id-token", "refresh-token", "client-secret", "access-token",
})
REDACTED = "REDACTED"


def redacted_kubeconfig(path: str | os.PathLike[str]) -> str:
    """The kubeconfig as YAML with every credential value replaced by REDACTED (for debug bundles)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConformanceError(f"cannot read kubeconfig {path}: {type(exc).__name__}") from None
    return yaml.safe_dump(_redact(data), sort_keys=False)


def _redact(node: Any) -> Any:
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            if key in SECRET_KEYS and value is not None:
                out[key] = REDACTED
            elif key == "env" and isinstance(value, list):  # exec plugin env often holds keys
                out[key] = [{**e, "value": REDACTED} if isinstance(e, dict) and "value" in e else e
                            for e in value]
            else:
                out[key] = _redact(value)
        return out
    if isinstance(node, list):
        return [_redact(v) for v in node]
    return node


def kubeconfig_credentials(kubeconfig: Path) -> set[str]:
    """Every credential string in the kubeconfig, what it base64-decodes to (key and certificate
    data hold base64 PEM), and the Basic auth header value of a username and password."""
    try:
        data = yaml.safe_load(Path(kubeconfig).read_text())
    except (OSError, yaml.YAMLError):
        return set()
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in SECRET_KEYS and isinstance(value, str):
                    found.add(value)
                    found.update(_decoded(value))
                else:
                    walk(value)
            if isinstance(node.get("username"), str) and isinstance(node.get("password"), str):
                found.add(base64.b64encode(f"{node['username']}:{node['password']}".encode()).decode())
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    return {s for s in found if len(s) >= 4}


def _decoded(value: str) -> set[str]:
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return set()
    # Also each line: a PEM body may be quoted line by line (a log, a YAML block).
    return {text, text.strip(), *(line.strip() for line in text.splitlines())}
