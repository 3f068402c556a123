"""SQL for the audit log's retention: entries older than the retention period go.

The log is append-only: a trigger refuses every DELETE (migration 6). Pruning
lifts that trigger inside its own transaction only: DROP, DELETE, CREATE
commit together or not at all, so no other connection ever sees the log
deletable, and no migration is needed. The period itself is checked by the
config (`[storage] audit_days`, at least `MIN_AUDIT_DAYS`).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from gateway.store.users import AUDIT_NO_DELETE_TRIGGER

MIN_AUDIT_DAYS = 183
"""Six months: the least the Cybersecurity Law (art. 21) asks network logs to be kept."""
PRUNE_CHUNK = 1_000


def prune_audit(conn: sqlite3.Connection, *, before: datetime, limit: int = PRUNE_CHUNK) -> int:
    """Delete up to `limit` of the oldest entries stamped before `before`; how many went.

    Call in a transaction. Entries are looked at in id order (the order they were
    written), so one chunk costs `limit` rows however long the log is. Times are
    compared as instants (`julianday` reads the ISO offset), not as text.
    """
    oldest = "SELECT id FROM audit_log ORDER BY id LIMIT ?"
    expired = f"SELECT id FROM audit_log WHERE id IN ({oldest}) AND julianday(at) < julianday(?)"  # noqa: S608
    ids = [row[0] for row in conn.execute(expired, (limit, before.isoformat()))]
    if not ids:
        return 0
    conn.execute("DROP TRIGGER audit_log_no_delete")
    marks = ", ".join("?" * len(ids))
    deleted = conn.execute(f"DELETE FROM audit_log WHERE id IN ({marks})", ids).rowcount  # noqa: S608
    conn.execute(AUDIT_NO_DELETE_TRIGGER)
    return deleted
