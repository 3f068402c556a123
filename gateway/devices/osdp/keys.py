"""Secure-channel base keys (SCBK) for OSDP readers: 16 bytes per reader, hex in a 0600 file.

Install mode provisions a reader that still answers to the install key SCBK-D.
The panel makes a fresh random key and writes it to `<key_file>.pending`
*before* it is offered; the panel then tries that key, falls back to SCBK-D,
sends KEYSET with it and reopens the secure channel with it. Only once the
reader has proved it holds the key is the pending file renamed over
`key_file`. A crash at any point leaves either the pending key (offered again
at the next start, which KEYSET or the reader already accepts) or the
committed one: never a key the reader has and the gateway lost.

Keys never appear in logs or errors.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from gateway.errors import RentgateError

KEY_BYTES = 16
_HEX_CHARS = 2 * KEY_BYTES


class KeyProblem(StrEnum):
    """Why a reader's key file cannot be used."""

    MISSING = "missing"
    UNREADABLE = "unreadable"
    MALFORMED = "malformed"
    EXPOSED = "exposed"
    """Readable or writable by group or others."""


class OsdpKeyFileError(RentgateError):
    """A key file cannot be used; `problem` says why (the message never holds the key)."""

    def __init__(self, problem: KeyProblem, path: Path, detail: str) -> None:
        super().__init__(f"key file {path}: {detail}")
        self.problem = problem
        self.path = path


@dataclass(frozen=True, slots=True)
class ReaderKey:
    """The key to offer a reader, and whether it is still being installed."""

    key: bytes
    installing: bool

    def __repr__(self) -> str:
        return f"ReaderKey(installing={self.installing})"


def pending_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + ".pending")


def load_key(key_file: Path, *, install: bool) -> ReaderKey:
    """The committed key; in install mode without one, the pending key (made if absent)."""
    if key_file.exists():
        return ReaderKey(_read_key(key_file), installing=False)
    if not install:
        raise OsdpKeyFileError(
            KeyProblem.MISSING,
            key_file,
            "does not exist; enable install mode for this reader to provision a new key",
        )
    pending = pending_path(key_file)
    if pending.exists():
        return ReaderKey(_read_key(pending), installing=True)
    key = secrets.token_bytes(KEY_BYTES)
    write_key(pending, key)
    return ReaderKey(key, installing=True)


def commit_key(key_file: Path) -> None:
    """Make the pending key the reader's key (atomic rename, directory synced)."""
    os.replace(pending_path(key_file), key_file)
    _sync_directory(key_file.parent)


def write_key(path: Path, key: bytes) -> None:
    """Write `key` as hex to `path` atomically, created mode 0600 and synced to disk."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a key is {KEY_BYTES} bytes")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, key.hex().encode() + b"\n")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    os.close(fd)
    os.replace(temporary, path)
    _sync_directory(path.parent)


def _read_key(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except OSError as exc:
        raise OsdpKeyFileError(KeyProblem.UNREADABLE, path, f"cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        # `from None`: the decode error carries the file's bytes, which are the key.
        raise OsdpKeyFileError(KeyProblem.MALFORMED, path, "not ASCII hex") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise OsdpKeyFileError(
            KeyProblem.EXPOSED, path, f"mode {stat.S_IMODE(mode):04o}; must be 0600"
        )
    if len(text) != _HEX_CHARS:
        raise OsdpKeyFileError(
            KeyProblem.MALFORMED, path, f"must hold {_HEX_CHARS} hex digits, has {len(text)}"
        )
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise OsdpKeyFileError(KeyProblem.MALFORMED, path, "not hexadecimal") from None


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
