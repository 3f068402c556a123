"""SQL for keeping the data dir within its budget: delivered history pruned, space reclaimed.

Only events at or below the platform's acknowledgement cursor (`acked_seq`) are
ever deleted: an event the broker PUBACKed but the platform has not said it
stored is undelivered (brokers acknowledge and then drop), and an undelivered
record is never dropped, whatever the budget says. The file is in
`auto_vacuum = INCREMENTAL` mode, so freed pages go back to the filesystem a
chunk at a time instead of in one long VACUUM.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.store.errors import translated

PRUNE_CHUNK = 1_000
"""Rows deleted per writer transaction: with the event-history indexes (migration 7) a
1,000-row chunk holds the events queued behind it back ~20 ms, 5,000 rows ~85 ms."""
RECLAIM_PAGES = 2_000
_CURSOR = "(SELECT value FROM meta WHERE key = 'acked_seq')"
"""The cursor retention obeys: the platform's acknowledgement, never the broker's PUBACK."""


@dataclass(frozen=True)
class Usage:
    file_bytes: int
    """The database and its WAL on disk."""
    free_bytes: int
    """Pages inside the file that are free (reclaimable)."""
    undelivered_bytes: int
    """Payload bytes of events not yet acknowledged by the platform."""
    undelivered: int
    """Events above the platform's acknowledgement cursor."""
    delivered_kept: int
    """Acknowledged events still kept (history): what retention may prune."""

    @property
    def used_bytes(self) -> int:
        return self.file_bytes - self.free_bytes


def ensure_incremental_vacuum(conn: sqlite3.Connection) -> bool:
    """Switch the file to incremental auto-vacuum (a one-time VACUUM); True if it did."""
    with translated():
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            return False
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
        return True


def usage(conn: sqlite3.Connection, path: Path) -> Usage:
    with translated():
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        free_pages = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        delivered = int(conn.execute(f"SELECT {_CURSOR}").fetchone()[0])
        undelivered, pending_bytes = conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox WHERE seq > ?",
            (delivered,),
        ).fetchone()
        (kept,) = conn.execute(
            "SELECT count(*) FROM outbox WHERE seq <= ?", (delivered,)
        ).fetchone()
    size = 0
    for candidate in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            size += candidate.stat().st_size
    return Usage(size, free_pages * page_size, int(pending_bytes), int(undelivered), int(kept))


def prune_delivered(
    conn: sqlite3.Connection, *, before: datetime | None, limit: int = PRUNE_CHUNK
) -> int:
    """Delete up to `limit` of the oldest events the platform acknowledged (only those
    stamped before `before`, if given). Call in a transaction; returns how many went."""
    cursor = _CURSOR
    if before is None:
        query = (
            f"DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE seq <= {cursor}"  # noqa: S608
            " ORDER BY seq LIMIT ?)"
        )
        return conn.execute(query, (limit,)).rowcount
    query = (
        f"DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE seq <= {cursor}"  # noqa: S608
        " AND ts < ? ORDER BY seq LIMIT ?)"
    )
    return conn.execute(query, (before.isoformat(timespec="milliseconds"), limit)).rowcount


PERSONAL_EVENT_TYPES = ("registration.captured",)
"""Event types that carry a full ID number (sealed to the platform's key): kept only briefly
once the platform has them, as a second line behind the seal."""


def prune_personal(conn: sqlite3.Connection, *, before: datetime, limit: int = PRUNE_CHUNK) -> int:
    """Delete events carrying full ID numbers that the platform acknowledged, stamped before
    `before` (the grace period), whatever the history period says. Call in a transaction."""
    cursor = _CURSOR
    marks = ", ".join("?" * len(PERSONAL_EVENT_TYPES))
    query = (
        f"DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE seq <= {cursor}"  # noqa: S608
        f" AND type IN ({marks}) AND ts < ? ORDER BY seq LIMIT ?)"
    )
    args = (*PERSONAL_EVENT_TYPES, before.isoformat(timespec="milliseconds"), limit)
    return conn.execute(query, args).rowcount


def reclaim(conn: sqlite3.Connection, pages: int = RECLAIM_PAGES) -> None:
    """Give up to `pages` free pages back to the filesystem (the file shrinks at the next
    checkpoint). Not inside a transaction: give it a connection of its own.

    Each step of the pragma frees one page and the sqlite3 module steps an
    `execute` only once, so it goes through `executescript`, which runs it to
    the end (and would commit an open transaction first: hence its own connection).
    """
    if conn.in_transaction:
        raise ValueError("reclaim needs a connection outside any transaction")
    with translated():
        conn.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
