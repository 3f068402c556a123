"""People who log in to the gateway: users, landlords' units, sessions, audit log, login attempts.

SQL only; the rules (roles, hashing, limits) are in `gateway.api.auth`. A session
is stored as the SHA-256 of its id, so a copy of the database opens no
session. The audit log is append-only: triggers refuse UPDATE and DELETE.
Times that are compared (session expiry, login attempts) are Unix seconds,
so a change of the configured time zone cannot reorder them; times people
read (created_at, audit `at`) are ISO 8601 with offset.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.store.errors import StoreError

USER_ROLES = ("admin", "landlord", "coordinator")
"""Roles a user row may have; terminals are in the `terminals` table (migration 5)."""

AUDIT_NO_DELETE_TRIGGER = """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"""
"""Lifted only inside `gateway.store.audit_retention`'s pruning transaction."""

# Migration 6 as data, not as a `Migration`: migrations.py imports this module to
# register it, and importing migrations.py from here would make that a cycle.
MIGRATION_6_VERSION = 6
MIGRATION_6_PURPOSE = (
    "web UI users: roles, landlords' units, sessions, an append-only audit log, login attempts"
)
MIGRATION_6_SCRIPT: tuple[str, ...] = (
    """CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            role TEXT NOT NULL CHECK (role IN ('admin', 'landlord', 'coordinator')),
            password_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            disabled_at TEXT
        )""",
    """CREATE TABLE user_units (
            user_id INTEGER NOT NULL REFERENCES users (id),
            unit TEXT NOT NULL,
            PRIMARY KEY (user_id, unit)
        ) WITHOUT ROWID""",
    "CREATE INDEX user_units_by_unit ON user_units (unit)",
    """CREATE TABLE sessions (
            id_hash BLOB PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users (id),
            created_at TEXT NOT NULL,
            expires_at INTEGER NOT NULL,
            last_seen INTEGER NOT NULL
        ) WITHOUT ROWID""",
    "CREATE INDEX sessions_by_user ON sessions (user_id)",
    "CREATE INDEX sessions_by_expiry ON sessions (expires_at)",
    """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            user_id INTEGER REFERENCES users (id),
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT,
            detail TEXT
        )""",
    "CREATE INDEX audit_log_by_user ON audit_log (user_id, id)",
    "CREATE INDEX audit_log_by_subject ON audit_log (subject, id)",
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    AUDIT_NO_DELETE_TRIGGER,
    """CREATE TABLE login_attempts (
            key TEXT NOT NULL,
            at REAL NOT NULL
        )""",
    "CREATE INDEX login_attempts_by_key ON login_attempts (key, at)",
    "CREATE INDEX login_attempts_by_at ON login_attempts (at)",
)


class AccountProblem(StrEnum):
    """Why an account change was refused (callers branch on it)."""

    NAME_TAKEN = "name_taken"
    NO_SUCH_USER = "no_such_user"
    ADMIN_EXISTS = "admin_exists"
    BAD_ROLE = "bad_role"
    UNITS_FOR_NON_LANDLORD = "units_for_non_landlord"


