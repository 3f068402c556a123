"""SQL for platform commands: which were seen and with what outcome, and the trusted keys.

A command id is remembered until its expiry has passed (after which the
envelope check refuses it anyway), so a command is applied at most once and a
re-sent one gets the original outcome back.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from gateway.store.errors import translated


@dataclass(frozen=True)
class CommandOutcome:
    """What became of a command: applied, or rejected with a reason."""

    applied: bool
    reason: str | None = None
    detail: str | None = None


def outcome_of(conn: sqlite3.Connection, command_id: str) -> CommandOutcome | None:
    with translated():
        row = conn.execute(
            "SELECT outcome, reason, detail FROM commands_seen WHERE id = ?", (command_id,)
        ).fetchone()
    if row is None:
        return None
    return CommandOutcome(row[0] == "applied", row[1], row[2])


def remember(
    conn: sqlite3.Connection,
    *,
    command_id: str,
    name: str,
    expires_at: int,
    outcome: CommandOutcome,
    now: datetime,
) -> None:
    """Record a command's outcome. Call in the transaction that applied it."""
    conn.execute(
        "INSERT INTO commands_seen (id, name, received_at, expires_at, outcome, reason, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            command_id,
            name,
            now.isoformat(),
            expires_at,
            "applied" if outcome.applied else "rejected",
            outcome.reason,
            outcome.detail,
        ),
    )


def forget_expired(conn: sqlite3.Connection, now_s: int) -> int:
    return conn.execute("DELETE FROM commands_seen WHERE expires_at < ?", (now_s,)).rowcount


@dataclass(frozen=True)
class TrustedKey:
    kid: str
    public_key: bytes
    retired: bool


def trusted_keys(conn: sqlite3.Connection) -> list[TrustedKey]:
    """Keys added or retired by `keys.rotate` (the config's keys are the starting set)."""
    with translated():
        return [
            TrustedKey(kid, bytes(raw), retired is not None)
            for kid, raw, retired in conn.execute(
                "SELECT kid, public_key, retired_at FROM platform_keys ORDER BY added_at"
            )
        ]


def add_key(conn: sqlite3.Connection, kid: str, raw: bytes, now: datetime) -> None:
    conn.execute(
        "INSERT INTO platform_keys (kid, public_key, added_at) VALUES (?, ?, ?)"
        " ON CONFLICT (kid) DO UPDATE SET retired_at = NULL",
        (kid, raw, now.isoformat()),
    )


def retire_key(conn: sqlite3.Connection, kid: str, raw: bytes, now: datetime) -> None:
    """Mark a key as no longer trusted; config keys get a row so the retirement sticks."""
    conn.execute(
        "INSERT INTO platform_keys (kid, public_key, added_at, retired_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (kid) DO UPDATE SET retired_at = excluded.retired_at",
        (kid, raw, now.isoformat(), now.isoformat()),
    )
