"""Writing a key pair to files: the private key 0600 from its first byte, never overwritten.

The platform's signing keys (`signing.py`) and its encryption keys
(`sealed_box.py`) are saved alike: `<kid>.key` (PKCS#8 PEM) and `<kid>.pub`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization


class _PrivateKey(Protocol):
    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes: ...


def save_key_pair(
    directory: Path, kid: str, private: _PrivateKey, public_pem: bytes
) -> tuple[Path, Path]:
    """Write `<kid>.key` (mode 0600, FileExistsError if present) and `<kid>.pub`."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{kid}.key"
    public_path = directory / f"{kid}.pub"
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path
