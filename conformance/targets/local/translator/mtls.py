"""Istio's mutual TLS as Envoy configuration: a sidecar's inbound filter chains per mode, and the
TLS its outbound clusters originate (auto mTLS, or a DestinationRule's ISTIO_MUTUAL / DISABLE).

Certificates are never in the configuration: every TLS context names the SDS secrets istio-agent
serves (`default`, the workload's certificate; `ROOTCA`, the mesh root). Istio's sidecars fetch them
from the agent (the `sds-grpc` cluster, istio/istio pkg/model/authentication.go); the local
control plane serves them on the proxy's ADS stream, which is where these configs ask for them.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from conformance.names import TLS_MODE_ISTIO, TLS_MODE_LABEL, spiffe_id
from conformance.targets.local.istio_subset_networking import ISTIO_MUTUAL, TLS_DISABLE
from conformance.targets.local.model import Pod
from conformance.targets.local.translator.index import MeshIndex
from conformance.targets.local.translator.mutants import SHARED_ACCOUNT, SHARED_IDENTITY
from conformance.targets.local.translator.peer_authentication import DISABLE, PERMISSIVE, STRICT
from conformance.targets.local.translator.resources import (
    ADS_SOURCE,
    DOWNSTREAM_TLS_TYPE,
    RAW_BUFFER_SOCKET,
    RAW_BUFFER_TYPE,
    ROOT_SECRET,
    TLS_INSPECTOR,
    TLS_INSPECTOR_TYPE,
    TLS_SOCKET,
    UPSTREAM_TLS_TYPE,
    WORKLOAD_SECRET,
)
from conformance.targets.local.translator.traffic_policy import port_policy

# The transport protocols the TLS inspector tells apart (istio/istio pilot/pkg/xds/filters/filters.go).
TLS_TRANSPORT = "tls"
RAW_BUFFER_TRANSPORT = "raw_buffer"
# The ALPN values of Istio's mutual TLS, which a PERMISSIVE HTTP chain matches to tell a mesh
# client's TLS from anything else (istio/istio pilot/pkg/networking/core/listener.go allIstioMtlsALPNs).
ALL_ISTIO_MTLS_ALPNS = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
# What a server's HTTP chain offers in the handshake, and what a sidecar's HTTP/1.1 cluster offers
# (istio/istio pilot/pkg/networking/util/util.go ALPNHttp, ALPNInMeshWithMxc).
SERVER_HTTP_ALPNS = ["h2", "http/1.1"]
CLIENT_MESH_ALPNS = ["istio-peer-exchange", "istio"]
# Inbound mutual TLS ciphers (TLS 1.2; TLS 1.3's are fixed) and versions (istio/istio
# pilot/pkg/security/authn/utils/utils.go SupportedCiphers, GetMinTLSVersion; meshMTLS unset).
SUPPORTED_CIPHERS = [
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-GCM-SHA256",
]
TLS_MIN = "TLSv1_2"
TLS_MAX = "TLSv1_3"
# Where an endpoint says which transport socket of its cluster to use (pilot/pkg/networking/util/
# util.go EnvoyTransportSocketMetadataKey), and the two transport socket matches of auto mTLS
# (pilot/pkg/networking/core/cluster_tls.go).
TRANSPORT_SOCKET_MATCH_KEY = "envoy.transport_socket_match"
MTLS_MATCH_NAME = f"tlsMode-{TLS_MODE_ISTIO}"
PLAINTEXT_MATCH_NAME = "tlsMode-disabled"


def sds_secret(name: str) -> dict[str, Any]:
    """An SdsSecretConfig naming one of istio-agent's secrets; like Istio's, it waits for the secret
    as long as it takes (pkg/model/authentication.go: InitialFetchTimeout 0)."""
    return {"name": name, "sds_config": ADS_SOURCE}


# ---------------------------------------------------------------------------------------------
# Inbound: a sidecar's listener on a container port


def tls_inspector() -> dict[str, Any]:
    """filters.go TLSInspector: it reads at most 512 bytes of a ClientHello."""
    return {"name": TLS_INSPECTOR, "typed_config": {"@type": TLS_INSPECTOR_TYPE, "initial_read_buffer_size": 512}}


def downstream_tls_context(verify_peer: bool = True) -> dict[str, Any]:
    """The server side of Istio's mutual TLS on an HTTP chain (authn/utils/utils.go BuildInboundTLS,
    pilot/pkg/security/model/authentication.go ApplyToCommonTLSContext): the workload's certificate;
    a client certificate required and verified against the mesh root, of any identity.

    verify_peer False is the no-peer-verification mutant: no client certificate asked for, none checked.
    """
    common: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": TLS_MIN, "tls_maximum_protocol_version": TLS_MAX,
                       "cipher_suites": SUPPORTED_CIPHERS},
        # Never "istio": that would hide the HTTP protocol from ALPN negotiation (utils.go).
        "alpn_protocols": SERVER_HTTP_ALPNS,
        "tls_certificate_sds_secret_configs": [sds_secret(WORKLOAD_SECRET)],
    }
    if not verify_peer:
        return {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": common}
    common["combined_validation_context"] = {
        "default_validation_context": {},
        "validation_context_sds_secret_config": sds_secret(ROOT_SECRET),
    }
    return {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": common, "require_client_certificate": True}


def inbound_filter_chains(mode: str, port: int, filters: Sequence[Mapping[str, Any]],
                          verify_peer: bool = True) -> list[dict[str, Any]]:
    """The filter chains of an HTTP port for its mode, each running `filters` (istio/istio
    pilot/pkg/networking/core/filterchain_options.go getFilterChainMatchOptions for
    ListenerProtocolHTTP, listener_inbound.go inboundChainForOpts):

    STRICT: TLS only, terminated with Istio's mutual TLS. PERMISSIVE: that, for a client whose
    ALPN says Istio, and plaintext. DISABLE: plaintext only. A connection no chain matches
    (plaintext under STRICT, TLS under DISABLE) is closed by Envoy.
    """
    mtls = {"filter_chain_match": _chain_match(port, TLS_TRANSPORT), "filters": list(filters),
            "transport_socket": {"name": TLS_SOCKET, "typed_config": downstream_tls_context(verify_peer)},
            "name": _chain_name(port)}
    plaintext = {"filter_chain_match": _chain_match(port, RAW_BUFFER_TRANSPORT), "filters": list(filters),
                 "name": _chain_name(port)}
    if mode == STRICT:
        return [mtls]
    if mode == PERMISSIVE:
        mtls["filter_chain_match"]["application_protocols"] = ALL_ISTIO_MTLS_ALPNS
        return [mtls, plaintext]
    if mode == DISABLE:
        return [plaintext]
    raise ValueError(f"no mutual TLS mode {mode!r}")


def inbound_listener_filters(chains: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The TLS inspector, when a chain matches on TLS (listener_inbound.go populateListenerFilters)."""
    needs_tls = any(c["filter_chain_match"].get("transport_protocol") == TLS_TRANSPORT for c in chains)
    return [tls_inspector()] if needs_tls else []


