"""Field encryption and keyed lookup hashes for personal data at rest.

All of Rentgate's cryptography for data at rest sits behind `KeyRing`, so a
deployment that must use SM4/SM3 swaps this one module. Names, ID numbers and
credential values are sealed with AES-256-GCM, bound by associated data to the
table and column they belong to; people and credentials are found by an
HMAC-SHA256 of the value, never by the value itself.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.store.errors import KeyFileError

_FORMAT = 1
_KEY_ID = 1
_NONCE_BYTES = 12


class KeyRing:
    """The gateway's data-at-rest keys: one for sealing fields, one for lookups."""

    def __init__(self, field_key: bytes, lookup_key: bytes) -> None:
        if len(field_key) != 32 or len(lookup_key) != 32:
            raise KeyFileError("both keys must be 32 bytes")
        self._aead = AESGCM(field_key)
        self._field_key = field_key
        self._lookup_key = lookup_key

    @classmethod
    def generate(cls) -> KeyRing:
        return cls(os.urandom(32), os.urandom(32))

    @classmethod
    def load_or_create(cls, path: Path, *, group_readable: bool = False) -> KeyRing:
        """Load the key file, creating it (mode 0600) on first run.

        `group_readable`: the web process of a split install reads it through the
        store's group (0640); anything more open is refused either way."""
        if not path.exists():
            ring = cls.generate()
            ring._write_new(path)
            return ring
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & (0o037 if group_readable else 0o077):
            wanted = "640" if group_readable else "600"
            raise KeyFileError(f"{path} is readable by others (mode {mode:o}); chmod {wanted} it")
        try:
            document = json.loads(path.read_text(encoding="ascii"))
            if document.get("format") != _FORMAT:
                raise KeyFileError(f"{path}: unknown key file format {document.get('format')!r}")
            return cls(
                base64.b64decode(document["field_key"], validate=True),
                base64.b64decode(document["lookup_key"], validate=True),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyFileError(f"{path} is not a Rentgate key file: {exc}") from exc

    def _write_new(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        document = {
            "format": _FORMAT,
            "field_key": base64.b64encode(self._field_key).decode(),
            "lookup_key": base64.b64encode(self._lookup_key).decode(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())

    def seal(self, plaintext: str, context: str) -> bytes:
        """Encrypt a field; `context` (e.g. "people.name") must match on open."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode("ascii"))
        return bytes([_KEY_ID]) + nonce + sealed

    def open(self, blob: bytes, context: str) -> str:
        """Decrypt a sealed field, refusing anything tampered with or moved."""
        if len(blob) < 1 + _NONCE_BYTES + 16 or blob[0] != _KEY_ID:
            raise KeyFileError("sealed field has an unknown key id or is truncated")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, context.encode("ascii")).decode("utf-8")
        except InvalidTag as exc:
            raise KeyFileError(f"sealed {context} failed authentication") from exc

    def lookup(self, kind: str, value: str) -> bytes:
        """Keyed hash that finds a record by value without storing the value."""
        return hmac.digest(self._lookup_key, f"{kind}:{value}".encode(), "sha256")
