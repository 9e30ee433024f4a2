"""Go/Istio/Gateway API durations as Envoy's protobuf JSON durations."""

import re

from conformance.errors import ManifestError

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_NANOS = {
    "h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "µs": 10**3, "ns": 1,
}


def envoy_duration(text: str, where: str) -> str:
    """A Go/Istio duration ("2s", "1m30s", "250ms") as protobuf JSON ("90s", "0.250000000s")."""
    seconds, rest = divmod(duration_nanos(text, where), 10**9)
    return f"{seconds}.{rest:09d}s" if rest else f"{seconds}s"


def duration_nanos(text: str, where: str) -> int:
    """A Go/Istio/Gateway API duration in nanoseconds."""
    parts = _DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ManifestError(f"{where}: {text!r} is not a duration (e.g. 2s, 500ms)")
    nanos = 0
    for number, unit in parts:
        whole, _, fraction = number.partition(".")
        scale = _NANOS[unit]
        nanos += int(whole or 0) * scale + int(fraction or 0) * scale // 10 ** len(fraction or "")
    return nanos
