"""The terminal's own offline queue: every capture survives until the gateway has it.

One SQLite file in WAL mode with synchronous=FULL: `add` returns only once the
record is on disk, so a capture that was confirmed survives kill -9 and power
loss. A record is `pending` until the gateway's reply says `stored` or
`duplicate` (then `sent`), or `rejected` with the gateway's reason (kept and
shown; `retry_rejected` puts them back). Marking happens after the reply, so a
crash in between only sends a record again, which the gateway recognises.

The record itself (ID number, name…) is sealed with AES-256-GCM under the
terminal's key file and dropped once the gateway has it; what stays for the
co-ordinator's lists is the masked ID number, kind, place and times.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.domain.capture import CapturedRecord
from gateway.errors import RentgateError

SCHEMA_VERSION = 1
_NONCE = 12
_SCHEMA = (
    """CREATE TABLE records (
        n INTEGER PRIMARY KEY,
        record_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        id_masked TEXT NOT NULL,
        building TEXT NOT NULL,
        unit TEXT NOT NULL,
        captured_at TEXT NOT NULL,
        sealed BLOB,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sent', 'rejected')),
        outcome TEXT,
        seq INTEGER,
        reason TEXT,
        sent_at TEXT
    )""",
    "CREATE INDEX records_pending ON records (n) WHERE state = 'pending'",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)


class QueueError(RentgateError):
    """The queue file or its key cannot be used; the message says what to do."""


class RecordState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class QueuedRecord:
    """A queued record as the co-ordinator's lists show it (no full personal data)."""

    n: int
    record_id: str
    kind: str
    id_masked: str
    building: str
    unit: str
    captured_at: str
    state: RecordState
    reason: str | None


@dataclass(frozen=True, slots=True)
class QueueCounts:
    pending: int
    sent: int
    rejected: int

    @property
    def total(self) -> int:
        return self.pending + self.sent + self.rejected


@dataclass(frozen=True, slots=True)
class Delivered:
    """The gateway's word on one record: `stored` or `duplicate`, and the event's seq."""

    outcome: str
    seq: int | None


def create_key(path: Path) -> None:
    """Write a new 32-byte key file (mode 0600) atomically; keep an existing one."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64encode(os.urandom(32)) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def load_key(path: Path) -> bytes:
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except FileNotFoundError as exc:
        raise QueueError(f"key file {path} is missing: run `rentgate-terminal init`") from exc
    except ValueError as exc:
        raise QueueError(f"key file {path} is damaged") from exc
    if len(key) != 32:
        raise QueueError(f"key file {path} is damaged")
    return key


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Queue:
    """The terminal's records, pending and sent. One process at a time writes (SQLite locks)."""

    def __init__(self, path: Path, key: bytes) -> None:
        self._aead = AESGCM(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, isolation_level=None, timeout=10)
            if self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                raise QueueError(f"could not switch {path} to WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    for statement in _SCHEMA:
                        self._conn.execute(statement)
                elif version != SCHEMA_VERSION:
                    raise QueueError(f"{path} has queue schema {version}, this terminal knows 1")
        except sqlite3.Error as exc:
            raise QueueError(f"cannot open the queue {path}: {exc}") from exc

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._conn
        except sqlite3.Error as exc:
            raise QueueError(f"the queue could not be read: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise QueueError(f"the queue could not be written: {exc}") from exc

    # -- capture ---------------------------------------------------------------

    def add(self, record: CapturedRecord) -> None:
        """Queue a record; durable when this returns."""
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._aead.encrypt(
            nonce, record.model_dump_json().encode(), record.record_id.encode()
        )
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO records (record_id, kind, id_masked, building, unit, captured_at,"
                " sealed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.record_id,
                    record.kind.value,
                    record.id_masked,
                    record.building,
                    record.unit,
                    record.captured_at.isoformat(),
                    sealed,
                ),
            )

    # -- sync ------------------------------------------------------------------

    def next_batch(self, limit: int) -> list[tuple[str, str]]:
        """The oldest pending records as (record id, record JSON)."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT record_id, sealed FROM records WHERE state = 'pending' ORDER BY n LIMIT ?",
                (limit,),
            ).fetchall()
        return [(record_id, self._open(record_id, sealed)) for record_id, sealed in rows]

    def _open(self, record_id: str, sealed: bytes) -> str:
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], record_id.encode()).decode()
        except InvalidTag as exc:
            raise QueueError(
                f"record {record_id} cannot be opened with this terminal's key file"
            ) from exc

    def mark(
        self,
        delivered: Mapping[str, Delivered],
        rejected: Mapping[str, str],
        now: datetime,
    ) -> int:
        """Record the gateway's reply for pending records in one transaction; how many changed."""
        changed = 0
        with self._transaction() as conn:
            for record_id, outcome in delivered.items():
                changed += conn.execute(
                    "UPDATE records SET state = 'sent', outcome = ?, seq = ?, sent_at = ?,"
                    " sealed = NULL, reason = NULL WHERE record_id = ? AND state = 'pending'",
                    (outcome.outcome, outcome.seq, now.isoformat(), record_id),
                ).rowcount
            for record_id, reason in rejected.items():
                changed += conn.execute(
                    "UPDATE records SET state = 'rejected', reason = ?"
                    " WHERE record_id = ? AND state = 'pending'",
                    (reason, record_id),
                ).rowcount
        return changed

    def retry_rejected(self) -> int:
        """Put rejected records back in line (after the gateway was fixed or updated)."""
        with self._transaction() as conn:
            return conn.execute(
                "UPDATE records SET state = 'pending' WHERE state = 'rejected'"
            ).rowcount

    # -- what the co-ordinator sees ----------------------------------------------

    def pending_count(self) -> int:
        with self._reading() as conn:
            row = conn.execute("SELECT count(*) FROM records WHERE state = 'pending'").fetchone()
        return int(row[0])

    def counts(self) -> QueueCounts:
        with self._reading() as conn:
            found = dict(conn.execute("SELECT state, count(*) FROM records GROUP BY state"))
        return QueueCounts(found.get("pending", 0), found.get("sent", 0), found.get("rejected", 0))

    def listed(self, state: RecordState, limit: int) -> list[QueuedRecord]:
        """Records in one state, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT n, record_id, kind, id_masked, building, unit, captured_at, reason"
                " FROM records WHERE state = ? ORDER BY n LIMIT ?",
                (state.value, limit),
            ).fetchall()
        return [
            QueuedRecord(n, record_id, kind, masked, building, unit, captured, state, reason)
            for n, record_id, kind, masked, building, unit, captured, reason in rows
        ]

    def get_meta(self, key: str) -> str | None:
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