def _chain_match(port: int, transport: str) -> dict[str, Any]:
    """listener_inbound.go ToFilterChainMatch: the chain's target port and transport."""
    return {"destination_port": port, "transport_protocol": transport}


def _chain_name(port: int) -> str:
    """listener_inbound.go inboundChainConfig.Name: <bind>_<target port>, Istio's bind being 0.0.0.0."""
    return f"0.0.0.0_{port}"


# ---------------------------------------------------------------------------------------------
# Outbound: the TLS a cluster originates


def istio_mutual_sni(port: int, fqdn: str, subset: str = "") -> str:
    """istio/istio pilot/pkg/model/service.go BuildDNSSrvSubsetKey, the SNI of Istio's mutual TLS."""
    return f"outbound_.{port}_.{subset}_.{fqdn}"


def upstream_tls_socket(sni: str, identities: Sequence[str]) -> dict[str, Any]:
    """The client side of Istio's mutual TLS (cluster_tls.go buildUpstreamClusterTLSContext,
    ISTIO_MUTUAL): the workload's certificate; the server's verified against the mesh root and
    required to be one of `identities` (the SPIFFE ids of the service's workloads)."""
    context = {
        "@type": UPSTREAM_TLS_TYPE,
        "common_tls_context": {
            "tls_params": {"tls_minimum_protocol_version": TLS_MIN, "tls_maximum_protocol_version": TLS_MAX},
            "alpn_protocols": CLIENT_MESH_ALPNS,
            "tls_certificate_sds_secret_configs": [sds_secret(WORKLOAD_SECRET)],
            "combined_validation_context": {
                "default_validation_context": {"match_subject_alt_names": [{"exact": i} for i in identities]},
                "validation_context_sds_secret_config": sds_secret(ROOT_SECRET),
            },
        },
        "sni": sni,
    }
    return {"name": TLS_SOCKET, "typed_config": context}


