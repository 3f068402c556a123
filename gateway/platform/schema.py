"""The platform's tables in PostgreSQL, and monthly partitions of the events.

- `events`: every event once, keyed by (gw, seq) — with `ts`, because a partitioned
  table's key must hold its partition column; a repeat carries the same ts, so the
  key still says "this event of this gateway". Partitioned by month of `ts` (UTC):
  a month is dropped or archived whole, and a month's index stays in memory.
- `registrations`: one row per `registration.captured`, personal fields opened:
  this is the table the platform registers people from.
- `gateways`: one row per gateway: presence (its latest state), how far its stream
  is stored without a gap (`stored_seq`, what is acknowledged to it), the highest
  seq stored, and the replay requests sent to repair a gap.
- `rejected`: what could not be taken, with the reason, for a person to look at.

`migrate()` is idempotent; every ingest instance runs it at start.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

SCHEMA_VERSION = 1

DDL = """
CREATE TABLE IF NOT EXISTS events (
    gw text NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz NOT NULL,
    type text NOT NULL,
    body jsonb NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (gw, seq, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE IF NOT EXISTS registrations (
    gw text NOT NULL,
    seq bigint NOT NULL,
    record text NOT NULL,
    kind text,
    terminal text,
    captured_at timestamptz,
    building text,
    unit text,
    room text,
    moved_in_on date,
    moved_out_on date,
    id_masked text,
    id_hash text,
    id_number text,
    name text,
    phone text,
    workplace text,
    voucher text,
    sealed jsonb,
    opened boolean NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (gw, seq)
);
CREATE INDEX IF NOT EXISTS registrations_by_id_hash ON registrations (id_hash);
CREATE INDEX IF NOT EXISTS registrations_unopened ON registrations (gw, seq) WHERE NOT opened;

CREATE TABLE IF NOT EXISTS gateways (
    gw text PRIMARY KEY,
    online boolean,
    state_ts timestamptz,
    streak_ts timestamptz,
    state_seen_at timestamptz,
    state_every_s real,
    head_seq bigint,
    acked_floor bigint NOT NULL DEFAULT 0,
    backlog bigint,
    oldest_unacked_s real,
    software text,
    stored_seq bigint NOT NULL DEFAULT 0,
    max_seq bigint NOT NULL DEFAULT 0,
    events_stored bigint NOT NULL DEFAULT 0,
    last_event_at timestamptz,
    progressed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    replay_at timestamptz,
    replay_from bigint,
    replays integer NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS rejected (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    topic text NOT NULL,
    reason text NOT NULL,
    payload bytea NOT NULL
);

CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);
"""

REJECTED_PAYLOAD_MAX = 65_536
"""Bytes of a rejected message kept: enough to see what it was, not a way to fill the disk."""


def migrate(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Create what is missing; several instances may start at once (an advisory lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('rentgate-schema'))")
        conn.execute(DDL)
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] if row else None
        if current is None:
            conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))
        elif int(str(current)) > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database is at schema {current}, newer than this ingest ({SCHEMA_VERSION})"
            )


def month_of(ts: datetime) -> tuple[int, int]:
    utc = ts.astimezone(UTC)
    return utc.year, utc.month


def ensure_month(conn: psycopg.Connection[tuple[object, ...]], year: int, month: int) -> None:
    """The partition for one month (UTC), created if missing, in a short transaction of its own
    (creating a partition locks the parent table: not inside a batch)."""
    following = (year + 1, 1) if month == 12 else (year, month + 1)
    name = f"events_y{year:04d}m{month:02d}"
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('rentgate-partitions'))")
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        if exists and exists[0]:
            return
        conn.execute(
            f"CREATE TABLE {name} PARTITION OF events FOR VALUES"
            f" FROM ('{year:04d}-{month:02d}-01 00:00+00')"
            f" TO ('{following[0]:04d}-{following[1]:02d}-01 00:00+00')"
        )
