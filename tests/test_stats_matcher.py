"""The stats the local mesh's proxies keep, as Istio's (istio/istio 1.28.0 pkg/bootstrap/config.go
getStatsOptions and tools/packaging/common/envoy_bootstrap.json stats_config.stats_matcher): the
matcher built from a pod's annotations, then real Envoys and a whole local mesh dropping the rest.
"""

import re
from dataclasses import replace
from pathlib import Path

import pytest

from conformance.errors import ManifestError
from conformance.probes import envoy_stats
from conformance.targets.local import workloads
from conformance.targets.local.mesh import LocalMesh
from conformance.targets.local.model import MeshState, Pod, Service, ServicePort, StatsInclusions
from conformance.targets.local.objects import namespace_doc
from conformance.targets.local.pods import pod_document, pod_model
from conformance.targets.local.xds.bootstrap import bootstrap
from conformance.targets.local.xds.stats_matcher import stats_inclusions, stats_matcher
from tests.builders import NS, manifest_docs, running_local_mesh
from tests.envoy_builders import Proxies, envoy_counters, injected_pod, loopback_addresses

POD_IP = "10.1.2.3"
WHERE = "pod ns/p"
# What config.go's parseOption appends to every pod's own inclusions, between the template's
# fixed "reporter=" first and "component", "istio" last (as pkg/bootstrap/testdata/default_golden.json).
REQUIRED_PREFIXES = [{"prefix": p} for p in ("cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm")]
REQUIRED_SUFFIXES = [{"suffix": s} for s in ("rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied")]
REQUIRED_REGEXPS = [{"safe_regex": {"regex": "vhost\\..*\\.route\\..*"}}]
FIRST = [{"prefix": "reporter="}]
LAST = [{"prefix": "component"}, {"prefix": "istio"}]


def patterns(annotations: dict[str, str]) -> list[dict]:
    return stats_matcher(stats_inclusions(annotations, WHERE), POD_IP)["inclusion_list"]["patterns"]


# ---------------------------------------------------------------------------------------------
# The matcher, as Istio renders it


def test_a_pod_without_annotations_keeps_only_istios_required_stats() -> None:
    assert patterns({}) == FIRST + REQUIRED_PREFIXES + REQUIRED_SUFFIXES + REQUIRED_REGEXPS + LAST


def test_proxy_stats_matcher_inclusions_come_before_the_required_ones_of_their_kind() -> None:
    config = ('proxyStatsMatcher:\n  inclusionPrefixes: ["cluster.outbound", "http.{pod_ip}_"]\n'
              '  inclusionSuffixes: [upstream_rq_timeout]\n  inclusionRegexps: [".*\\\\.ssl\\\\..*", ".*fault.*"]\n'
              'holdApplicationUntilProxyStarts: true\n')  # other ProxyConfig fields: not the matcher's
    assert patterns({"proxy.istio.io/config": config}) == [
        *FIRST,
        {"prefix": "cluster.outbound"}, {"prefix": f"http.{POD_IP}_"}, *REQUIRED_PREFIXES,
        {"suffix": "upstream_rq_timeout"}, *REQUIRED_SUFFIXES,
        {"safe_regex": {"regex": ".*\\.ssl\\..*"}}, {"safe_regex": {"regex": ".*fault.*"}}, *REQUIRED_REGEXPS,
        *LAST,
    ]


def test_the_older_annotations_replace_proxy_stats_matcher_kind_by_kind() -> None:
    """As pkg/bootstrap/testdata/stats_inclusion_golden.json: the comma-separated annotation wins
    over proxyStatsMatcher's list of its kind (never merged); the other kinds keep proxyStatsMatcher's."""
    annotations = {
        "proxy.istio.io/config": "proxyStatsMatcher: {inclusionPrefixes: [ignored], inclusionSuffixes: [kept]}",
        "sidecar.istio.io/statsInclusionPrefixes": "prefix1,http.{pod_ip}_",
        "sidecar.istio.io/statsInclusionRegexps": "http.[0-9]*_8080.downstream_rq_time",
        "sidecar.istio.io/statsInclusionSuffixes": "",  # empty: as unset
    }
    assert patterns(annotations) == [
        *FIRST, {"prefix": "prefix1"}, {"prefix": f"http.{POD_IP}_"}, *REQUIRED_PREFIXES,
        {"suffix": "kept"}, *REQUIRED_SUFFIXES,
        {"safe_regex": {"regex": "http.[0-9]*_8080.downstream_rq_time"}}, *REQUIRED_REGEXPS, *LAST,
    ]


@pytest.mark.parametrize(("config", "refused"), [
    ("proxyStatsMatcher: [", "is not YAML"),
    ("- a list", "must be a ProxyConfig mapping"),
    ("proxyStatsMatcher: everything", "proxyStatsMatcher must be a mapping"),
    ("proxyStatsMatcher: {inclusionRegexps: .*}", r"proxyStatsMatcher\.inclusionRegexps must be a list of strings"),
])
def test_a_malformed_proxy_config_annotation_is_refused_naming_the_pod(config: str, refused: str) -> None:
    with pytest.raises(ManifestError, match=f"^{WHERE}: .*{refused}"):
        stats_inclusions({"proxy.istio.io/config": config}, WHERE)


