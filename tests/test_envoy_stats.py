"""conformance.probes.envoy_stats: parsing Envoy's /stats text, and the stat names the suites sum
matching what Istio's proxies and the local mesh's proxies really call them."""

import re

import pytest

from conformance.probes import envoy_stats
from tests.builders import hcm_of, mesh, sidecar

# Stat names of the fault filter of one HTTP connection manager, and whether OUTBOUND_DELAYS must
# count it. Envoy roots an HCM's stats, the fault filter's included, at http.<stat_prefix>.
# (envoyproxy/envoy docs/root/configuration/http/http_filters/fault_filter.rst, "Statistics").
FAULT_DELAY_STATS = [
    # Istio 1.24+: "outbound_" + listener name + ";" (istio/istio pilot/pkg/networking/core/listener.go,
    # util.DelimitedStatsPrefix, pkg/config/constants StatPrefixDelimiter; releasenotes/notes/51761.yaml).
    pytest.param("http.outbound_0.0.0.0_8000;.fault.delays_injected", True, id="istio-outbound-wildcard"),
    pytest.param("http.outbound_0.0.0.0_9080;.fault.delays_injected", True, id="istio-outbound-9080"),
    pytest.param("http.outbound_10.96.12.7_8000;.fault.delays_injected", True, id="istio-outbound-service-ip"),
    pytest.param("http.outbound_[::]_8000;.fault.delays_injected", True, id="istio-outbound-ipv6"),
    # Istio's inbound side: "inbound_" + chain name + ";" (listener_inbound.go, inboundChainConfig.StatPrefix).
    pytest.param("http.inbound_0.0.0.0_8080;.fault.delays_injected", False, id="istio-inbound"),
    # The local mesh's sidecars before they took Istio's shape (translator/sidecar.py's prefixes
    # "outbound" and "inbound_<port>"); what the translator configures now is checked below.
    pytest.param("http.outbound.fault.delays_injected", True, id="local-outbound-plain"),
    pytest.param("http.inbound_9080.fault.delays_injected", False, id="local-inbound-plain"),
    # Other counters of the same managers are not delays.
    pytest.param("http.outbound_0.0.0.0_8000;.fault.aborts_injected", False, id="istio-aborts"),
    pytest.param("http.outbound_0.0.0.0_8000;.fault.active_faults", False, id="istio-active"),
]


@pytest.mark.parametrize(("name", "counted"), FAULT_DELAY_STATS)
def test_outbound_delays_match_the_proxies_stat_names(name: str, counted: bool) -> None:
    assert bool(re.fullmatch(envoy_stats.OUTBOUND_DELAYS, name)) is counted


def test_outbound_delays_match_what_the_local_mesh_configures() -> None:
    """Whatever stat prefixes the local mesh's translator gives a sidecar's managers, its outbound
    ones are counted and its inbound ones are not."""
    listeners = sidecar(mesh()).listeners
    by_direction: dict[str, list[str]] = {}
    for listener in listeners:
        name = f"http.{hcm_of(listener)['stat_prefix']}.fault.delays_injected"
        by_direction.setdefault(listener["traffic_direction"], []).append(name)
    assert by_direction.keys() == {"INBOUND", "OUTBOUND"}
    for name in by_direction["OUTBOUND"]:
        assert re.fullmatch(envoy_stats.OUTBOUND_DELAYS, name), name
    for name in by_direction["INBOUND"]:
        assert not re.fullmatch(envoy_stats.OUTBOUND_DELAYS, name), name


def test_total_sums_istios_outbound_delays_from_stats_text() -> None:
    # pilot-agent request GET stats of an Istio client proxy: one manager per outbound port.
    text = "\n".join([
        "http.outbound_0.0.0.0_8000;.fault.delays_injected: 7",
        "http.outbound_0.0.0.0_9080;.fault.delays_injected: 2",
        "http.inbound_0.0.0.0_8080;.fault.delays_injected: 40",
        "http.outbound_0.0.0.0_8000;.fault.aborts_injected: 5",
        "cluster.outbound|8000||httpbin.t.svc.cluster.local;.upstream_rq_200: 91",
        "http.outbound_0.0.0.0_8000;.downstream_rq_time: P0(nan,1.0) P25(nan,2.5)",
    ])
    stats = envoy_stats.parse(text)
    assert "http.outbound_0.0.0.0_8000;.downstream_rq_time" not in stats  # a histogram, not a number
    assert envoy_stats.total(stats, envoy_stats.OUTBOUND_DELAYS) == 9
