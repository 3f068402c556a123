"""The ingest's writes to PostgreSQL: one transaction per batch, and what to acknowledge after.

A batch of deliveries from many gateways is one transaction: the events go in with
`COPY` into a temporary table and one `INSERT … SELECT … ON CONFLICT DO NOTHING`
(a repeat, from a resend or another instance, is a no-op), the registrations and
states with pipelined statements. In the same transaction each touched gateway's
`stored_seq` is moved to the end of its gap-free run of stored seqs; that, once
committed, is what the gateway is acknowledged.

Several instances write at once. Rows are inserted and locked in (gw, seq) order, so
two batches never wait on each other in a circle; the run is computed after the
gateway's row is locked, so it sees every event committed before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from gateway.platform.intake import Intake, RegistrationRow, StateRow
from gateway.platform.schema import REJECTED_PAYLOAD_MAX, ensure_month, migrate, month_of

DEFAULT_STATE_EVERY_S = 60.0
"""A gateway's birth interval when its state does not say (the gateway's default)."""
WILL_SLACK_S = 30
"""A Will carries the time its session connected, a little before that session's birth: an
offline message that much older than the current online streak's first state still counts."""

_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS incoming (gw text, envelope jsonb) ON COMMIT DELETE ROWS
"""
_INSERT_EVENTS = """
WITH added AS (
    INSERT INTO events (gw, seq, ts, type, body)
    SELECT i.gw, (e->>'seq')::bigint, (e->>'ts')::timestamptz, e->>'type', e
    FROM incoming i CROSS JOIN LATERAL jsonb_array_elements(i.envelope->'events') e
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING
    RETURNING gw, seq
)
SELECT gw, count(*), max(seq) FROM added GROUP BY gw
"""
_TOUCH_GATEWAYS = """
INSERT INTO gateways AS g (gw, max_seq, events_stored, last_event_at)
SELECT gw, top, added, clock_timestamp()
FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS u(gw, top, added) ORDER BY gw
ON CONFLICT (gw) DO UPDATE SET
    max_seq = greatest(g.max_seq, excluded.max_seq),
    events_stored = g.events_stored + excluded.events_stored,
    last_event_at = excluded.last_event_at
"""
_UPSERT_STATE = """
INSERT INTO gateways AS g (gw, online, state_ts, streak_ts, state_seen_at, state_every_s,
                           head_seq, acked_floor, backlog, oldest_unacked_s, software)
VALUES (%(gw)s, %(online)s, %(ts)s, CASE WHEN %(online)s THEN %(ts)s END, clock_timestamp(),
        %(every)s, %(head)s, coalesce(%(acked)s, 0), %(backlog)s, %(oldest)s, %(software)s)
ON CONFLICT (gw) DO UPDATE SET
    online = excluded.online,
    streak_ts = CASE WHEN excluded.online AND g.online IS NOT TRUE THEN excluded.state_ts
                     ELSE g.streak_ts END,
    state_ts = greatest(g.state_ts, excluded.state_ts),
    state_seen_at = excluded.state_seen_at,
    state_every_s = coalesce(excluded.state_every_s, g.state_every_s),
    head_seq = greatest(g.head_seq, excluded.head_seq),
    acked_floor = greatest(g.acked_floor, excluded.acked_floor),
    backlog = CASE WHEN excluded.online THEN excluded.backlog ELSE g.backlog END,
    oldest_unacked_s = CASE WHEN excluded.online THEN excluded.oldest_unacked_s
                            ELSE g.oldest_unacked_s END,
    software = coalesce(excluded.software, g.software)
WHERE g.state_ts IS NULL OR excluded.state_ts > g.state_ts
   OR (NOT excluded.online AND g.online
       AND excluded.state_ts >= g.streak_ts - make_interval(secs => %(will_slack)s))
