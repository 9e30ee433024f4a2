"""Go/Istio/Gateway API durations as Envoy's protobuf JSON durations."""

from conformance.targets.local.istio_values import duration_nanos


def envoy_duration(text: str, where: str) -> str:
    """A Go/Istio duration ("2s", "1m30s", "250ms") as protobuf JSON ("90s", "0.250000000s")."""
    seconds, rest = divmod(duration_nanos(text, where), 10**9)
    return f"{seconds}.{rest:09d}s" if rest else f"{seconds}s"