class AccountError(StoreError):
    """An account change that was refused; nothing was written."""

    def __init__(self, problem: AccountProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    name: str
    role: str
    password_hash: str
    created_at: str
    disabled_at: str | None
    units: frozenset[str]


@dataclass(frozen=True, slots=True)
class SessionRow:
    user_id: int
    name: str
    role: str
    units: frozenset[str]
    expires_at: int
    last_seen: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: str
    user_id: int | None
    actor: str
    action: str
    subject: str | None
    detail: str | None


# -- users -------------------------------------------------------------------


def create_user(
    conn: sqlite3.Connection,
    *,
    name: str,
    role: str,
    password_hash: str,
    created_at: str,
    units: Iterable[str] = (),
) -> int:
    """Add a user; AccountError if the name is taken (case-insensitively) or the role is wrong."""
    units = sorted(set(units))
    if role not in USER_ROLES:
        raise AccountError(AccountProblem.BAD_ROLE, f"role must be one of {', '.join(USER_ROLES)}")
    if units and role != "landlord":
        raise AccountError(AccountProblem.UNITS_FOR_NON_LANDLORD, "only landlords have units")
    if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
        raise AccountError(AccountProblem.NAME_TAKEN, f"there is already a user {name!r}")
    cursor = conn.execute(
        "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
        (name, role, password_hash, created_at),
    )
    user_id = int(cursor.lastrowid or 0)
    conn.executemany(
        "INSERT INTO user_units (user_id, unit) VALUES (?, ?)", [(user_id, u) for u in units]
    )
    return user_id


def create_first_admin(
    conn: sqlite3.Connection, *, name: str, password_hash: str, created_at: str
) -> int:
    """Add the first admin; AccountError(ADMIN_EXISTS) if an active one exists (checked in
    the same transaction, so two concurrent setups cannot both succeed)."""
    if active_admin_exists(conn):
        raise AccountError(AccountProblem.ADMIN_EXISTS, "the gateway already has an admin")
    return create_user(
        conn, name=name, role="admin", password_hash=password_hash, created_at=created_at
    )


def active_admin_exists(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM users WHERE role = 'admin' AND disabled_at IS NULL LIMIT 1"
    ).fetchone()
    return row is not None


_USER = "SELECT id, name, role, password_hash, created_at, disabled_at FROM users"


def find_user(conn: sqlite3.Connection, name: str) -> UserRow | None:
    """A user by name (case-insensitive), disabled or not."""
    row = conn.execute(f"{_USER} WHERE name = ?", (name,)).fetchone()
    return _user(conn, row) if row else None


def list_users(conn: sqlite3.Connection) -> list[UserRow]:
    rows = conn.execute(f"{_USER} ORDER BY name").fetchall()
    return [_user(conn, row) for row in rows]


def _user(conn: sqlite3.Connection, row: Any) -> UserRow:
    return UserRow(row[0], row[1], row[2], row[3], row[4], row[5], units_of(conn, row[0]))


def units_of(conn: sqlite3.Connection, user_id: int) -> frozenset[str]:
    rows = conn.execute("SELECT unit FROM user_units WHERE user_id = ?", (user_id,))
    return frozenset(str(row[0]) for row in rows)


def set_password(conn: sqlite3.Connection, name: str, password_hash: str) -> None:
    """Replace a user's password hash and end their sessions."""
    user = _require(conn, name)
    conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user.id))
    revoke_sessions_of(conn, user.id)


def set_units(conn: sqlite3.Connection, name: str, units: Iterable[str]) -> None:
    """Replace a landlord's units (one building may have several landlords)."""
    user = _require(conn, name)
    if user.role != "landlord":
        raise AccountError(AccountProblem.UNITS_FOR_NON_LANDLORD, "only landlords have units")
    conn.execute("DELETE FROM user_units WHERE user_id = ?", (user.id,))
    conn.executemany(
        "INSERT INTO user_units (user_id, unit) VALUES (?, ?)",
        [(user.id, unit) for unit in sorted(set(units))],
    )


def disable_user(conn: sqlite3.Connection, name: str, disabled_at: str) -> UserRow:
    """Disable a user (kept for the audit log's sake, never deleted) and end their sessions."""
    user = _require(conn, name)
    conn.execute(
        "UPDATE users SET disabled_at = coalesce(disabled_at, ?) WHERE id = ?",
        (disabled_at, user.id),
    )
    revoke_sessions_of(conn, user.id)
    return user


def _require(conn: sqlite3.Connection, name: str) -> UserRow:
    user = find_user(conn, name)
    if user is None:
        raise AccountError(AccountProblem.NO_SUCH_USER, f"no user {name!r}")
    return user


# -- sessions ----------------------------------------------------------------


def create_session(
    conn: sqlite3.Connection,
    *,
    id_hash: bytes,
    user_id: int,
    created_at: str,
    now_s: int,
    expires_at: int,
) -> None:
    conn.execute(
        "INSERT INTO sessions (id_hash, user_id, created_at, expires_at, last_seen)"
        " VALUES (?, ?, ?, ?, ?)",
        (id_hash, user_id, created_at, expires_at, now_s),
    )


def session_user(
    conn: sqlite3.Connection, id_hash: bytes, *, now_s: int, idle_s: int
) -> SessionRow | None:
    """The user of a live session: not expired, not idle too long, user not disabled."""
    row = conn.execute(
        "SELECT u.id, u.name, u.role, s.expires_at, s.last_seen FROM sessions s"
        " JOIN users u ON u.id = s.user_id"
        " WHERE s.id_hash = ? AND u.disabled_at IS NULL AND s.expires_at > ? AND s.last_seen > ?",
        (id_hash, now_s, now_s - idle_s),
    ).fetchone()
    if row is None:
        return None
    user_id = int(row[0])
    return SessionRow(
        user_id, str(row[1]), str(row[2]), units_of(conn, user_id), int(row[3]), int(row[4])
    )


