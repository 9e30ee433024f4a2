"""Scalar values of Istio and Gateway API fields, parsed as their validation parses them.

Both the subset check (istio_subset.py) and the translator read these, so they live
apart from both.
"""

import re
from http import HTTPStatus

from conformance.errors import ManifestError

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_NANOS = {
    "h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "µs": 10**3, "ns": 1,
}


def duration_nanos(text: str, where: str) -> int:
    """A Go/Istio/Gateway API duration ("2s", "1m30s", "250ms") in nanoseconds."""
    parts = _DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ManifestError(f"{where}: {text!r} is not a duration (e.g. 2s, 500ms)")
    nanos = 0
    for number, unit in parts:
        whole, _, fraction = number.partition(".")
        scale = _NANOS[unit]
        nanos += int(whole or 0) * scale + int(fraction or 0) * scale // 10 ** len(fraction or "")
    return nanos


def is_http_status(text: str) -> bool:
    """Whether Go's http.StatusText knows the code (Python's HTTPStatus holds the same codes)."""
    if not text.isdigit():
        return False
    try:
        HTTPStatus(int(text))
    except ValueError:
        return False
    return True