def plaintext_socket() -> dict[str, Any]:
    return {"name": RAW_BUFFER_SOCKET, "typed_config": {"@type": RAW_BUFFER_TYPE}}


def auto_mtls_matches(tls_socket: Mapping[str, Any]) -> list[dict[str, Any]]:
    """cluster_tls.go applyUpstreamTLSSettings for auto-detected mTLS: Istio's mutual TLS to an
    endpoint whose metadata says tlsMode istio, plaintext to any other."""
    return [
        {"name": MTLS_MATCH_NAME, "match": {"tlsMode": TLS_MODE_ISTIO}, "transport_socket": dict(tls_socket)},
        {"name": PLAINTEXT_MATCH_NAME, "match": {}, "transport_socket": plaintext_socket()},
    ]


def destination_rule_tls(index: MeshIndex, fqdn: str, port: int) -> str | None:
    """The ClientTLSSettings mode the DestinationRule for `fqdn` sets on service port `port`, if any.

    A port-level setting for the port replaces the whole top-level policy, tls included
    (istio/istio pilot/pkg/networking/util/util.go GetPortLevelTrafficPolicy).
    """
    policy = port_policy(index.traffic_policies.get(fqdn), port)
    return None if policy is None else (policy.get("tls") or {}).get("mode")


def endpoint_tls_mode(index: MeshIndex, fqdn: str, port: int, subset: str = "") -> str | None:
    """The DestinationRule mode that decides an endpoint's tlsMode metadata (istio/istio
    pilot/pkg/xds/endpoints/mtls_checker.go tlsModeForDestinationRule): a port-level tls for the
    port, else the top-level tls; for a subset cluster, the subset's own policy, and the local
    mesh admits none."""
    policy = index.traffic_policies.get(fqdn)
    if policy is None or subset:
        return None
    mode = (policy.get("tls") or {}).get("mode")
    for settings in policy.get("portLevelSettings") or []:
        if int((settings.get("port") or {}).get("number", 0)) == port and settings.get("tls") is not None:
            return settings["tls"].get("mode")
    return mode


def cluster_tls(dr_mode: str | None, server_mode: str, sni: str, identities: Sequence[str]) -> dict[str, Any]:
    """The fields of an outbound EDS cluster that say what TLS it originates (cluster_tls.go
    buildUpstreamTLSSettings, meshConfig.enableAutoMtls true): a DestinationRule's DISABLE, none;
    its ISTIO_MUTUAL, Istio's mutual TLS to every endpoint; without one, auto mTLS, unless the
    service's namespace DISABLEs mutual TLS (server_mode)."""
    if dr_mode == TLS_DISABLE:
        return {}
    if dr_mode == ISTIO_MUTUAL:
        return {"transport_socket": upstream_tls_socket(sni, identities)}
    if dr_mode is not None:
        raise ValueError(f"DestinationRule tls mode {dr_mode!r} is not implemented by the local mesh")
    if server_mode == DISABLE:
        return {}
    return {"transport_socket_matches": auto_mtls_matches(upstream_tls_socket(sni, identities))}


def endpoint_gets_mtls(pod: Pod, dr_mode: str | None, port_mode: str) -> bool:
    """mtls_checker.go checkMtlsEnabled: a DestinationRule mode decides (ISTIO_MUTUAL: yes); else
    the pod must carry tlsMode istio (its sidecar was injected) and not DISABLE the target port."""
    if dr_mode is not None:
        return dr_mode == ISTIO_MUTUAL
    return pod.labels.get(TLS_MODE_LABEL) == TLS_MODE_ISTIO and port_mode != DISABLE


def mtls_endpoint_metadata() -> dict[str, Any]:
    """An endpoint's metadata saying it takes Istio's mutual TLS (util.go AppendLbEndpointMetadata)."""
    return {"filter_metadata": {TRANSPORT_SOCKET_MATCH_KEY: {"tlsMode": TLS_MODE_ISTIO}}}


def service_identities(pods: Sequence[Pod], mutants: frozenset[str] = frozenset()) -> list[str]:
    """The SPIFFE ids a client accepts from a service's servers: those of every pod it selects,
    sorted (istio/istio pilot/pkg/model/push_context.go initServiceAccounts); under the
    shared-identity mutant, the one identity every workload has."""
    if SHARED_IDENTITY in mutants:
        return [spiffe_id(*SHARED_ACCOUNT)]
    return sorted({spiffe_id(pod.namespace, pod.service_account) for pod in pods})