def touch_session(conn: sqlite3.Connection, id_hash: bytes, now_s: int) -> None:
    conn.execute("UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (now_s, id_hash))


def revoke_session(conn: sqlite3.Connection, id_hash: bytes) -> bool:
    return conn.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,)).rowcount == 1


def revoke_sessions_of(conn: sqlite3.Connection, user_id: int) -> int:
    return conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount


def purge_sessions(conn: sqlite3.Connection, *, now_s: int, idle_s: int) -> int:
    """Drop expired and idle sessions (housekeeping; lookups ignore them anyway)."""
    cursor = conn.execute(
        "DELETE FROM sessions WHERE expires_at <= ? OR last_seen <= ?", (now_s, now_s - idle_s)
    )
    return cursor.rowcount


# -- audit log ---------------------------------------------------------------


def append_audit(
    conn: sqlite3.Connection,
    *,
    at: str,
    user_id: int | None,
    actor: str,
    action: str,
    subject: str | None = None,
    detail: str | None = None,
) -> int:
    """Append one entry; its id orders the log."""
    cursor = conn.execute(
        "INSERT INTO audit_log (at, user_id, actor, action, subject, detail)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (at, user_id, actor, action, subject, detail),
    )
    return int(cursor.lastrowid or 0)


def audit_entries(
    conn: sqlite3.Connection,
    *,
    after_id: int = 0,
    limit: int = 100,
    user_id: int | None = None,
    subject: str | None = None,
) -> list[AuditEntry]:
    """Entries after `after_id` in order, optionally of one user or about one subject."""
    sql = "SELECT id, at, user_id, actor, action, subject, detail FROM audit_log WHERE id > ?"
    params: list[object] = [after_id]
    if user_id is not None:
        sql += " AND user_id = ?"
        params.append(user_id)
    if subject is not None:
        sql += " AND subject = ?"
        params.append(subject)
    rows = conn.execute(f"{sql} ORDER BY id LIMIT ?", (*params, limit)).fetchall()
    return [AuditEntry(*row) for row in rows]


# -- login attempts ----------------------------------------------------------


def attempts_since(conn: sqlite3.Connection, key: str, since_s: float) -> list[float]:
    """Times of the failed (or pending) attempts under `key` since `since_s`, oldest first."""
    rows = conn.execute(
        "SELECT at FROM login_attempts WHERE key = ? AND at > ? ORDER BY at", (key, since_s)
    )
    return [float(row[0]) for row in rows]


KNOWN_PREFIX = "known:"
"""Rows under keys with this prefix mark a successful login (an account's usual address),
not an attempt: `remember` keeps and forgets them, `add_attempts` leaves them alone."""


def add_attempts(
    conn: sqlite3.Connection, keys: Sequence[str], at_s: float, *, forget_before_s: float
) -> list[int]:
    """Record an attempt under each key (and forget attempts too old to matter); the row ids."""
    conn.execute(
        "DELETE FROM login_attempts WHERE at <= ? AND key NOT LIKE ?",
        (forget_before_s, KNOWN_PREFIX + "%"),
    )
    insert = "INSERT INTO login_attempts (key, at) VALUES (?, ?)"
    return [int(conn.execute(insert, (key, at_s)).lastrowid or 0) for key in keys]


def remove_attempts(conn: sqlite3.Connection, row_ids: Sequence[int]) -> None:
    conn.executemany("DELETE FROM login_attempts WHERE rowid = ?", [(r,) for r in row_ids])


def clear_attempts(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("DELETE FROM login_attempts WHERE key = ?", (key,))


def remember(conn: sqlite3.Connection, key: str, at_s: float, *, forget_before_s: float) -> None:
    """Mark `key` (a `KNOWN_PREFIX` key) as seen at `at_s`; forget marks older than
    `forget_before_s`."""
    conn.execute(
        "DELETE FROM login_attempts WHERE key LIKE ? AND (at <= ? OR key = ?)",
        (KNOWN_PREFIX + "%", forget_before_s, key),
    )
    conn.execute("INSERT INTO login_attempts (key, at) VALUES (?, ?)", (key, at_s))
