"""Opening the store at start: check its integrity, create or upgrade its schema, load its key.

The runtime calls these once before anything reads or writes the store, so the
rest of the gateway may assume a current schema and a usable key file.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from gateway.store import maintenance, retention
from gateway.store.crypto import KeyRing
from gateway.store.db import connect
from gateway.store.migrations import migrate

log = logging.getLogger(__name__)


def check_store(database: Path) -> maintenance.Recovery | None:
    """`PRAGMA quick_check` at start; a damaged store is kept aside and rebuilt."""
    if not database.exists():
        return None
    problems = maintenance.quick_check(database)
    if not problems:
        return None
    log.error("store %s failed its integrity check: %s", database, problems[:5])
    return maintenance.recover(database)


def open_store(
    database: Path,
    key_file: Path,
    *,
    then: Callable[[sqlite3.Connection], None] | None = None,
) -> KeyRing:
    """Create the data folder, key file and schema as needed; return the field-encryption keys.

    `then` runs on the freshly migrated store (the runtime loads the platform keys
    that `keys.rotate` changed). Pages of an unfinished allowlist snapshot stay
    staged, not in force, so the platform can resume it.
    """
    database.parent.mkdir(parents=True, exist_ok=True)
    keys = KeyRing.load_or_create(key_file)
    conn = connect(database)
    try:
        if retention.ensure_incremental_vacuum(conn):
            log.info("store %s switched to incremental vacuum", database)
        if migrate(conn) == 0:
            log.info("created store %s", database)
        if then is not None:
            then(conn)
    finally:
        conn.close()
    return keys
