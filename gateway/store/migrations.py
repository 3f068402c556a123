"""Forward-only schema migrations, tracked in PRAGMA user_version.

All pending migrations are applied in one transaction together with the
version bump, so a crash leaves the file as the previous release wrote it. A file whose version is
newer than this code knows is refused, never "repaired".
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.store import users
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
    Migration(
        4,
        "platform: allowlist generations, person status, commands seen, trusted keys, alerts",
        (
            "INSERT INTO meta (key, value) VALUES ('allowlist_version', 0),"
            " ('allowlist_generation', 0)",
            # Credentials and tenancies gain a generation: 0 for a landlord's local
            # enrolment, otherwise the allowlist snapshot they came with. A snapshot is
            # staged under a new generation and switched to in one small transaction.
            """CREATE TABLE credentials_v4 (
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
                generation INTEGER NOT NULL DEFAULT 0,
                UNIQUE (kind, lookup, generation)
            )""",
            "INSERT INTO credentials_v4 SELECT *, 0 FROM credentials",
            "DROP TABLE credentials",
            "ALTER TABLE credentials_v4 RENAME TO credentials",
            "CREATE INDEX credentials_by_person ON credentials (person_id, generation)",
            "CREATE INDEX credentials_by_generation ON credentials (generation)",
            "ALTER TABLE tenancies ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
            "DROP INDEX tenancies_by_person",
            "CREATE INDEX tenancies_by_person ON tenancies (person_id, generation)",
            "CREATE INDEX tenancies_by_generation ON tenancies (generation)",
            """CREATE TABLE allowlist_people (
                generation INTEGER NOT NULL,
                platform_id TEXT NOT NULL,
                person_id TEXT NOT NULL REFERENCES people (id),
                name_sealed BLOB NOT NULL,
                PRIMARY KEY (generation, platform_id)
            )""",
            "CREATE INDEX allowlist_people_by_person ON allowlist_people (person_id)",
            # A snapshot is staged here first, in chunks: append-only tables without
            # indexes cost one page write per page, where staging into the indexed
            # tables rewrote random index pages in every chunk (27 s for 100,000).
            """CREATE TABLE staged_pages (
                version INTEGER NOT NULL,
                page INTEGER NOT NULL,
                pages INTEGER NOT NULL,
                generation INTEGER NOT NULL,
                PRIMARY KEY (version, page)
            )""",
            "CREATE TABLE staged_people AS SELECT * FROM people WHERE 0",
            "CREATE TABLE staged_allowlist_people AS SELECT * FROM allowlist_people WHERE 0",
            "CREATE TABLE staged_credentials AS SELECT * FROM credentials WHERE 0",
            "CREATE TABLE staged_tenancies AS SELECT * FROM tenancies WHERE 0",
            # Credentials a delta took away, so a running index can drop them too.
            """CREATE TABLE registry_removed (
                version INTEGER NOT NULL,
                lookup BLOB NOT NULL
            )""",
            "CREATE INDEX registry_removed_by_version ON registry_removed (version)",
            """CREATE TABLE person_status (
                person_id TEXT PRIMARY KEY REFERENCES people (id),
                as_of INTEGER NOT NULL DEFAULT 0,
                registration_state TEXT,
                registered_building TEXT,
                registered_unit TEXT,
                registered_on TEXT,
                moved_out_on TEXT,
                permit_issued_on TEXT,
                permit_endorsed_on TEXT,
                household_address_sealed BLOB,
                first_seen_on TEXT,
                last_seen_on TEXT,
                updated_at TEXT NOT NULL
            )""",
            """CREATE TABLE commands_seen (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                received_at TEXT NOT NULL,
                expires_at INTEGER NOT NULL,
                outcome TEXT NOT NULL,
                reason TEXT,
                detail TEXT
            )""",
            "CREATE INDEX commands_seen_by_expiry ON commands_seen (expires_at)",
            """CREATE TABLE platform_keys (
                kid TEXT PRIMARY KEY,
                public_key BLOB NOT NULL,
                added_at TEXT NOT NULL,
                retired_at TEXT
            )""",
            """CREATE TABLE alerts (
                id TEXT PRIMARY KEY,
                rule TEXT NOT NULL,
                person_id TEXT NOT NULL,
                raised_at TEXT NOT NULL,
                deadline TEXT,
                cleared_at TEXT,
                detail TEXT NOT NULL
            )""",
            "CREATE UNIQUE INDEX alerts_open ON alerts (rule, person_id) WHERE cleared_at IS NULL",
        ),
    ),
    Migration(
        5,
        "handheld terminals: per-terminal token hashes, and the record ids they delivered",
        (
            """CREATE TABLE terminals (
                id TEXT PRIMARY KEY,
                token_hash BLOB NOT NULL,
                created_at TEXT NOT NULL,
                revoked_at TEXT
            )""",
            """CREATE TABLE terminal_records (
                record_id TEXT PRIMARY KEY,
                terminal TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('registration', 'change', 'departure')),
                captured_at TEXT NOT NULL,
                received_at TEXT NOT NULL,
                seq INTEGER NOT NULL
            )""",
            "CREATE INDEX terminal_records_by_terminal ON terminal_records (terminal, received_at)",
        ),
    ),
    Migration(users.MIGRATION_6_VERSION, users.MIGRATION_6_PURPOSE, users.MIGRATION_6_SCRIPT),
    Migration(
        7,
        "event history: door and person columns with indexes for the web API's event list",
        (
            # VIRTUAL: computed from the payload when read, stored only in the indexes, so
            # existing rows are not rewritten and `INSERT INTO outbox (seq, id, type, ts,
            # payload)` is unchanged. json_valid first: json_extract raises on malformed
            # text, which would fail this migration, every later insert of such a row,
            # and the copy of a damaged store's rows in maintenance.recover.
            "ALTER TABLE outbox ADD COLUMN door TEXT GENERATED ALWAYS AS"
            " (CASE WHEN json_valid(payload) THEN json_extract(payload, '$.door') END) VIRTUAL",
            "ALTER TABLE outbox ADD COLUMN person TEXT GENERATED ALWAYS AS"
            " (CASE WHEN json_valid(payload) THEN json_extract(payload, '$.person') END) VIRTUAL",
            # Each index ends in seq, so every read of the event list is one range walked
            # newest-first with LIMIT: no sort, no scan (gateway/store/event_history.py says why
            # type is in the door and person indexes, and why person-less rows at a door
            # have one of their own). Rows without a door or person (most system events,
            # unknown cards) are left out of the indexes that could not use them.
            "CREATE INDEX outbox_by_person ON outbox (person, type, seq) WHERE person IS NOT NULL",
            "CREATE INDEX outbox_by_door ON outbox (door, type, seq) WHERE door IS NOT NULL",
            "CREATE INDEX outbox_personless_by_door ON outbox (door, type, seq)"
            " WHERE door IS NOT NULL AND person IS NULL",
            "CREATE INDEX outbox_by_type ON outbox (type, seq)",
            "CREATE INDEX outbox_by_ts ON outbox (ts)",
        ),
    ),
    Migration(
        8,
        "landlords' isolation: the name each tenancy was let under, the unit each card is for",
        (
            # A person may be the tenant of two landlords; each sees the name they entered
            # (people.name_sealed stays the first enrolment's, for admins), and each controls
            # only the cards enrolled for their own unit (gateway/api/directory.py).
            "ALTER TABLE tenancies ADD COLUMN name_sealed BLOB",
            "ALTER TABLE staged_tenancies ADD COLUMN name_sealed BLOB",
            "ALTER TABLE credentials ADD COLUMN unit TEXT",
            "ALTER TABLE staged_credentials ADD COLUMN unit TEXT",
            # Cards enrolled before: the person's unit when they have tenancies in one unit
            # only; otherwise no unit, and only an admin changes them.
            """UPDATE credentials SET unit = (
                SELECT min(t.unit) FROM tenancies t
                WHERE t.person_id = credentials.person_id AND t.generation = 0)
            WHERE generation = 0 AND (
                SELECT count(DISTINCT t.unit) FROM tenancies t
                WHERE t.person_id = credentials.person_id AND t.generation = 0) = 1""",
        ),
    ),
    Migration(
        9,
        "the platform's acknowledgement cursor, apart from the broker's PUBACK cursor",
        (
            # What a gateway of the previous release had PUBACKed counted as delivered then;
            # starting the new cursor there keeps an upgrade from resending its whole history
            # (the platform asks for anything it misses with `replay`).
            "INSERT INTO meta (key, value)"
            " SELECT 'acked_seq', value FROM meta WHERE key = 'delivered_seq'",
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
    pending = [m for m in MIGRATIONS if start < m.version <= target]
    if not pending:
        return start
    # All pending migrations in one transaction: an upgrade interrupted anywhere (power
    # cut, kill) leaves the file exactly as the previous release wrote it.
    with transaction(conn):
        for migration in pending:
            for statement in migration.script:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {pending[-1].version}")
    return start
