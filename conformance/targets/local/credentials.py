"""Kubernetes Secrets holding a gateway's TLS key pair, and the key pair istiod reads of one.

The local API server stores a Secret as Kubernetes does: `data` values are base64, and a Secret of
type kubernetes.io/tls must have `tls.crt` and `tls.key` (kubernetes/kubernetes
pkg/apis/core/validation/validation.go ValidateSecret). istiod serves a gateway the key pair of the
Secret its Gateway's credentialName names (translator/gateway_tls.py): it reads `cert`/`key` first,
then `tls.crt`/`tls.key` (istio/istio pilot/pkg/credentials/kube/secrets.go extractCertAndKey), and
serves nothing for a Secret without a valid certificate (pilot/pkg/xds/sds.go generate,
VERIFY_SDS_CERTIFICATE), so the listener asking for it waits.
"""

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from conformance.errors import ManifestError, UnsupportedResource
from conformance.targets.local.fields import ANY, check_fields

KIND = "Secret"
API_VERSION = "v1"
TLS_TYPE = "kubernetes.io/tls"
OPAQUE_TYPE = "Opaque"
# The key pair's keys, in the order istiod looks for them (secrets.go GenericScrtCert/Key, TLSSecretCert/Key).
KEY_PAIRS = (("cert", "key"), ("tls.crt", "tls.key"))
ALLOWED: Mapping[str, Any] = {"apiVersion": ANY, "kind": ANY, "metadata": ANY, "type": ANY, "data": ANY}


def where(doc: Mapping[str, Any], namespace: str) -> str:
    return f"{KIND} {namespace}/{(doc.get('metadata') or {}).get('name')}"


def check(doc: Mapping[str, Any], namespace: str) -> None:
    """As the API server: the fields the local mesh reads, a known type, base64 data, and a TLS
    Secret's two keys. The key pair itself is istiod's business (key_pair)."""
    here = where(doc, namespace)
    if doc.get("apiVersion") != API_VERSION:
        raise UnsupportedResource(f"{here}: apiVersion {doc.get('apiVersion')!r} (expected {API_VERSION})")
    check_fields(doc, ALLOWED, here)
    kind = doc.get("type", OPAQUE_TYPE)
    if kind not in (TLS_TYPE, OPAQUE_TYPE):
        raise UnsupportedResource(f"{here}: type {kind!r} is not implemented by the local mesh "
                                  f"(only {TLS_TYPE} and {OPAQUE_TYPE})")
    data = _decoded(doc, here)
    if kind == TLS_TYPE:
        missing = [key for key in KEY_PAIRS[1] if key not in data]
        if missing:
            raise ManifestError(f"{here}: data[{missing[0]}]: Required value")


def _decoded(doc: Mapping[str, Any], here: str) -> dict[str, bytes]:
    decoded = {}
    for key, value in (doc.get("data") or {}).items():
        try:
            decoded[str(key)] = base64.b64decode(str(value), validate=True)
        except binascii.Error:
            raise ManifestError(f"{here}: data[{key}]: illegal base64 data") from None
    return decoded


def key_pair(doc: Mapping[str, Any]) -> tuple[str, str] | None:
    """The certificate chain and key PEM istiod serves of the Secret, or None when it serves nothing:
    no non-empty pair, or a chain or key that does not parse."""
    data = _decoded(doc, where(doc, str((doc.get("metadata") or {}).get("namespace"))))
    for cert_key, key_key in KEY_PAIRS:
        if data.get(cert_key) and data.get(key_key):
            chain, key = data[cert_key], data[key_key]
            try:
                x509.load_pem_x509_certificates(chain)
                load_pem_private_key(key, password=None)
            except ValueError:
                return None
            return chain.decode(), key.decode()
    return None


class KeptCredentials:
    """The gateway credentials each proxy was served, kept after their Secret is deleted: istiod then
    has nothing to send for the name (pilot/pkg/xds/sds.go skips a Secret it cannot find) and Envoy
    keeps the last one it got, so a listener still draining after its Gateway and Secret went keeps
    its certificate, and the proxy stays in sync."""

    def __init__(self) -> None:
        self._served: dict[str, dict[str, dict[str, Any]]] = {}

    def kept(self, node_id: str, served: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """`served` and what the proxy was served before that is no longer there."""
        merged = {**self._served.get(node_id, {}), **served}
        self._served[node_id] = merged
        return merged

    def forget(self, node_id: str) -> None:
        self._served.pop(node_id, None)
