"""The event history the web API lists: filtered, scoped, newest-first pages of the outbox.

SQL only. The design keeps a page's cost bounded by the page, never by the
million rows the outbox may hold:

* **seq is the order and the cursor.** Pages are newest first and continue
  below `before_seq`, so the thousandth page costs what the first does, and
  events recorded meanwhile neither shift nor repeat a page. Every index of
  migration 7 ends in seq, so each read is one index range walked backwards
  with `LIMIT`: no sort, and never a scan of the table.
* **One index per read, the most selective filter first**: person (one
  person's events are a few hundred), then door, then type, then the primary
  key alone. `door` and `person` are migration 7's generated columns (from the
  payload), stored only in those indexes.
* **Type is in the door and person indexes, and reads are merged over types.**
  A filter checked on the rows a range visits costs as many rows as it skips:
  "alarms at the front door" read through a door-only index walks every tap at
  that door (180 ms on a million events when the door had none). With type
  after door or person, door + type is one exact range, and door alone is one
  range per event type present (a handful, found with one seek each on the
  type index), merged. A person + door filter still checks door on the
  person's rows: one person's rows are few.
* **A landlord's scope is a union of narrow reads.** Events about the scope's
  people come from the person index, person-less events at its doors from an
  index of person-less rows at doors (so a busy door whose events all name a
  person is not walked to find none: 400 ms per door through the door index),
  one read per person or door, and type. Filters narrow the scope
  (intersection). A row names at most one person and the door reads take only
  person-less rows, so no row comes from two reads. The reads are merged in
  two rounds, a seek per read, and a scope of `WALK_FROM` reads or more is
  first walked newest-first (`event_merge`: how, what it costs, and how
  `WALK_FROM` was measured).
* **A time range becomes a seq range**, pushed out by `CLOCK_SLACK` at each
  end because the wall clock can step back (`event_window`: what that
  guarantees).
* Each page reads one snapshot (a read transaction, unless the caller holds one).

This module is what callers use: the types they pass and get back, `page` and
`after`, and the plan, which index reads answer a filter. How those reads are
read is split off where the reasoning changes: `event_reads` is one index range
and its statement, what every part reads through; `event_window` turns a
cursor and a time range into a seq range, the one part that reasons about the
clock; `event_merge` reads many ranges as one page, with the measurements that
bound its cost.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.store.errors import translated
from gateway.store.event_merge import newest_of, walk
from gateway.store.event_reads import (
    BY_DOOR,
    BY_PERSON,
    BY_SEQ,
    BY_TYPE,
    COLUMNS,
    IN_TENANCY,
    PERSONLESS_BY_DOOR,
    Reads,
    Window,
    args,
    select,
)
from gateway.store.event_window import seq_range

MAX_LIMIT = 200
"""The most events one page may hold."""

WALK_FROM = 1000
"""Scopes of this many index reads or more (people and doors, each times the event types
present) are walked newest-first before they are merged; smaller ones are only merged
(`event_merge` says how these two were measured)."""

WALK_ROWS = 2000
"""The most rows one walk visits before the page falls back to the merge."""

_EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""Bounds outside these years cannot be written as `ts` is (four-digit years)."""


@dataclass(frozen=True)
class EventFilter:
    """What the landlord asked for; every field set narrows the list."""

    door: str | None = None
    person: str | None = None
    type: str | None = None
    since: datetime | None = None
    """Events stamped at or after this instant."""
    until: datetime | None = None
    """Events stamped before this instant."""

    def __post_init__(self) -> None:
        for name, moment in (("since", self.since), ("until", self.until)):
            if moment is None:
                continue
            if moment.utcoffset() is None:
                raise ValueError(f"{name} needs a UTC offset: a naive time names no instant")
            if not _EARLIEST <= moment < _LATEST:
                raise ValueError(f"{name} must fall in the years 1000 to 9998")
        if self.since is not None and self.until is not None and self.until < self.since:
            raise ValueError("until is before since")


Dates = tuple[datetime, datetime | None]
"""From (inclusive) to (exclusive; None: open)."""


@dataclass(frozen=True)
class EventScope:
    """What a landlord may see: events about these people, plus person-less events at
    these doors.

    With `units` set, an event about a person is seen only while one of the person's
    tenancies in those units runs (from the later of its start and when it was recorded,
    to its end) and only if it happened at one of `doors` or at no door: a landlord sees
    their tenants during their own tenancy, at the doors that serve their units, and
    nothing of the same person's life elsewhere, before or after. `windows` holds those
    tenancies' windows per person for checks made here (the live feed); SQL reads them
    from the tenancies table itself."""

    people: frozenset[str]
    doors: frozenset[str]
    units: frozenset[str] | None = None
    windows: Mapping[str, tuple[Dates, ...]] = field(default_factory=dict)

    def admits(self, person: str | None, door: str | None, ts: str) -> bool:
        """Whether an event about `person` (None: about no one) at `door` at `ts` is seen."""
        if person is None:
            return door is not None and door in self.doors
        if person not in self.people:
            return False
        if self.units is None:
            return True
        if door is not None and door not in self.doors:
            return False
        moment = datetime.fromisoformat(ts)
        return any(
            start <= moment and (end is None or moment < end)
            for start, end in self.windows.get(person, ())
        )


