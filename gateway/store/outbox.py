"""The outbox: every recorded event in one ordered stream, and how far it was delivered.

seq is the gateway's own counter, kept in `meta.head_seq` and advanced in the
same transaction that inserts the rows, so it is contiguous, starts at 1,
survives restarts and is never reused, even after delivered rows are pruned.
Two cursors: `meta.delivered_seq`, every event at or below it was PUBACKed by
the broker (it moves the send window; a new session resumes after it), and
`meta.acked_seq`, the platform's signed word that it has *stored* every event
at or below it (only that lets retention drop an event: brokers acknowledge and
then drop). Both only move forward and never past the head; an ack also moves
the PUBACK cursor, as the platform cannot have stored what the broker did not
take. Reading from a cursor uses the primary key, never a scan.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gateway.domain.events import OutboxEvent
from gateway.store.errors import translated


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    payload: str


@dataclass(frozen=True)
class OutboxStats:
    head_seq: int
    delivered_seq: int
    oldest_unsent_ts: datetime | None
    acked_seq: int = 0
    oldest_unacked_ts: datetime | None = None

    @property
    def depth(self) -> int:
        """Events not yet PUBACKed."""
        return self.head_seq - self.delivered_seq

    @property
    def unacked(self) -> int:
        """Events the platform has not acknowledged storing (retention keeps them all)."""
        return self.head_seq - self.acked_seq


class AckOutcome(StrEnum):
    """What a platform acknowledgement did to the cursor."""

    ADVANCED = "advanced"
    STALE = "stale"
    """At or below the cursor already: an old or replayed ack, a no-op."""
    ABOVE_HEAD = "above_head"
    """Beyond the newest recorded event: refused, nothing changes."""


def _meta(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0])


def head_seq(conn: sqlite3.Connection) -> int:
    with translated():
        return _meta(conn, "head_seq")


def delivered_seq(conn: sqlite3.Connection) -> int:
    with translated():
        return _meta(conn, "delivered_seq")


def acked_seq(conn: sqlite3.Connection) -> int:
    with translated():
        return _meta(conn, "acked_seq")


_ROWS_PER_INSERT = 500


@functools.lru_cache(maxsize=8)
def _insert_statement(rows: int) -> str:
    # Only "?" placeholders are joined here; every value is bound.
    return "INSERT INTO outbox (seq, id, type, ts, payload) VALUES " + ",".join(  # noqa: S608
        ["(?, ?, ?, ?, ?)"] * rows
    )


def append_rows(conn: sqlite3.Connection, events: Sequence[OutboxEvent]) -> int:
    """Insert events with the next seqs; call inside a write transaction. Returns the new head."""
    head = _meta(conn, "head_seq")
    if not events:
        return head
    # Multi-row INSERTs: one statement step per chunk, where executemany would take
    # one per row and give up the GIL around each (starving this thread under load).
    chunk = min(_ROWS_PER_INSERT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 5)
    for start in range(0, len(events), chunk):
        rows = events[start : start + chunk]
        values: list[object] = []
        for n, event in enumerate(rows, start=head + start + 1):
            values += (n, event.id, event.type, event.ts, event.payload)
        conn.execute(_insert_statement(len(rows)), values)
    head += len(events)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'head_seq'", (head,))
    return head


def mark_delivered(conn: sqlite3.Connection, through_seq: int) -> None:
    """Advance the delivery cursor (never backwards, never past the head)."""
    conn.execute(
        "UPDATE meta SET value = max(value, min(?, (SELECT value FROM meta"
        " WHERE key = 'head_seq'))) WHERE key = 'delivered_seq'",
        (through_seq,),
    )


def mark_acked(conn: sqlite3.Connection, through_seq: int) -> AckOutcome:
    """Record the platform's acknowledgement of every event through `through_seq`.

    Call inside a write transaction. Above the head it is refused (the platform
    cannot have stored what was never recorded: a bug or a forgery) and nothing
    changes; at or below the cursor it is a no-op, so acks may repeat or cross.
    """
    head = _meta(conn, "head_seq")
    if through_seq > head:
        return AckOutcome.ABOVE_HEAD
    if through_seq <= _meta(conn, "acked_seq"):
        return AckOutcome.STALE
    conn.execute("UPDATE meta SET value = ? WHERE key = 'acked_seq'", (through_seq,))
    conn.execute(
        "UPDATE meta SET value = max(value, ?) WHERE key = 'delivered_seq'", (through_seq,)
    )
    return AckOutcome.ADVANCED


def oldest_kept(conn: sqlite3.Connection) -> int | None:
    """The lowest seq still in the outbox (what a replay can go back to), None if empty."""
    with translated():
        row = conn.execute("SELECT min(seq) FROM outbox").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def read_after(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[StoredEvent]:
    """Up to `limit` events with seq > after_seq, in seq order."""
    with translated():
        rows = conn.execute(
            "SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
    return [StoredEvent(seq, payload) for seq, payload in rows]


def stats(conn: sqlite3.Connection, delivered_at_least: int = 0) -> OutboxStats:
    """Head, cursor and the timestamp of the oldest undelivered event, in one read.

    `delivered_at_least` lets the uplink count PUBACKs whose cursor write is still queued.
    """
    with translated():
        conn.execute("BEGIN")
        try:
            head = _meta(conn, "head_seq")
            delivered = max(_meta(conn, "delivered_seq"), min(delivered_at_least, head))
            acked = _meta(conn, "acked_seq")
            row = conn.execute("SELECT ts FROM outbox WHERE seq = ?", (delivered + 1,)).fetchone()
            unacked = conn.execute(
                "SELECT ts FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1", (acked,)
            ).fetchone()
        finally:
            conn.execute("COMMIT")
    oldest = datetime.fromisoformat(row[0]) if row else None
    oldest_unacked = datetime.fromisoformat(unacked[0]) if unacked else None
    return OutboxStats(head, delivered, oldest, acked, oldest_unacked)