"""
_ADVANCE = """
WITH t AS (
    SELECT gw, greatest(stored_seq, acked_floor) AS floor
    FROM gateways WHERE gw = ANY(%s) ORDER BY gw FOR UPDATE
), runs AS (
    SELECT t.gw, t.floor, e.seq, e.seq - row_number() OVER (PARTITION BY t.gw ORDER BY e.seq) AS k
    FROM t JOIN LATERAL (
        SELECT DISTINCT seq FROM events WHERE events.gw = t.gw AND events.seq > t.floor
    ) e ON true
), through AS (
    SELECT t.gw, coalesce(max(runs.seq), t.floor) AS seq
    FROM t LEFT JOIN runs ON runs.gw = t.gw AND runs.k = t.floor
    GROUP BY t.gw, t.floor
)
UPDATE gateways g
SET stored_seq = through.seq, progressed_at = clock_timestamp(), replays = 0, replay_at = NULL
FROM through WHERE g.gw = through.gw AND through.seq > g.stored_seq
RETURNING g.gw, g.stored_seq
"""
_INSERT_REGISTRATION = """
INSERT INTO registrations (gw, seq, record, kind, terminal, captured_at, building, unit, room,
                           moved_in_on, moved_out_on, id_masked, id_hash, id_number, name, phone,
                           workplace, voucher, sealed, opened)
VALUES (%(gw)s, %(seq)s, %(record)s, %(kind)s, %(terminal)s, %(captured_at)s, %(building)s,
        %(unit)s, %(room)s, %(moved_in_on)s, %(moved_out_on)s, %(id_masked)s, %(id_hash)s,
        %(id_number)s, %(name)s, %(phone)s, %(workplace)s, %(voucher)s, %(sealed)s, %(opened)s)
ON CONFLICT (gw, seq) DO NOTHING
"""
_DUE_REPLAYS = """
UPDATE gateways
SET replay_at = clock_timestamp(), replay_from = stored_seq + 1, replays = replays + 1
WHERE gw IN (
    SELECT gw FROM gateways
    WHERE (max_seq > stored_seq OR (online AND backlog = 0 AND head_seq > stored_seq))
      AND progressed_at < clock_timestamp() - make_interval(secs => %(gap)s)
      AND (replay_at IS NULL OR replay_at < clock_timestamp()
           - make_interval(secs => least(%(gap)s * power(2, least(replays, 8)), %(most)s)))
    ORDER BY gw LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)
