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
SELECT gw, count(*), min(seq), max(seq) FROM added GROUP BY gw
"""
_ENSURE_GATEWAYS = """
INSERT INTO gateways (gw) SELECT gw FROM unnest(%s::text[]) AS u(gw) ORDER BY gw
ON CONFLICT (gw) DO NOTHING
"""
_LOCK_GATEWAYS = """
SELECT gw, stored_seq, greatest(stored_seq, acked_floor), max_seq
FROM gateways WHERE gw = ANY(%s) ORDER BY gw FOR UPDATE
"""
_SEQS_ABOVE = """
SELECT DISTINCT seq FROM events WHERE gw = %s AND seq > %s ORDER BY seq LIMIT %s
"""
_UPDATE_GATEWAYS = """
UPDATE gateways g SET
    stored_seq = greatest(g.stored_seq, u.through),
    max_seq = greatest(g.max_seq, u.top),
    events_stored = g.events_stored + u.added,
    last_event_at = CASE WHEN u.received THEN clock_timestamp() ELSE g.last_event_at END,
    progressed_at = CASE WHEN u.through > g.stored_seq THEN clock_timestamp()
                         ELSE g.progressed_at END,
    replays = CASE WHEN u.through > g.stored_seq THEN 0 ELSE g.replays END,
    replay_at = CASE WHEN u.through > g.stored_seq THEN NULL ELSE g.replay_at END
FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::boolean[])
     AS u(gw, through, top, added, received)
WHERE g.gw = u.gw
"""
SCAN_LIMIT = 100_000
"""Seqs read at once above a gap (the rest on a later batch)."""
_UPSERT_STATE = """
INSERT INTO gateways AS g (gw, online, state_ts, streak_ts, state_seen_at, state_every_s,
                           head_seq, acked_floor, backlog, oldest_unacked_s, software)
SELECT gw, online, ts, CASE WHEN online THEN ts END, clock_timestamp(),
       every, head, coalesce(acked, 0), backlog, oldest, software
FROM unnest(%(gw)s::text[], %(online)s::boolean[], %(ts)s::timestamptz[], %(every)s::real[],
            %(head)s::bigint[], %(acked)s::bigint[], %(backlog)s::bigint[], %(oldest)s::real[],
            %(software)s::text[])
     AS u(gw, online, ts, every, head, acked, backlog, oldest, software)
ORDER BY gw
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
            stored.events_new = sum(count for count, _, _ in added.values())
            stored.events_repeated = len(intake.events) - stored.events_new
            cursor.executemany(
                _INSERT_REGISTRATION, [_registration(r) for r in intake.registrations]
            )
            for states in _rounds(intake.states):
                cursor.execute(_UPSERT_STATE, _states(states))
            stored.rejected = self._keep_rejections(cursor, intake)
            received = Counter(event.gw for event in intake.events)
            touched = sorted(set(received) | {state.gw for state in intake.states})
            advanced = self._advance(cursor, touched, set(received), added)
            # A gateway that sent what is already stored, or whose state shows an older ack,
            # did not get its ack: send it again even though nothing moved.
            lagging = {gw for gw, count in received.items() if added.get(gw, (0, 0, 0))[0] < count}
            lagging |= {
                state.gw for state in intake.states if state.online and state.acked_seq is not None
            }
            stored.acks = advanced | self._lagging_acks(cursor, lagging - set(advanced), intake)
        return stored

    def _insert_events(
        self, cursor: psycopg.Cursor[tuple[Any, ...]], intake: Intake
    ) -> dict[str, tuple[int, int, int]]:
        """COPY the checked envelopes in; the database splits them into event rows. Per
        gateway, the rows that were new: (count, lowest seq, highest seq)."""
        if not intake.envelope_rows:
            return {}
        with cursor.copy("COPY incoming (gw, envelope) FROM STDIN") as copy:
            for row in intake.envelope_rows:
                copy.write_row((row.gw, row.payload))
        return {
            gw: (int(count), int(low), int(high))
            for gw, count, low, high in cursor.execute(_INSERT_EVENTS)
        }

    def _advance(
        self,
        cursor: psycopg.Cursor[tuple[Any, ...]],
        gws: list[str],
        received: set[str],
        added: dict[str, tuple[int, int, int]],
    ) -> dict[str, int]:
        """Move each gateway's `stored_seq` to the end of its gap-free run; the ones that moved.

        Usually the new rows simply continue the run (nothing stored above it before): then
        the run's end is the highest new seq, with no need to read the events. Only around a
        gap are the stored seqs above the run read. The rows are locked first (in gw order,
        as every instance does), so a run sees every event committed before."""
        if not gws:
            return {}
        cursor.execute(_ENSURE_GATEWAYS, (sorted(received),))
        locked = cursor.execute(_LOCK_GATEWAYS, (gws,)).fetchall()
        through_of: dict[str, int] = {}
        for gw, stored_seq, floor, prior_max in locked:
            count, low, high = added.get(gw, (0, 0, 0))
            continues = count > 0 and low == floor + 1 and count == high - low + 1
            if continues and prior_max <= floor:
                through = high
            elif count > 0 or prior_max > floor:
                through = self._run_end(cursor, gw, floor)
            else:
                through = floor  # nothing new; the gateway's own ack may have lifted it
            through_of[gw] = max(through, stored_seq)
        names = [row[0] for row in locked]
        cursor.execute(
            _UPDATE_GATEWAYS,
            (
                names,
                [through_of[gw] for gw in names],
                [added.get(gw, (0, 0, 0))[2] for gw in names],
                [added.get(gw, (0, 0, 0))[0] for gw in names],
                [gw in received for gw in names],
            ),
        )
        return {
            gw: through_of[gw] for gw, stored_seq, _, _ in locked if through_of[gw] > stored_seq
        }

    def _run_end(self, cursor: psycopg.Cursor[tuple[Any, ...]], gw: str, floor: int) -> int:
        """Where the gap-free run from `floor` ends, read from the stored seqs."""
        through = floor
        for (seq,) in cursor.execute(_SEQS_ABOVE, (gw, floor, SCAN_LIMIT)).fetchall():
            if seq != through + 1:
                break
            through = int(seq)
        return through

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


def _rounds(states: Iterable[StateRow]) -> list[list[StateRow]]:
    """States in rounds of one per gateway (one statement each), each gateway's in the order
    they arrived (a Will arrives after the birth it follows, yet carries an older time):
    nearly always a single round."""
    rounds: list[list[StateRow]] = []
    seen: Counter[str] = Counter()
    for state in sorted(states, key=lambda s: s.gw):  # stable: arrival order per gateway
        index = seen[state.gw]
        seen[state.gw] += 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(state)
    return rounds


def _states(states: list[StateRow]) -> dict[str, Any]:
    return {
        "gw": [s.gw for s in states],
        "online": [s.online for s in states],
        "ts": [s.ts for s in states],
        "every": [s.state_every_s for s in states],
        "head": [s.head_seq for s in states],
        "acked": [s.acked_seq for s in states],
        "backlog": [s.backlog for s in states],
        "oldest": [s.oldest_unacked_s for s in states],
        "software": [s.software for s in states],
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
