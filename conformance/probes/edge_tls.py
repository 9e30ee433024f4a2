"""TLS at the edge, from the test host: a test CA made at run time, HTTPS requests to the ingress
gateway's address with a chosen SNI and CA bundle, and bare handshakes that record what certificate
(if any) a server name is given, and whether the test CA issued it.

No key is ever checked in: each run makes its own CA and certificate (ECDSA P-256).
"""

import base64
import datetime
import socket
import ssl
import time
from collections.abc import Mapping
from typing import Any
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conformance.probes.batches import reply_from_dict
from conformance.targets.base import Batch, Reply

# Long enough for any run, short enough that a leaked key is soon worthless.
CERT_TTL = datetime.timedelta(days=1)
CLIENT_NAME = "test-host"


@dataclass(frozen=True)
class KeyPair:
    chain_pem: str  # the leaf, then the CA
    key_pem: str  # PKCS#8


class EdgeCA:
    """A self-signed CA for one run, which signs serving certificates for the hosts a test exposes."""

    def __init__(self, name: str = "meshconf test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshconf"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        self.root = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + CERT_TTL)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.root_pem = self.root.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, host: str) -> KeyPair:
        """A serving certificate whose only SAN is the DNS name `host`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.root.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + CERT_TTL)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        leaf = cert.public_bytes(serialization.Encoding.PEM).decode()
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return KeyPair(leaf + self.root_pem, key_pem)


@dataclass(frozen=True)
class Handshake:
    """What a TLS handshake offering `server_name` gave: the certificate presented (its DNS SANs and
    issuer), whether the CA bundle's certificate signed it, whether it verified against the bundle
    for that name (chain and host name), or why there was none."""

    server_name: str
    presented: bool
    dns_names: tuple[str, ...] = ()
    verified: bool = False
    error: str | None = None  # the handshake's failure, or the verification's
    issuer: str = ""
    from_ca: bool = False  # signed by a certificate of the CA bundle, whatever name it carries

    def describe(self) -> str:
        if not self.presented:
            return f"SNI {self.server_name}: no certificate ({self.error})"
        check = "verified" if self.verified else f"not verified: {self.error}"
        return (f"SNI {self.server_name}: a certificate for {', '.join(self.dns_names) or 'no DNS name'} "
                f"issued by {self.issuer or 'no one named'} ({check})")


class HttpsProbe:
    """The test host speaking HTTPS to an address, with a given SNI and CA bundle: the chain and the
    host name are verified against them, as a browser verifies the host it asked for."""

    def __init__(self, request_timeout: float) -> None:
        self._timeout = request_timeout

    def send(self, url: str, server_name: str, ca_pem: str, count: int = 1, concurrency: int = 1,
             headers: Mapping[str, str] | None = None) -> Batch:
        """GETs of `url` (the gateway's address) for `server_name`: its SNI, its Host header, and the
        name its certificate must carry."""
        sent = {"Host": server_name, **dict(headers or {})}
        context = ssl.create_default_context(cadata=ca_pem)
        with httpx.Client(verify=context, timeout=self._timeout, follow_redirects=False) as http:

            def one(_: int) -> Reply:
                started = time.monotonic()
                try:
                    response = http.get(url, headers=sent, extensions={"sni_hostname": server_name})
                except httpx.HTTPError as exc:
                    return Reply(0, {}, "", error=f"{type(exc).__name__}: {exc}", elapsed=time.monotonic() - started)
                return reply_from_dict({"status": response.status_code, "headers": dict(response.headers),
                                        "body": response.text, "elapsed": time.monotonic() - started})

            with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
                replies = tuple(pool.map(one, range(count)))
        return Batch(url=url, client=CLIENT_NAME, replies=replies, request_headers=sent)

    def handshake(self, url: str, server_name: str, ca_pem: str) -> Handshake:
        """A bare handshake with `url`'s address offering `server_name`: first accepting any
        certificate, to see what is presented; then verifying it against `ca_pem` for that name."""
        address = _address(url)
        try:
            der = self._peer_certificate(address, server_name, _accept_any())
        except (OSError, ssl.SSLError) as exc:
            return Handshake(server_name, presented=False, error=f"{type(exc).__name__}: {exc}")
        leaf = x509.load_der_x509_certificate(der)
        names = tuple(_dns_names(leaf))
        issuer, from_ca = leaf.issuer.rfc4514_string(), _issued_by(leaf, ca_pem)
        try:
            self._peer_certificate(address, server_name, ssl.create_default_context(cadata=ca_pem))
        except (OSError, ssl.SSLError) as exc:
            return Handshake(server_name, True, names, verified=False, error=f"{type(exc).__name__}: {exc}",
                             issuer=issuer, from_ca=from_ca)
        return Handshake(server_name, True, names, verified=True, issuer=issuer, from_ca=from_ca)

    def _peer_certificate(self, address: tuple[str, int], server_name: str, context: ssl.SSLContext) -> bytes:
        with socket.create_connection(address, timeout=self._timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
        if der is None:
            raise ssl.SSLError("the server presented no certificate")
        return der


def tls_secret(name: str, namespace: str, labels: Mapping[str, str], pair: KeyPair) -> dict[str, Any]:
    """A kubernetes.io/tls Secret holding `pair`, as a Gateway's credentialName names it."""
    data = {"tls.crt": pair.chain_pem, "tls.key": pair.key_pem}
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def _accept_any() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ValueError(f"no host in {url!r}")
    return parts.hostname, parts.port or 443


def _issued_by(leaf: x509.Certificate, ca_pem: str) -> bool:
    """Whether a certificate of the bundle signed `leaf` (the signature checked, not only the names)."""
    for ca in x509.load_pem_x509_certificates(ca_pem.encode()):
        try:
            leaf.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                    .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return []


def _now() -> datetime.datetime:
    # A minute back: a clock a little behind the test host's must still accept the certificate.
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) - datetime.timedelta(minutes=1)
