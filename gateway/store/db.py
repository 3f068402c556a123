"""Opening the gateway's SQLite file the one way it is always opened."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.store.errors import translated
from gateway.store.files import DIR_MODE, private_file

BUSY_TIMEOUT_MS = 10_000


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with synchronous=FULL and foreign keys on.

    Autocommit mode (isolation_level=None): transactions are always explicit,
    so nothing commits by accident and BEGIN IMMEDIATE takes the write lock up
    front instead of failing halfway through. A new file is made 0600 first (its
    -wal and -shm follow its mode), whatever the umask.
    """
    with translated():
        if readonly:
            uri = f"{path.resolve().as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            if not path.exists():
                private_file(path)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise sqlite3.OperationalError(f"could not switch {path} to WAL (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error (translated to StoreError)."""
    with translated():
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """Rows of PRAGMA integrity_check other than "ok" (empty list: healthy)."""
    with translated():
        rows = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    return [] if rows == ["ok"] else rows
