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
from gateway.store.files import private_dir, share, store_shares, tighten
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
    shared: bool = False,
) -> KeyRing:
    """Create the data folder, key file and schema as needed; return the field-encryption keys.

    The data folder is made 0700 and every file in it 0600 (a folder written
    under a loose umask, or by an older release, is closed here); a key file
    others could read is still refused, not quietly fixed.

    `shared` (a split install, `[gateway] store_shared_with_group`): the store, its
    WAL and the field key are opened to the group, for the web process's user.

    `then` runs on the freshly migrated store (the runtime loads the platform keys
    that `keys.rotate` changed). Pages of an unfinished allowlist snapshot stay
    staged, not in force, so the platform can resume it.
    """
    private_dir(database.parent)
    # first: a key file others could read is refused
    keys = KeyRing.load_or_create(key_file, group_readable=shared)
    shares = store_shares(database, key_file) if shared else {}
    if loosened := tighten(database.parent, keep=shares):
        log.warning("made %d file(s) in %s private to the gateway", len(loosened), database.parent)
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
    share(shares)  # the web process's user reaches the store through its group, nothing else
    return keys
