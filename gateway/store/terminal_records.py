"""Handheld terminals: their tokens, and the ids of the records they delivered.

A terminal authenticates with a bearer token `"{terminal_id}:{secret}"`. Only
the token's SHA-256 is stored; verifying looks the terminal up by the id part
and compares hashes in constant time. The token is shown once, when issued.

`terminal_records` remembers every record id accepted, with the outbox seq of
the `registration.captured` event that announced it: a record sent again (the
terminal lost the reply) is recognised and not announced twice. It holds no
personal data; the event carries what the platform needs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gateway.store.errors import translated

_SEPARATOR = ":"


class TokenProblem(StrEnum):
    """Why a token was refused (the API answers 401 with it)."""

    MISSING = "missing_token"
    MALFORMED = "malformed_token"
    UNKNOWN = "unknown_token"
    REVOKED = "revoked_token"


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """A verified terminal id, or the problem with the token."""

    terminal: str | None
    problem: TokenProblem | None = None


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def add_terminal(conn: sqlite3.Connection, terminal_id: str, now: datetime) -> str:
    """Issue a token for a terminal (new or re-issued: the old token stops working).

    Returns the token; it is not stored and cannot be shown again.
    """
    if not terminal_id or _SEPARATOR in terminal_id:
        raise ValueError(f"terminal id must be non-empty and without {_SEPARATOR!r}")
    token = f"{terminal_id}{_SEPARATOR}{secrets.token_urlsafe(32)}"
    conn.execute(
        "INSERT INTO terminals (id, token_hash, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET token_hash = excluded.token_hash,"
        " created_at = excluded.created_at, revoked_at = NULL",
        (terminal_id, _hash(token), now.isoformat()),
    )
    return token


def revoke_terminal(conn: sqlite3.Connection, terminal_id: str, now: datetime) -> bool:
    """Stop a terminal's token from working; False if there is no such active terminal."""
    cursor = conn.execute(
        "UPDATE terminals SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (now.isoformat(), terminal_id),
    )
    return cursor.rowcount == 1


def verify_token(conn: sqlite3.Connection, token: str | None) -> TokenCheck:
    """Which terminal a bearer token belongs to, compared in constant time."""
    if not token:
        return TokenCheck(None, TokenProblem.MISSING)
    terminal_id, separator, secret = token.partition(_SEPARATOR)
    if not separator or not terminal_id or not secret or len(token) > 256:
        return TokenCheck(None, TokenProblem.MALFORMED)
    row = conn.execute(
        "SELECT token_hash, revoked_at FROM terminals WHERE id = ?", (terminal_id,)
    ).fetchone()
    # Hash and compare even for an unknown id, so timing tells nothing about which exist.
    stored = bytes(row[0]) if row else b"\0" * 32
    matches = hmac.compare_digest(_hash(token), stored)
    if row is None or not matches:
        return TokenCheck(None, TokenProblem.UNKNOWN)
    if row[1] is not None:
        return TokenCheck(None, TokenProblem.REVOKED)
    return TokenCheck(terminal_id)


def record_seq(conn: sqlite3.Connection, record_id: str) -> int | None:
    """The seq of the event that announced a record, or None if it was never accepted."""
    row = conn.execute(
        "SELECT seq FROM terminal_records WHERE record_id = ?", (record_id,)
    ).fetchone()
    return int(row[0]) if row else None


def insert_record(
    conn: sqlite3.Connection,
    *,
    record_id: str,
    terminal: str,
    kind: str,
    captured_at: datetime,
    received_at: datetime,
    seq: int,
) -> bool:
    """Remember an accepted record id; False (and nothing written) if it is already known."""
    cursor = conn.execute(
        "INSERT INTO terminal_records (record_id, terminal, kind, captured_at, received_at, seq)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (record_id) DO NOTHING",
        (record_id, terminal, kind, captured_at.isoformat(), received_at.isoformat(), seq),
    )
    return cursor.rowcount == 1


def count_records(conn: sqlite3.Connection, terminal: str | None = None) -> int:
    """Records accepted (from one terminal, or from all)."""
    if terminal is None:
        row = conn.execute("SELECT count(*) FROM terminal_records").fetchone()
    else:
        row = conn.execute(
            "SELECT count(*) FROM terminal_records WHERE terminal = ?", (terminal,)
        ).fetchone()
    return int(row[0])


def person_for(conn: sqlite3.Connection, id_hash: bytes) -> str | None:
    """The gateway's person id for an ID number's lookup hash, if enrolled here."""
    row = conn.execute("SELECT id FROM people WHERE id_hash = ?", (id_hash,)).fetchone()
    return str(row[0]) if row else None


@dataclass(frozen=True)
class RecordRow:
    record_id: str
    terminal: str
    kind: str
    captured_at: str
    received_at: str
    seq: int


def recent_records(
    conn: sqlite3.Connection, *, terminal: str | None = None, limit: int = 50
) -> list[RecordRow]:
    """The latest records received (from one terminal, or from all), newest first."""
    sql = "SELECT record_id, terminal, kind, captured_at, received_at, seq FROM terminal_records"
    params: tuple[object, ...] = ()
    if terminal is not None:
        sql += " WHERE terminal = ?"
        params = (terminal,)
    with translated():
        rows = conn.execute(f"{sql} ORDER BY seq DESC LIMIT ?", (*params, limit)).fetchall()
    return [RecordRow(*row) for row in rows]
