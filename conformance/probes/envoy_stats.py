"""Envoy's admin /stats text ("name: value" per line), as numbers."""

import re


def parse(text: str) -> dict[str, int]:
    """Counters and gauges; histograms (non-integer summaries) are left out."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep and value.strip().lstrip("-").isdigit():
            values[name.strip()] = int(value)
    return values


def total(stats: dict[str, int], pattern: str) -> int:
    """Sum of every stat whose full name matches the regular expression."""
    matcher = re.compile(pattern)
    return sum(v for k, v in stats.items() if matcher.fullmatch(k))


# The client proxy's outbound HTTP connection managers, whatever their stat prefix
# (Istio: http.outbound_0.0.0.0_8000.*, the local mesh: http.outbound.*).
OUTBOUND_DELAYS = r"http\.outbound[^.]*\.fault\.delays_injected"
