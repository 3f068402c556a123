"""Sealed boxes: personal data encrypted to the platform's public key, openable only there.

A gateway holds the platform's X25519 *public* encryption key and nothing that
can open what it seals, so the outbox, its WAL, backups and every MQTT hop
carry only ciphertext: a stolen gateway, a copied backup or a subscriber to
`#` learns nothing from a box. The construction is HPKE (RFC 9180), base mode,
single shot, from `cryptography` (no home-made primitives): the suite
DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, with

    info = "rentgate sealed-box v1" || 0x00 || kid || 0x00 || context

A box is the JSON object `{"v": 1, "kid": "x-…", "enc": b64url, "ct": b64url}`
(unpadded base64url): `enc` is HPKE's 32-byte encapsulated (ephemeral) key,
`ct` the AES-256-GCM ciphertext with its 16-byte tag. `kid` names the recipient
key (`x-` and the first 8 bytes of SHA-256 of its raw public key, in hex), so
the platform can rotate keys and knows which private key to use. `context` is
chosen by the caller (for events: gateway id, event type and record id, see
`gateway.domain.personal`) and bound in through `info`: a box copied into
another event or another gateway's stream does not open. The plaintext is
padded (0x80 then zeros) to a multiple of `PAD_TO` bytes, so a box's size says
little about the length of a name. Any RFC 9180 library can open a box; like
`gateway.domain.signing`, this is the one module to swap for SM2/SM4.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from gateway.domain.key_files import save_key_pair
from gateway.errors import RentgateError

VERSION = 1
KEY_BYTES = 32
PAD_TO = 64
_LABEL = b"rentgate sealed-box v1"
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_TAG_BYTES = 16
MAX_BOX_TEXT = 8192
"""Longest `ct` text looked at: a capture's sealed fields are well under 2 KiB."""


class SealProblem(StrEnum):
    """Why a box did not open (the platform counts them by reason)."""

    MALFORMED = "malformed"
    UNKNOWN_VERSION = "unknown_version"
    UNKNOWN_KEY = "unknown_key"
    FAILED_AUTHENTICATION = "failed_authentication"


class SealError(RentgateError, ValueError):
    """A box could not be opened: forged, corrupted, moved, or for a key not held."""

    def __init__(self, problem: SealProblem, detail: str) -> None:
        super().__init__(f"sealed box {problem.value}: {detail}")
        self.problem = problem


class SealingKeyError(RentgateError, ValueError):
    """A key file or key text is unreadable or not an X25519 key."""


