"""Platform signing keys (Ed25519): what signs commands and vouchers, and how they are named.

The platform signs; gateways and terminals only verify. A key is named by its
key id, derived from the public key itself (`k-` and the first 8 bytes of its
SHA-256 in hex), so a key id can never point at two different keys. Keys are
stored as PEM files that openssl reads too. Like `gateway.store.crypto`, this is
the one module to swap for SM2 where a deployment requires it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.domain.key_files import save_key_pair
from gateway.errors import RentgateError

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32


class SigningKeyError(RentgateError, ValueError):
    """A key file or key text is unreadable or not an Ed25519 key."""


def key_id(public_raw: bytes) -> str:
    """The key id of a raw 32-byte Ed25519 public key."""
    if len(public_raw) != PUBLIC_KEY_BYTES:
        raise SigningKeyError("an Ed25519 public key is 32 bytes")
    return "k-" + hashlib.sha256(public_raw).digest()[:8].hex()


@dataclass(frozen=True)
class VerifyKey:
    """A trusted platform public key."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_KEY_BYTES:
            raise SigningKeyError("an Ed25519 public key is 32 bytes")

    @property
    def kid(self) -> str:
        return key_id(self.raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        return Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_pem(cls, data: bytes) -> VerifyKey:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise SigningKeyError(f"not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError("not an Ed25519 public key")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    @classmethod
    def load(cls, path: Path) -> VerifyKey:
        try:
            return cls.from_pem(path.read_bytes())
        except OSError as exc:
            raise SigningKeyError(f"cannot read {path}: {exc.strerror}") from exc
        except SigningKeyError as exc:
            raise SigningKeyError(f"{path}: {exc}") from exc


class SigningKey:
    """A platform private key (the platform tool's side; gateways never hold one)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = VerifyKey(raw)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @property
    def kid(self) -> str:
        return self.public.kid

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:
            raise SigningKeyError(f"cannot read {path}: {exc.strerror}") from exc
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{path} is not an Ed25519 private key")
        return cls(key)

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write `<kid>.key` (mode 0600) and `<kid>.pub` into `directory`; return both paths."""
        return save_key_pair(directory, self.kid, self._private, self.public.pem())
