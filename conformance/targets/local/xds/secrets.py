"""The local mesh's certificate authority, and the SDS secrets each proxy is served from it.

Istio's agent serves every Envoy two secrets by name: `default`, the workload's certificate
chain and key, whose URI SAN is its SPIFFE identity, and `ROOTCA`, the trust bundle (istio/istio
pkg/security/security.go: WorkloadKeyCertResourceName, RootCertReqResourceName). The local
control plane serves them over ADS; Envoy asks only for those its listeners and clusters name.
A certificate is rotated by pushing a new `default`.
"""

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conformance.names import TRUST_DOMAIN, spiffe_id
from conformance.targets.local.translator.resources import ROOT_SECRET, SECRET_TYPE, WORKLOAD_SECRET

# istio-agent asks for 24h workload certificates (istio/istio pilot/cmd/pilot-agent/options/
# options.go SECRET_TTL); istiod's self-signed root lives 10 years (security/pkg/cmd/constants.go
# DefaultSelfSignedCACertTTL).
WORKLOAD_CERT_TTL = datetime.timedelta(hours=24)
ROOT_CERT_TTL = datetime.timedelta(days=3650)

# Istio's keys are RSA 2048 by default (WORKLOAD_RSA_KEY_SIZE) and ECDSA P-256 when
# ECC_SIGNATURE_ALGORITHM=ECDSA (ECC_CURVE defaults to P256; istio/istio
# pilot/cmd/pilot-agent/options/options.go). The local mesh takes ECDSA: an RSA 2048 key costs
# 50-100 ms to generate, and a mesh has up to 150 proxies; a P-256 key takes well under 1 ms.
_CURVE = ec.SECP256R1()
_SIGNATURE_HASH = hashes.SHA256()


@dataclass(frozen=True)
class WorkloadCert:
    chain_pem: str  # the workload's certificate, then any intermediates (none: the root signs directly)
    key_pem: str  # PKCS#8
    serial: int
    not_after: datetime.datetime  # UTC


class MeshCA:
    """A self-signed root that issues each workload its certificate, as istiod's self-signed CA."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(_CURVE)
        # istiod names its self-signed root by organization only, the trust domain (istio/istio
        # pilot/pkg/bootstrap/istio_ca.go passes TrustDomain as the org of
        # security/pkg/pki/ca NewSelfSignedIstioCAOptions).
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN)])
        now = _now()
        public = self._key.public_key()
        self.root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + ROOT_CERT_TTL)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            # Key identifiers: OpenSSL's strict verification requires them of a chain.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, _SIGNATURE_HASH)
        )
        self.root_pem = self.root.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, namespace: str, service_account: str, ttl: datetime.timedelta = WORKLOAD_CERT_TTL) -> WorkloadCert:
        """A certificate for the workload running as `service_account` in `namespace`, as istiod
        signs one: an empty subject, the SPIFFE id as the only (critical) SAN, for server and client
        auth (istio/istio security/pkg/pki/util/generate_cert.go genCertTemplateFromCSR, san.go)."""
        return self._sign_leaf([x509.UniformResourceIdentifier(spiffe_id(namespace, service_account))], ttl)

    def issue_server(self, dns_names: Sequence[str], ttl: datetime.timedelta = ROOT_CERT_TTL) -> WorkloadCert:
        """A serving certificate for `dns_names`, as istiod signs its own (e.g. for
        istiod.istio-system.svc, the injection webhook's service) with its self-signed CA: the
        workload template with DNS SANs, for as long as the root lives (istio/istio
        pilot/pkg/bootstrap/certcontroller.go initDNSCertsIstiod, security/pkg/pki/ca/ca.go GenKeyCert)."""
        if not dns_names:
            raise ValueError("a server certificate needs at least one DNS name")
        return self._sign_leaf([x509.DNSName(name) for name in dns_names], ttl)

    def _sign_leaf(self, sans: list[x509.GeneralName], ttl: datetime.timedelta) -> WorkloadCert:
        """A new key, and a certificate with an empty subject and `sans` as its only (critical) SAN."""
        key = ec.generate_private_key(_CURVE)
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + ttl)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            # Critical because the subject is empty (RFC 5280 4.2.1.6), as Istio's.
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, _SIGNATURE_HASH)
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return WorkloadCert(cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode(),
                            cert.serial_number, cert.not_valid_after_utc)


def sds_secrets(cert: WorkloadCert, root_pem: str) -> dict[str, dict[str, Any]]:
    """A proxy's SDS secrets by name (envoy.extensions.transport_sockets.tls.v3.Secret JSON), as
    istio-agent serves them (istio/istio security/pkg/nodeagent/sds/sdsservice.go toEnvoySecret).
    Istio sends the PEM as inline_bytes; inline_string is the same data, readable in JSON."""
    return {
        WORKLOAD_SECRET: {
            "@type": SECRET_TYPE,
            "name": WORKLOAD_SECRET,
            "tls_certificate": {
                "certificate_chain": {"inline_string": cert.chain_pem},
                "private_key": {"inline_string": cert.key_pem},
            },
        },
        ROOT_SECRET: {
            "@type": SECRET_TYPE,
            "name": ROOT_SECRET,
            "validation_context": {"trusted_ca": {"inline_string": root_pem}},
        },
    }


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    """A CA signs certificates; a workload signs and enciphers (Istio's key usages)."""
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=not cert_sign,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=False,
                         encipher_only=False, decipher_only=False)


def _now() -> datetime.datetime:
    # Whole seconds: a certificate's times are, so not_after - not_before is exactly the TTL.
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
