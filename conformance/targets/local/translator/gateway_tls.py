"""TLS at the ingress gateway: HTTPS servers terminating TLS with a credentialName's key pair, and
HTTP servers redirecting to HTTPS, as istiod builds them (istio/istio tag 1.28.0):

- each HTTPS server is one filter chain of its port's listener, matching the SNI of its hosts
  (pilot/pkg/networking/core/gateway.go buildGatewayTCPBasedFilterChains,
  createGatewayHTTPFilterChainOpts; pilot/pkg/model/gateway.go GetSNIHostsForServer; listener.go
  toFilterChainMatch: a host `*` matches any SNI), terminating TLS with the SDS secret
  `kubernetes://<credentialName>` (listener.go BuildListenerTLSContext,
  pilot/pkg/security/model/authentication.go ApplyCredentialSDSToServerCommonTLSContext), and routing
  by its own route config `https.<port>.<port name>.<gateway>.<namespace>` (model/gateway.go
  gatewayRDSRouteName); a TLS inspector reads the SNI (listener.go buildGatewayListener). A
  connection whose SNI no chain matches is closed: no certificate is presented;
- an HTTP server with tls.httpsRedirect makes each of its hosts' virtual hosts answer 301 to https
  (require_tls ALL), with or without a VirtualService (gateway.go buildGatewayHTTPRouteConfig).
"""

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from conformance.targets.local import credentials
from conformance.targets.local.istio_subset_gateway_servers import HTTPS
from conformance.targets.local.translator.clusters_listeners import hcm_filter
from conformance.targets.local.translator.mtls import SERVER_HTTP_ALPNS, sds_secret, tls_inspector
from conformance.targets.local.translator.mutants import GATEWAY_IGNORES_SNI
from conformance.targets.local.translator.resources import DOWNSTREAM_TLS_TYPE, SECRET_TYPE, TLS_SOCKET

Doc = Mapping[str, Any]
# listener.go defaultGatewayTransportSocketConnectTimeout: a handshake must end within 15 s.
TRANSPORT_SOCKET_CONNECT_TIMEOUT = "15s"
# The SDS resource of a credentialName (pilot/pkg/model/credentials/resource.go KubernetesSecretType).
CREDENTIAL_PREFIX = "kubernetes://"


def is_https(server: Doc) -> bool:
    return str((server.get("port") or {}).get("protocol", "")).upper() == HTTPS


def https_route_name(gateway: Doc, server: Doc) -> str:
    """gatewayRDSRouteName for an HTTPS server terminating TLS (the server's own port number)."""
    metadata = gateway["metadata"]
    port = server["port"]
    return f"https.{port['number']}.{port.get('name', '')}.{metadata['name']}.{metadata['namespace']}"


def sni_hosts(server: Doc) -> list[str]:
    """GetSNIHostsForServer: the hosts without their namespace, once each, sorted."""
    return sorted({host.split("/", 1)[1] if "/" in host else host for host in server.get("hosts") or []})


def credential_name(server: Doc) -> str:
    return str(server["tls"]["credentialName"])


def https_filter_chain(server: Doc, hcm: dict[str, Any]) -> dict[str, Any]:
    """The chain of one HTTPS server: its SNI match (none for a host `*`), its TLS context, its
    connection manager. The server's name, when it has one, is the manager's stat prefix as given
    (createGatewayHTTPFilterChainOpts statPrefix: server.Name)."""
    if server.get("name"):
        hcm["stat_prefix"] = str(server["name"])
    hosts = sni_hosts(server)
    chain: dict[str, Any] = {
        "filters": [hcm_filter(hcm)],
        "transport_socket": {"name": TLS_SOCKET, "typed_config": server_tls_context(server)},
        "transport_socket_connect_timeout": TRANSPORT_SOCKET_CONNECT_TIMEOUT,
    }
    if "*" not in hosts:
        chain["filter_chain_match"] = {"server_names": hosts}
    return chain


def server_tls_context(server: Doc) -> dict[str, Any]:
    """SIMPLE: the credential's certificate, no client certificate asked for, HTTP's ALPN
    (BuildListenerTLSContext with util.ALPNHttp; no TLS parameters unless the server sets them)."""
    common = {
        "alpn_protocols": SERVER_HTTP_ALPNS,
        "tls_certificate_sds_secret_configs": [sds_secret(CREDENTIAL_PREFIX + credential_name(server))],
    }
    return {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": common, "require_client_certificate": False}


def https_listener_fields(chains: list[dict[str, Any]], mutants: frozenset[str]) -> dict[str, Any]:
    """The listener's chains and the TLS inspector that reads the SNI they match.

    The gateway-ignores-sni mutant: the first chain matches any SNI, so a name no server has gets
    the first server's certificate instead of a closed connection.
    """
    chains = copy.deepcopy(chains)
    if GATEWAY_IGNORES_SNI in mutants and chains:
        chains[0].pop("filter_chain_match", None)
    return {"listener_filters": [tls_inspector()], "filter_chains": chains}


def with_https_redirects(virtual_hosts: list[dict], servers: Iterable[tuple[Doc, Doc]], port: int) -> list[dict]:
    """The port's virtual hosts with require_tls ALL on every host of a server with httpsRedirect,
    and a virtual host without routes for such a host no VirtualService gave one; sorted by name."""
    by_domain = {vhost["domains"][0]: vhost for vhost in virtual_hosts}
    for _, server in servers:
        if not (server.get("tls") or {}).get("httpsRedirect"):
            continue
        for host in server.get("hosts") or []:
            host = host.lower()
            vhost = by_domain.setdefault(host, {"name": f"{host}:{port}", "domains": [host],
                                                "include_request_attempt_count": True, "routes": []})
            vhost["require_tls"] = "ALL"
    return sorted(by_domain.values(), key=lambda vhost: vhost["name"])


def credential_secrets(secrets: Iterable[Doc], namespace: str) -> dict[str, dict[str, Any]]:
    """The SDS secrets a gateway in `namespace` may be served, by resource name (`kubernetes://<name>`,
    pilot/pkg/model/credentials/resource.go ToResourceName): each Secret of its own namespace with a
    valid key pair. istiod answers what the gateway asks for (pilot/pkg/xds/sds.go: the Secrets of its
    namespace, which its chart's Role lets its service account read), so a listener still draining
    after its Gateway went keeps its certificate; the control plane sends only the names asked for."""
    served: dict[str, dict[str, Any]] = {}
    for doc in secrets:
        name = doc["metadata"]["name"]
        pair = credentials.key_pair(doc) if doc["metadata"].get("namespace") == namespace else None
        if pair is not None:
            chain_pem, key_pem = pair
            # sds.go toEnvoyKeyCertSecret; Istio sends inline_bytes, inline_string is the same data in JSON.
            served[CREDENTIAL_PREFIX + name] = {
                "@type": SECRET_TYPE, "name": CREDENTIAL_PREFIX + name,
                "tls_certificate": {"certificate_chain": {"inline_string": chain_pem},
                                    "private_key": {"inline_string": key_pem}}}
    return served