@dataclass(frozen=True)
class EventRow:
    seq: int
    id: str
    type: str
    ts: str
    door: str | None
    person: str | None
    payload: str


def page(
    conn: sqlite3.Connection,
    events: EventFilter,
    scope: EventScope | None,
    *,
    before_seq: int | None,
    limit: int,
    walk_from: int = WALK_FROM,
    walk_rows: int = WALK_ROWS,
) -> list[EventRow]:
    """Newest first, seq < before_seq (None = from the newest). scope None = everything.

    `walk_from` and `walk_rows` are there for tests and benchmarks (see WALK_FROM)."""
    _check_limit(limit)
    if before_seq is not None and before_seq < 1:
        raise ValueError(f"before_seq must be at least 1, got {before_seq}")
    if walk_rows < 1:
        raise ValueError(f"walk_rows must be at least 1, got {walk_rows}")
    with translated(), _snapshot(conn):
        window = seq_range(conn, events.since, events.until, before_seq)
        if window is None:
            return []
        if events.type is not None:
            kinds: Sequence[str] = (events.type,)
        elif scope is not None or events.person is not None or events.door is not None:
            kinds = _types(conn)
        else:
            kinds = ()
        groups = _reads(events, scope, kinds)
        count = sum(group.count for group in groups)
        if count == 0:
            return []
        if count == 1:
            (read,) = groups[0].each()
            rows = conn.execute(select(read, window, COLUMNS), args(read, window, limit)).fetchall()
        else:
            seqs: list[int] = []
            rest: Window | None = window
            if scope is not None and count >= walk_from:
                people, doors = _narrowed(events, scope)
                seqs, rest = walk(
                    conn,
                    window,
                    kinds,
                    people=people,
                    doors=doors,
                    tenancy=_tenancy_values(scope),
                    door_filter=events.door,
                    type_filter=events.type,
                    limit=limit,
                    rows=walk_rows,
                )
            if rest is not None and len(seqs) < limit:
                seqs += newest_of(conn, groups, rest, limit - len(seqs))
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM outbox"  # noqa: S608
                " WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq DESC",
                (json.dumps(seqs),),
            ).fetchall()
    return [EventRow(*row) for row in rows]


def after(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[EventRow]:
    """Up to `limit` events with seq > after_seq, oldest first (the live feed)."""
    _check_limit(limit)
    if after_seq < 0:
        raise ValueError(f"after_seq must not be negative, got {after_seq}")
    with translated():
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
            (after_seq, limit),
        ).fetchall()
    return [EventRow(*row) for row in rows]


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction around the page's statements (the caller's, if it has one)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _types(conn: sqlite3.Connection) -> list[str]:
    """The event types present: one seek on the type index each."""
    found: list[str] = []
    while (
        row := conn.execute(
            f"SELECT type FROM {BY_TYPE} WHERE type > ? ORDER BY type LIMIT 1",  # noqa: S608
            (found[-1] if found else "",),
        ).fetchone()
    ) is not None:
        found.append(str(row[0]))
    return found


def _reads(events: EventFilter, scope: EventScope | None, kinds: Sequence[str]) -> list[Reads]:
    """The index ranges whose union, filtered, is the answer (none: nothing can match).

    `kinds` are the types to read per door or person: the filter's, else all present.
    """
    if scope is None:
        if events.person is not None:
            return [_about((events.person,), events.door, kinds)]
        if events.door is not None:
            return [Reads(BY_DOOR, ("door = ?", "type = ?"), ((events.door,), tuple(kinds)))]
        if events.type is not None:
            return [Reads(BY_TYPE, ("type = ?",), ((events.type,),))]
        return [Reads(BY_SEQ, (), ())]
    people, doors = _narrowed(events, scope)
    terms = ("door = ?", "type = ?", "person IS NULL")
    about = _about(tuple(people), events.door, kinds)
    tenancy = _tenancy_values(scope)
    if tenancy is not None:
        about = Reads(
            about.source,
            (*about.terms, *IN_TENANCY),
            (*about.values, *((value,) for value in tenancy)),
        )
    groups = [about, Reads(PERSONLESS_BY_DOOR, terms, (tuple(doors), tuple(kinds)))]
    return [group for group in groups if group.count]


def _tenancy_values(scope: EventScope) -> tuple[str, str] | None:
    """The values of `IN_TENANCY`'s terms for a scope cut to tenancies: its units and doors
    (JSON lists), or None when the scope sees its people whole."""
    if scope.units is None:
        return None
    return json.dumps(sorted(scope.units)), json.dumps(sorted(scope.doors))


def _narrowed(events: EventFilter, scope: EventScope) -> tuple[frozenset[str], frozenset[str]]:
    """The scope cut by the filter: its people, and its doors (for person-less events).

    A row names at most one person, and the door reads take only person-less rows, so
    no row comes from both."""
    people, doors = scope.people, scope.doors
    if events.person is not None:
        people &= {events.person}
        doors = frozenset()  # a person-less row never matches a person filter
    if events.door is not None:
        doors &= {events.door}
    return people, doors


def _about(people: tuple[str, ...], door: str | None, kinds: Sequence[str]) -> Reads:
    if door is None:
        return Reads(BY_PERSON, ("person = ?", "type = ?"), (people, tuple(kinds)))
    terms = ("person = ?", "type = ?", "door = ?")
    return Reads(BY_PERSON, terms, (people, tuple(kinds), (door,)))