def key_id(public_raw: bytes) -> str:
    """The key id of a raw 32-byte X25519 public key."""
    if len(public_raw) != KEY_BYTES:
        raise SealingKeyError("an X25519 public key is 32 bytes")
    return "x-" + hashlib.sha256(public_raw).digest()[:8].hex()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > MAX_BOX_TEXT:
        raise SealError(SealProblem.MALFORMED, f"{what} is not base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SealError(SealProblem.MALFORMED, f"{what} is not base64url text") from exc


def _info(kid: str, context: str) -> bytes:
    return _LABEL + b"\0" + kid.encode("ascii") + b"\0" + context.encode("utf-8")


def _pad(plaintext: bytes) -> bytes:
    """ISO/IEC 7816-4 padding: 0x80 then zeros up to a multiple of PAD_TO."""
    padded = plaintext + b"\x80"
    return padded + b"\0" * (-len(padded) % PAD_TO)


def _unpad(padded: bytes) -> bytes:
    end = padded.rstrip(b"\0")
    if not end.endswith(b"\x80"):
        raise SealError(SealProblem.MALFORMED, "bad padding")
    return end[:-1]


@dataclass(frozen=True)
class SealingKey:
    """The platform's public encryption key, as a gateway holds it: seals, cannot open."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_BYTES:
            raise SealingKeyError("an X25519 public key is 32 bytes")

    @property
    def kid(self) -> str:
        return key_id(self.raw)

    def seal(self, plaintext: bytes, context: str) -> dict[str, Any]:
        """A box only the holder of the matching private key opens, and only under `context`."""
        try:
            sealed = _SUITE.encrypt(
                _pad(plaintext),
                X25519PublicKey.from_public_bytes(self.raw),
                info=_info(self.kid, context),
            )
        except ValueError as exc:  # a low-order point: no secret would be shared
            raise SealingKeyError("the platform encryption key is not a usable X25519 key") from exc
        enc, ct = sealed[:KEY_BYTES], sealed[KEY_BYTES:]
        return {"v": VERSION, "kid": self.kid, "enc": _b64(enc), "ct": _b64(ct)}

    def pem(self) -> bytes:
        return X25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_text(cls, text: bytes) -> SealingKey:
        """A PEM public key, or the raw 32 bytes in standard or url-safe base64."""
        if b"-----BEGIN" in text:
            try:
                key = serialization.load_pem_public_key(text)
            except ValueError as exc:
                raise SealingKeyError(f"not a PEM public key: {exc}") from exc
            if not isinstance(key, X25519PublicKey):
                raise SealingKeyError("not an X25519 public key")
            return cls(key.public_bytes_raw())
        stripped = text.strip()
        try:
            raw = base64.b64decode(stripped.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SealingKeyError("neither PEM nor base64 of a 32-byte X25519 key") from exc
        return cls(raw)

    @classmethod
    def load(cls, path: Path) -> SealingKey:
        try:
            return cls.from_text(path.read_bytes())
        except OSError as exc:
            raise SealingKeyError(f"cannot read {path}: {exc.strerror}") from exc
        except SealingKeyError as exc:
            raise SealingKeyError(f"{path}: {exc}") from exc


class OpeningKey:
    """The platform's private encryption key (the platform's side; gateways never hold one)."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public = SealingKey(private.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> OpeningKey:
        return cls(X25519PrivateKey.generate())

    @property
    def kid(self) -> str:
        return self.public.kid

    def open(self, box: object, context: str) -> bytes:
        """The plaintext of a box sealed to this key under `context`; SealError otherwise."""
        return open_box([self], box, context)

    @classmethod
    def load(cls, path: Path) -> OpeningKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:
            raise SealingKeyError(f"cannot read {path}: {exc.strerror}") from exc
        except (ValueError, TypeError) as exc:
            raise SealingKeyError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, X25519PrivateKey):
            raise SealingKeyError(f"{path} is not an X25519 private key")
        return cls(key)

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write `<kid>.key` (mode 0600) and `<kid>.pub` into `directory`; return both paths."""
        return save_key_pair(directory, self.kid, self._private, self.public.pem())

    def _open(self, enc: bytes, ct: bytes, info: bytes) -> bytes:
        try:
            return _SUITE.decrypt(enc + ct, self._private, info=info)
        except (InvalidTag, ValueError) as exc:
            raise SealError(
                SealProblem.FAILED_AUTHENTICATION,
                "forged, corrupted, or moved from another event (context mismatch)",
            ) from exc


def open_box(keys: Iterable[OpeningKey], box: object, context: str) -> bytes:
    """Open a box with whichever of `keys` it names; SealError says why it would not open."""
    if not isinstance(box, Mapping) or set(box) != {"v", "kid", "enc", "ct"}:
        raise SealError(SealProblem.MALFORMED, "not a {v, kid, enc, ct} object")
    if box["v"] != VERSION or isinstance(box["v"], bool):
        raise SealError(SealProblem.UNKNOWN_VERSION, f"version {box['v']!r}, expected {VERSION}")
    kid = box["kid"]
    key = next((k for k in keys if k.kid == kid), None)
    if key is None:
        shown = kid if isinstance(kid, str) and len(kid) <= 32 else "?"
        raise SealError(SealProblem.UNKNOWN_KEY, f"sealed to key {shown}, which is not held")
    enc = _unb64(box["enc"], "enc")
    ct = _unb64(box["ct"], "ct")
    if len(enc) != KEY_BYTES or len(ct) < _TAG_BYTES + PAD_TO:
        raise SealError(SealProblem.MALFORMED, "enc or ct has the wrong length")
    return _unpad(key._open(enc, ct, _info(kid, context)))
