"""The Istio Gateway servers the local mesh implements: plain HTTP (optionally redirecting to HTTPS)
and HTTPS terminating TLS in mode SIMPLE with a credentialName (translator/gateway_tls.py).

Refused, each with its reason: other protocols, the TLS modes Istio has besides SIMPLE (PASSTHROUGH,
the default when tls.mode is unset, MUTUAL, OPTIONAL_MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL), a
credentialName naming anything but a Secret of the gateway's namespace, and httpsRedirect on an HTTPS
server or with a namespaced host (`ns/host`).
"""

from collections.abc import Mapping
from typing import Any

from conformance.errors import UnsupportedResource
from conformance.targets.local.fields import ANY, Node

HTTP = "HTTP"
HTTPS = "HTTPS"
SIMPLE = "SIMPLE"
# ServerTLSSettings.mode's zero value (istio/api networking/v1alpha3/gateway.proto TLSmode).
DEFAULT_MODE = "PASSTHROUGH"
SERVER_TLS: Mapping[str, Node] = {"mode": ANY, "credentialName": ANY, "httpsRedirect": ANY}
# A credentialName with one of these prefixes is not a Secret of the gateway's namespace
# (istio/istio pilot/pkg/model/credentials/resource.go: kubernetes-gateway://, builtin://, sds://).
_NOT_A_LOCAL_SECRET = ("/", ":")


def check_servers(doc: Mapping[str, Any], name: str) -> None:
    for index, server in enumerate((doc.get("spec") or {}).get("servers") or []):
        where = f"{name}: spec.servers[{index}]"
        protocol = str((server.get("port") or {}).get("protocol", "")).upper()
        tls = server.get("tls")
        if protocol == HTTP:
            _check_redirect(tls, server, where)
        elif protocol == HTTPS:
            _check_https(tls, where)
        else:
            raise UnsupportedResource(
                f"{where}.port.protocol {(server.get('port') or {}).get('protocol')} is not implemented by "
                f"the local mesh (only {HTTP} and {HTTPS})")


def _check_redirect(tls: Mapping[str, Any] | None, server: Mapping[str, Any], where: str) -> None:
    if tls is None:
        return
    others = sorted(key for key, value in tls.items() if key != "httpsRedirect" and value is not None)
    if others:
        raise UnsupportedResource(f"{where}.tls.{others[0]} on an {HTTP} server is not implemented by the "
                                  "local mesh (only httpsRedirect)")
    if tls.get("httpsRedirect") and any("/" in host for host in server.get("hosts") or []):
        raise UnsupportedResource(f"{where}.tls.httpsRedirect with a namespaced host (ns/host) is not "
                                  "implemented by the local mesh")


def _check_https(tls: Mapping[str, Any] | None, where: str) -> None:
    if tls is None:
        raise UnsupportedResource(f"{where}: an {HTTPS} server without tls is not implemented by the local mesh")
    mode = str(tls.get("mode") or DEFAULT_MODE)
    if mode != SIMPLE:
        raise UnsupportedResource(f"{where}.tls.mode {mode} is not implemented by the local mesh (only {SIMPLE}: "
                                  "TLS terminated at the gateway with a credentialName)")
    credential = str(tls.get("credentialName") or "")
    if not credential or any(mark in credential for mark in _NOT_A_LOCAL_SECRET):
        raise UnsupportedResource(f"{where}.tls.credentialName {credential!r}: the local mesh implements only "
                                  "the name of a Secret in the gateway's namespace")
    if tls.get("httpsRedirect"):
        raise UnsupportedResource(f"{where}.tls.httpsRedirect on an {HTTPS} server is not implemented by the "
                                  "local mesh")
