"""Forward-only schema migrations, tracked in PRAGMA user_version.

Each migration is applied in its own transaction together with the version
bump, so a crash leaves the file at a whole version. A file whose version is
newer than this code knows is refused, never "repaired".
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.store.db import transaction
from gateway.store.errors import SchemaTooNewError, translated


@dataclass(frozen=True)
class Migration:
    version: int
    purpose: str
    script: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "registry: people, credentials, tenancies, and the meta counters",
        (
            """CREATE TABLE meta (
                key TEXT PRIMARY KEY,
                value INTEGER NOT NULL
            ) WITHOUT ROWID""",
            "INSERT INTO meta (key, value) VALUES ('registry_version', 0)",
            """CREATE TABLE people (
                id TEXT PRIMARY KEY,
                id_hash BLOB NOT NULL UNIQUE,
                id_masked TEXT NOT NULL,
                id_number_sealed BLOB NOT NULL,
                name_sealed BLOB,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            """CREATE TABLE credentials (
                id TEXT PRIMARY KEY,
                person_id TEXT NOT NULL REFERENCES people (id),
                kind TEXT NOT NULL CHECK (kind IN ('card_uid', 'id_number', 'voucher')),
                lookup BLOB NOT NULL,
                masked TEXT NOT NULL,
                value_sealed BLOB NOT NULL,
                status TEXT NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'lost', 'revoked', 'returned', 'cancelled')),
                valid_from TEXT,
                valid_to TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                UNIQUE (kind, lookup)
            )""",
            "CREATE INDEX credentials_by_person ON credentials (person_id)",
            """CREATE TABLE tenancies (
                id TEXT PRIMARY KEY,
                person_id TEXT NOT NULL REFERENCES people (id),
                unit TEXT NOT NULL,
                room TEXT,
                valid_from TEXT NOT NULL,
                valid_to TEXT,
                created_at TEXT NOT NULL,
                CHECK (valid_to IS NULL OR valid_to > valid_from)
            )""",
            "CREATE INDEX tenancies_by_person ON tenancies (person_id)",
        ),
    ),
    Migration(
        2,
        "outbox: one ordered event stream with per-gateway seq and a delivery cursor",
        (
            """CREATE TABLE outbox (
                seq INTEGER PRIMARY KEY,
                id TEXT NOT NULL,
                type TEXT NOT NULL,
                ts TEXT NOT NULL,
                payload TEXT NOT NULL
            )""",
            "INSERT INTO meta (key, value) VALUES ('head_seq', 0), ('delivered_seq', 0)",
        ),
    ),
    Migration(
        3,
        "registry change log: which people changed at which registry version",
        (
            """CREATE TABLE registry_changes (
                version INTEGER PRIMARY KEY,
                person_id TEXT NOT NULL
            )""",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    with translated():
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, *, target: int = LATEST_VERSION) -> int:
    """Bring the file up to `target`; return the version it was at before."""
    start = schema_version(conn)
    if start > LATEST_VERSION:
        raise SchemaTooNewError(
            f"database schema is version {start}, this Rentgate knows up to "
            f"{LATEST_VERSION}: it was written by a newer release; refusing to start"
        )
    for migration in MIGRATIONS:
        if start < migration.version <= target:
            with transaction(conn):
                for statement in migration.script:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {migration.version}")
    return start
