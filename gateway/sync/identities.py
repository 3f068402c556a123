"""Broker identities: client certificates from the platform's CA, and the rules that go with them.

The broker knows who is connected from the certificate alone (Mosquitto's
`use_identity_as_username`: the username is the certificate's common name), so
what a client may publish and read is decided by a CN the CA vouched for,
never by a client id or a password a client chose. A gateway's CN is its
gateway id; a platform identity's CN is `platform-NAME`, a prefix no gateway id
may take, so no gateway certificate can ever be read as the platform's.

This is the platform's tool (`rentgate platform provision`); the gateway itself
only presents the certificate it was given (`[mqtt] cert`, `key`).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import RentgateError
from gateway.sync.wire import GATEWAY_ID_PATTERN, GATEWAY_ID_RULE, TOPIC_ROOT

PLATFORM_PREFIX = "platform-"
GATEWAY_ID = re.compile(GATEWAY_ID_PATTERN)
"""The config's gateway id pattern: no `/`, `+`, `#`, so it is safe inside ACL patterns."""
PLATFORM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,54}$")
DEFAULT_DAYS = 825


class ProvisioningError(RentgateError):
    """An identity cannot be issued: a bad name, an unusable CA, or files already there."""


@dataclass(frozen=True)
class Issued:
    common_name: str
    certificate: Path
    key: Path
    not_after: dt.datetime


def gateway_common_name(gateway_id: str) -> str:
    if not GATEWAY_ID.match(gateway_id):
        raise ProvisioningError(
            f"gateway id {gateway_id!r}: {GATEWAY_ID_RULE} (as in [gateway] id)"
        )
    if gateway_id.lower().startswith(PLATFORM_PREFIX):
        raise ProvisioningError(f"gateway ids may not start with {PLATFORM_PREFIX!r}")
    return gateway_id


def platform_common_name(name: str) -> str:
    if not PLATFORM_NAME.match(name):
        raise ProvisioningError(f"platform name {name!r} must match {PLATFORM_NAME.pattern}")
    return PLATFORM_PREFIX + name


def gateway_rules(gateway_id: str) -> str:
    """What a gateway may do, as Mosquitto ACL lines for this one identity (the shipped
    `config/mosquitto/rentgate.acl` grants the same to every gateway with `pattern` lines)."""
    root = f"{TOPIC_ROOT}/{gateway_id}"
    return "\n".join(
        [
            f"user {gateway_id}",
            f"topic write {root}/events",
            f"topic write {root}/state",
            f"topic write {root}/cmd-reply",
            f"topic read {root}/cmd/#",
        ]
    )


def platform_rules(common_name: str) -> str:
    """A platform identity: the only one that may publish commands; it reads everything."""
    return "\n".join(
        [
            f"user {common_name}",
            f"topic write {TOPIC_ROOT}/+/cmd/#",
            f"topic read {TOPIC_ROOT}/#",
        ]
    )


def issue(
    common_name: str,
    *,
    ca_cert: Path,
    ca_key: Path,
    out: Path,
    days: int = DEFAULT_DAYS,
    now: dt.datetime | None = None,
) -> Issued:
    """A new P-256 key and a client certificate for `common_name`, signed by the CA, written to
    `out/CN.pem` and `out/CN.key` (mode 0600); existing files are never overwritten."""
    if not 1 <= days <= 3650:
        raise ProvisioningError("--days must be between 1 and 3650")
    issuer_cert, issuer_key = _load_ca(ca_cert, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    end = min(start + dt.timedelta(days=days), issuer_cert.not_valid_after_utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, None if _is_eddsa(issuer_key) else hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{common_name}.pem", out / f"{common_name}.key"
    for path in (cert_path, key_path):
        if path.exists():
            raise ProvisioningError(f"{path} exists; not overwriting an identity")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(key_path, key_pem, 0o600)
    _write_new(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return Issued(common_name, cert_path, key_path, end)


CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _is_eddsa(key: CaKey) -> bool:
    return isinstance(key, ed25519.Ed25519PrivateKey)


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, CaKey]:
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise ProvisioningError(f"cannot read the CA: {exc}") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ProvisioningError(f"not a PEM CA certificate and unencrypted key: {exc}") from exc
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ProvisioningError("the CA key must be EC, RSA or Ed25519")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) != certificate.public_key().public_bytes(serialization.Encoding.DER, public):
        raise ProvisioningError("the CA key does not belong to the CA certificate")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        raise ProvisioningError("the CA certificate is not a CA (no basicConstraints)") from None
    if not constraints.value.ca:
        raise ProvisioningError("the CA certificate is not a CA (basicConstraints CA:FALSE)")
    return certificate, key


def _write_new(path: Path, data: bytes, mode: int) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
