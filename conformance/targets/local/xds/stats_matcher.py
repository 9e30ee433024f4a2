"""The stats a proxy keeps: Istio's bootstrap lets through only its required inclusions and those
the pod asks for; Envoy drops every other stat (istio/istio 1.28.0 pkg/bootstrap/config.go
getStatsOptions, rendered by tools/packaging/common/envoy_bootstrap.json stats_config.stats_matcher).

Sidecars and gateways alike: pilot-agent builds every proxy's bootstrap so, and neither Istio's
charts nor its profiles add inclusions.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from conformance.errors import ManifestError
from conformance.targets.local.model import StatsInclusions

# The ProxyConfig pilot-agent applies over the injected one (pilot/cmd/pilot-agent/config/config.go
# getMeshConfig); its proxyStatsMatcher is all the local mesh reads of it.
PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"
# The older annotations: comma-separated, each replacing proxyStatsMatcher's list of its kind.
PREFIXES_ANNOTATION = "sidecar.istio.io/statsInclusionPrefixes"
SUFFIXES_ANNOTATION = "sidecar.istio.io/statsInclusionSuffixes"
REGEXPS_ANNOTATION = "sidecar.istio.io/statsInclusionRegexps"

# config.go requiredEnvoyStatsMatcherInclusionPrefixes/Regexes and rbacEnvoyStatsMatcherInclusionSuffix:
# appended after the pod's own. downstream_cx_active joins the suffixes only under
# EXIT_ON_ZERO_ACTIVE_CONNECTIONS, which no proxy here sets.
REQUIRED_PREFIXES = ("cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm")
REQUIRED_SUFFIXES = ("rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied")
REQUIRED_REGEXPS = (r"vhost\..*\.route\..*",)
# The template's fixed patterns around them: Istio's standard metrics and istio_build.
# (workload_discovery is added only for metadata discovery, which needs delta xDS: not here.)
LEADING_PREFIXES = ("reporter=",)
TRAILING_PREFIXES = ("component", "istio")
# Replaced by each of the proxy's instance IPs (config.go substituteValues).
POD_IP = "{pod_ip}"

# ProxyStatsMatcher's fields by their JSON and proto names (jsonpb reads both).
_MATCHER_FIELD = ("proxyStatsMatcher", "proxy_stats_matcher")
_KINDS = {
    "prefixes": (PREFIXES_ANNOTATION, ("inclusionPrefixes", "inclusion_prefixes")),
    "suffixes": (SUFFIXES_ANNOTATION, ("inclusionSuffixes", "inclusion_suffixes")),
    "regexps": (REGEXPS_ANNOTATION, ("inclusionRegexps", "inclusion_regexps")),
}


def stats_inclusions(annotations: Mapping[str, str], where: str) -> StatsInclusions:
    """What a pod's annotations ask its proxy to keep: per kind, the older annotation when set and
    non-empty, else proxy.istio.io/config's proxyStatsMatcher (config.go parseOption: never both)."""
    matcher = _proxy_stats_matcher(annotations, where)
    chosen: dict[str, tuple[str, ...]] = {}
    for kind, (annotation, fields) in _KINDS.items():
        legacy = annotations.get(annotation) or ""
        if legacy:
            # Go's strings.Split: empty items are kept (an empty prefix keeps every stat).
            chosen[kind] = tuple(legacy.split(","))
        else:
            chosen[kind] = _strings(_first(matcher, fields), f"{where}: {PROXY_CONFIG_ANNOTATION} "
                                                             f"{_MATCHER_FIELD[0]}.{fields[0]}")
    return StatsInclusions(**chosen)


def stats_matcher(inclusions: StatsInclusions, pod_ip: str) -> dict[str, Any]:
    """Envoy's stats_matcher as Istio's bootstrap template renders it: the pod's inclusions of each
    kind, then the required ones, between the template's fixed prefixes."""
    prefixes = (*inclusions.prefixes, *REQUIRED_PREFIXES)
    suffixes = (*inclusions.suffixes, *REQUIRED_SUFFIXES)
    regexps = (*inclusions.regexps, *REQUIRED_REGEXPS)
    patterns = [
        *({"prefix": p} for p in LEADING_PREFIXES),
        *({"prefix": p} for p in _substituted(prefixes, pod_ip)),
        *({"suffix": s} for s in _substituted(suffixes, pod_ip)),
        *({"safe_regex": {"regex": r}} for r in _substituted(regexps, pod_ip)),
        *({"prefix": p} for p in TRAILING_PREFIXES),
    ]
    return {"inclusion_list": {"patterns": patterns}}


def _substituted(patterns: Sequence[str], pod_ip: str) -> tuple[str, ...]:
    # Istio substitutes each of the proxy's IPs; a local pod has one.
    return tuple(p.replace(POD_IP, pod_ip) for p in patterns)


def _proxy_stats_matcher(annotations: Mapping[str, str], where: str) -> Mapping[str, Any]:
    text = annotations.get(PROXY_CONFIG_ANNOTATION)
    if text is None:
        return {}
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ManifestError(f"{where}: annotation {PROXY_CONFIG_ANNOTATION} is not YAML: {error}") from None
    if not isinstance(config, Mapping):
        raise ManifestError(f"{where}: annotation {PROXY_CONFIG_ANNOTATION} must be a ProxyConfig mapping")
    matcher = _first(config, _MATCHER_FIELD) or {}
    if not isinstance(matcher, Mapping):
        raise ManifestError(f"{where}: {PROXY_CONFIG_ANNOTATION} {_MATCHER_FIELD[0]} must be a mapping")
    return matcher


def _first(mapping: Mapping[str, Any], names: Sequence[str]) -> Any:
    return next((mapping[name] for name in names if mapping.get(name) is not None), None)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ManifestError(f"{what} must be a list of strings")
    return tuple(value)