RETURNING gw, replay_from
"""


@dataclass
class Stored:
    """What one committed batch did."""

    events_new: int = 0
    events_repeated: int = 0
    registrations: int = 0
    states: int = 0
    rejected: int = 0
    acks: dict[str, int] = field(default_factory=dict)
    """Per gateway, the seq through which everything is stored, to acknowledge now."""


class IngestStore:
    """One instance's connection to the platform database."""

    def __init__(self, dsn: str) -> None:
        self._conn: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(dsn)
        self._conn.execute("SET synchronous_commit = on")
        self._conn.commit()
        migrate(self._conn)
        self._conn.execute(_STAGE)
        self._conn.commit()
        self._months: set[tuple[int, int]] = set()

    def store(self, intake: Intake) -> Stored:
        """Commit the batch; after this returns, its deliveries may be settled and acked."""
        for year, month in {month_of(event.ts) for event in intake.events} - self._months:
            ensure_month(self._conn, year, month)
            self._months.add((year, month))
        stored = Stored(registrations=len(intake.registrations), states=len(intake.states))
        with self._conn.transaction(), self._conn.cursor() as cursor:
            added = self._insert_events(cursor, intake)
            stored.events_new = sum(count for count, _ in added.values())
            stored.events_repeated = len(intake.events) - stored.events_new
            cursor.executemany(
                _INSERT_REGISTRATION, [_registration(r) for r in intake.registrations]
            )
            cursor.executemany(_UPSERT_STATE, [_state(s) for s in _in_order(intake.states)])
            stored.rejected = self._keep_rejections(cursor, intake)
            received = Counter(event.gw for event in intake.events)
            touched = sorted(set(received) | {state.gw for state in intake.states})
            advanced = self._advance(cursor, touched)
            # A gateway that sent what is already stored, or whose state shows an older ack,
            # did not get its ack: send it again even though nothing moved.
            lagging = {gw for gw, count in received.items() if added.get(gw, (0, 0))[0] < count}
            lagging |= {
                state.gw for state in intake.states if state.online and state.acked_seq is not None
            }
            stored.acks = advanced | self._lagging_acks(cursor, lagging - set(advanced), intake)
        return stored

    def _insert_events(
        self, cursor: psycopg.Cursor[tuple[Any, ...]], intake: Intake
    ) -> dict[str, tuple[int, int]]:
        """COPY the checked envelopes in; the database splits them into event rows."""
        if not intake.envelope_rows:
            return {}
        with cursor.copy("COPY incoming (gw, envelope) FROM STDIN") as copy:
            for row in intake.envelope_rows:
                copy.write_row((row.gw, row.payload))
        added = {gw: (int(count), int(top)) for gw, count, top in cursor.execute(_INSERT_EVENTS)}
        received = sorted({row.gw for row in intake.envelope_rows})
        cursor.execute(
            _TOUCH_GATEWAYS,
            (
                received,
                [added.get(gw, (0, 0))[1] for gw in received],
                [added.get(gw, (0, 0))[0] for gw in received],
            ),
        )
        return added

    def _advance(self, cursor: psycopg.Cursor[tuple[Any, ...]], gws: list[str]) -> dict[str, int]:
        if not gws:
            return {}
        return {gw: int(seq) for gw, seq in cursor.execute(_ADVANCE, (gws,))}

    def _lagging_acks(
        self, cursor: psycopg.Cursor[tuple[Any, ...]], gws: set[str], intake: Intake
    ) -> dict[str, int]:
        if not gws:
            return {}
        stored = dict(
            cursor.execute(
                "SELECT gw, stored_seq FROM gateways WHERE gw = ANY(%s) AND stored_seq > 0",
                (sorted(gws),),
            ).fetchall()
        )
        shown = {s.gw: s.acked_seq for s in intake.states if s.acked_seq is not None}
        return {
            gw: int(seq)
            for gw, seq in stored.items()
            if gw not in shown or (shown[gw] or 0) < int(seq)
        }

    def _keep_rejections(self, cursor: psycopg.Cursor[tuple[Any, ...]], intake: Intake) -> int:
        cursor.executemany(
            "INSERT INTO rejected (topic, reason, payload) VALUES (%s, %s, %s)",
            [
                (r.topic[:512], r.reason, r.payload[:REJECTED_PAYLOAD_MAX])
                for r in intake.rejections
            ],
        )
        return len(intake.rejections)

    def due_replays(
        self, gap_after_s: float, most_s: float = 600.0, limit: int = 1000
    ) -> list[tuple[str, int]]:
        """Gateways whose gap stayed open `gap_after_s` with no progress, claimed for a replay
        (with backoff per gateway; one instance claims each): (gw, from_seq)."""
        with self._conn.transaction():
            rows = self._conn.execute(
                _DUE_REPLAYS, {"gap": gap_after_s, "most": most_s, "limit": limit}
            ).fetchall()
        return [(str(gw), int(seq)) for gw, seq in rows]

    def rollback(self) -> None:
        """After a failed batch: the connection is usable again (or raises if it is gone)."""
        self._conn.rollback()

    @property
    def broken(self) -> bool:
        return self._conn.closed or self._conn.broken

    def close(self) -> None:
        self._conn.close()


def _in_order(states: Iterable[StateRow]) -> list[StateRow]:
    """One gateway's states in the order they were made; gateways in a fixed order (locks)."""
    return sorted(states, key=lambda s: (s.gw, s.ts, s.online))


def _state(state: StateRow) -> dict[str, Any]:
    return {
        "gw": state.gw,
        "online": state.online,
        "ts": state.ts,
        "every": state.state_every_s,
        "head": state.head_seq,
        "acked": state.acked_seq,
        "backlog": state.backlog,
        "oldest": state.oldest_unacked_s,
        "software": state.software,
        "will_slack": WILL_SLACK_S,
    }


def _registration(row: RegistrationRow) -> dict[str, Any]:
    personal = row.personal or {}
    return {
        "gw": row.gw,
        "seq": row.seq,
        "record": row.record,
        "kind": row.kind,
        "terminal": row.terminal,
        "captured_at": row.captured_at,
        "building": row.building,
        "unit": row.unit,
        "room": row.room,
        "moved_in_on": row.moved_in_on,
        "moved_out_on": row.moved_out_on,
        "id_masked": row.id_masked,
        "id_hash": row.id_hash,
        "id_number": personal.get("id_number"),
        "name": personal.get("name"),
        "phone": personal.get("phone"),
        "workplace": personal.get("workplace"),
        "voucher": personal.get("voucher"),
        "sealed": row.sealed,
        "opened": row.personal is not None or row.sealed is None,
    }
