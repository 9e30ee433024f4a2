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


# The client proxy's outbound HTTP connection managers. Istio's stat prefix is "outbound_" +
# the listener's name + ";" (istio/istio pilot/pkg/networking/core/listener.go with
# util.DelimitedStatsPrefix and pkg/config/constants StatPrefixDelimiter; the ";" since 1.24,
# releasenotes/notes/51761.yaml), e.g. http.outbound_0.0.0.0_8000;.fault.delays_injected: the
# listener name holds dots, so only the ";" ends it. A manager prefixed just "outbound" (the local
# mesh's sidecars before they took Istio's shape) matches too; inbound ones (http.inbound_...) never.
OUTBOUND_DELAYS = r"http\.outbound(?:_[^;]*;)?\.fault\.delays_injected"


def outbound_cluster(port: int, fqdn: str, stat: str, subset: str = "") -> str:
    """The regular expression of one stat of a client's outbound cluster, as Istio names it:
    cluster.outbound|<port>|<subset>|<fqdn>;.<stat> (istio/istio pilot/pkg/networking/core/
    cluster_builder.go: alt_stat_name with the ";" delimiter)."""
    return rf"cluster\.{re.escape(f'outbound|{port}|{subset}|{fqdn}')};\.{re.escape(stat)}"


def inbound_http(port: int, stat: str) -> str:
    """The regular expression of one stat of a server's inbound HTTP connection manager on a port:
    http.inbound_0.0.0.0_<port>;.<stat> (istio/istio pilot/pkg/networking/core/listener_inbound.go)."""
    return rf"http\.inbound_0\.0\.0\.0_{port};\.{re.escape(stat)}"