@pytest.mark.parametrize(("manifest", "asked"), [
    # What the suites read from these proxies, among what the manifests ask for.
    ("clients/httpbin.yaml", StatsInclusions(regexps=(".*\\.ssl\\..*", ".*no_filter_chain_match"))),
    ("clients/curl.yaml", StatsInclusions(regexps=(".*fault.*",))),
    ("clients/fortio.yaml", StatsInclusions(prefixes=("cluster.outbound",))),
])
def test_the_mesh_reads_each_pods_inclusions_from_its_annotations(manifest: str, asked: StatsInclusions) -> None:
    pod = _pod_of(manifest)
    assert pod.stats_inclusions is not None
    for kind in ("prefixes", "suffixes", "regexps"):
        assert set(getattr(asked, kind)) <= set(getattr(pod.stats_inclusions, kind)), kind
    rendered = bootstrap(pod, ("127.0.0.1", 15010))["stats_config"]
    assert rendered == {"stats_matcher": stats_matcher(pod.stats_inclusions, POD_IP)}


def test_the_gateway_keeps_istios_required_stats_only() -> None:
    """Istio's gateways are bootstrapped as its sidecars, and neither its gateway charts nor its
    profiles ask for more."""
    pod = _pod_of("local/ingressgateway.yaml")
    assert pod.proxy == "gateway" and pod.stats_inclusions == StatsInclusions()
    rendered = bootstrap(pod, ("127.0.0.1", 15010))["stats_config"]["stats_matcher"]["inclusion_list"]["patterns"]
    assert rendered == FIRST + REQUIRED_PREFIXES + REQUIRED_SUFFIXES + REQUIRED_REGEXPS + LAST


def _pod_of(manifest: str) -> Pod:
    [deployment] = manifest_docs(manifest, "Deployment")
    workload = workloads.workload(deployment, NS)
    return pod_model(pod_document(workload, "p"), workload, POD_IP)


def test_a_pod_built_without_inclusions_has_no_matcher_and_keeps_every_stat() -> None:
    pod = injected_pod("httpbin", POD_IP, (8080,))
    assert pod.stats_inclusions is None and "stats_config" not in bootstrap(pod, ("127.0.0.1", 15010))


# ---------------------------------------------------------------------------------------------
# Real Envoys drop what the matcher leaves out


def test_envoy_drops_the_stats_the_matcher_leaves_out(tmp_path: Path, loopback_ips: list[str]) -> None:
    """Three httpbin sidecars (PERMISSIVE: a TLS chain on 8080) that differ only in their inclusions:
    without a matcher every stat is there; with Istio's required ones only, the listener's TLS and
    the inbound cluster's stats are gone; with `.*\\.ssl\\..*` the TLS ones are back."""
    ips = loopback_addresses(loopback_ips, 3)
    variants = {"everything": None, "required": StatsInclusions(), "ssl": StatsInclusions(regexps=(r".*\.ssl\..*",))}
    pods = {name: replace(injected_pod(f"httpbin-{name}", ip, (8080,), labels={"app": "httpbin"}),
                          stats_inclusions=inclusions)
            for (name, inclusions), ip in zip(variants.items(), ips, strict=True)}
    state = MeshState((Service("httpbin", NS, (ServicePort("http", 8000, 8080),), {"app": "httpbin"}),),
                      tuple(pods.values()))
    with Proxies(tmp_path) as proxies:
        stats = {name: envoy_counters(proxies.start(pod, state)) for name, pod in pods.items()}

    handshakes = r"listener\..*_8080\.ssl\.handshake"
    inbound = r"cluster\.inbound\|8080\|\|;\.upstream_rq_total"
    assert {name: (_has(stats[name], handshakes), _has(stats[name], inbound)) for name in pods} == {
        "everything": (True, True), "required": (False, False), "ssl": (True, False)}
    for name in pods:  # the required ones, everywhere
        assert "cluster_manager.cds.update_success" in stats[name] and "server.live" in stats[name]


# ---------------------------------------------------------------------------------------------
# A whole local mesh: the manifests' annotations reach the proxies


def test_the_local_meshs_proxies_keep_what_their_manifests_ask_for(tmp_path: Path) -> None:
    """httpbin's proxy keeps its listener's TLS and refused-connection counters (its annotation);
    curl's, without that annotation, keeps no listener stat; neither keeps its outbound clusters'
    request counters."""
    with running_local_mesh(tmp_path) as mesh:
        mesh.apply([namespace_doc("ns", {"istio-injection": "enabled"})], "ns")
        mesh.apply(manifest_docs("clients/httpbin.yaml") + manifest_docs("clients/curl.yaml"), "ns")
        mesh.wait_ready("ns", 30, 0.05)
        stats = _stats_by_app(mesh)
    httpbin, curl = stats["httpbin"], stats["curl"]
    assert _has(httpbin, r"listener\..*_8080\.ssl\.handshake")
    assert _has(httpbin, r"listener\..*_8080\.no_filter_chain_match")
    assert not _has(curl, r"listener\..*")
    for kept in (httpbin, curl):
        assert "cluster_manager.cds.update_success" in kept
        # The outbound cluster's request counters: Istio keeps none unless asked.
        assert not _has(kept, r"cluster\.outbound\|.*\.upstream_rq_total")


def _has(stats: dict[str, int], pattern: str) -> bool:
    return any(re.fullmatch(pattern, name) for name in stats)


def _stats_by_app(mesh: LocalMesh) -> dict[str, dict[str, int]]:
    found = {}
    for pod in mesh.running():
        assert pod.proxy is not None
        found[pod.model.labels["app"]] = envoy_stats.parse(pod.proxy.stats())
    return found
