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
  two rounds. First one statement asks every read for its newest seq: SQLite
  loops over the people (or doors) and types, given as `json_each` lists, one
  seek each (~1.5 µs for a read with no rows, ~5 µs for one with, against
  ~12 µs for a statement of its own from Python). The `limit` reads with the
  newest seqs hold the page (a row of any other read has `limit` newer rows);
  they are asked again, newest first, for up to `limit` - 1 seqs above the
  `limit`-th newest found so far, a cutoff that only rises. So: one seek per
  read, plus at most `limit` statements and `limit`**2 index rows, whatever
  the table holds. Merged reads return seqs only; the page's rows are then
  read by seq.
* **A big scope is walked before it is merged.** A seek per read grows with
  the scope: 2,000 people are 8,000 reads with four event types present,
  ~40 ms on a million events (110-135 ms when each read was a statement). But
  a big scope's events are dense, a good part of all the gateway records. So a
  scope of `WALK_FROM` reads or more is first walked: the page's seq range
  newest-first, by primary key, or by the door index (merged over types by
  SQLite, MERGE (UNION ALL), no sort) or the type index when the filter names
  a door or a type; person, door and the time predicate are read from each row
  and tested here, until `limit` rows match or `WALK_ROWS` rows were visited.
  A scope of 2,000 of the building's 2,000 people fills a page in ~60 rows
  (~1.5 ms), 400 of them in ~250 (~2 ms). A walk that runs out keeps what it
  found, and the merge reads the rest of the page below the rows walked.

  The cost bound. Below `WALK_FROM` reads: the merge, at most `WALK_FROM`
  seeks (~5 ms) plus the `limit` statements. From `WALK_FROM` reads on: at most
  `WALK_ROWS` rows walked (~4.5 µs a row by primary key, person and door
  computed from the payload; ~6 µs through an index, whose rows lie scattered
  in the table: ~9-12 ms), and only when the scope has fewer than `limit` rows
  in them (fewer than 1 in 40 at limit 50), the merge on top, a seek per
  read: still linear in the scope for a big scope with few recent events. On
  a million events, 2,000 people with older events but none among the newest
  100,000 (former tenants) cost ~50 ms, p99 ~90 (walk ~8, merge ~40; it was
  ~110 ms); 1,960 people who never had an event and 40 who have none lately,
  ~21 ms. Worst is a door filter on such a scope: no index holds person and
  door, so each person read checks the door on that person's rows (table
  reads) until one is at the door: ~320 ms for those 2,000 former tenants
  (it was ~440 ms, and ~400 ms for any door filter on a big scope, which the
  walk now answers in ~1-2 ms). A person who never used that door has all
  their rows checked.

  The switch point was measured on the bench store (bench/events_page.py:
  1,000,000 events, 2,000 people, four types): the merge alone is faster up to
  about 100 people (400 reads), the walk beyond (250 people: 7 against 2.3 ms;
  400: 11 against 1.8 ms). `WALK_FROM` = 1,000 reads (250 people with four
  types present, 125 with eight) keeps the smaller scopes on the merge alone,
  where a walk that ran out would add its ~10 ms to a ~5 ms page.
* **A time range becomes a seq range.** `ts` is the wall clock, which can step
  back (no RTC, NTP arriving late, someone setting the time), so ts order is
  not seq order. Two single seeks on the (ts) index turn the bounds into seqs,
  each pushed out by `CLOCK_SLACK`: the low seq is that of the latest-stamped
  event before `since - CLOCK_SLACK`, the high seq that of the earliest-stamped
  event at or after `until + CLOCK_SLACK`. The exact predicate is then applied
  to every row in that seq range, on the instant (`julianday`), so events
  stamped with another UTC offset compare right.

  What that guarantees: an event with `since <= ts < until` is returned
  unless the clock stepped back by more than `CLOCK_SLACK` across that bound.
  Precisely, it is left out only if an event recorded after it is stamped
  before `since - CLOCK_SLACK` (more than `CLOCK_SLACK` earlier than it), or an
  event recorded before it is stamped at or after `until + CLOCK_SLACK`. So
  only after a step back of more than `CLOCK_SLACK`, and only for a bound
  inside the stretch of wall-clock time lived twice: events stamped in it
  before the step may be left out. The stamps are compared there as the local
  time written in `ts` (the seeks read the index, which orders text), with the
  bounds written in the newest event's offset, so a change of UTC offset
  (summer time, a changed `gateway.timezone`) counts as a step of the clock.
  Without such a step the answer is exact. The slack costs rows read: up to
  `CLOCK_SLACK` of events at each end of a time range.
* Each page reads one snapshot (a read transaction, unless the caller holds one).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import math
import operator
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo

from gateway.store.errors import translated

MAX_LIMIT = 200
"""The most events one page may hold."""

CLOCK_SLACK = timedelta(hours=2)
"""How far the wall clock may step back with time-bounded pages staying exact (see above):
summer time (one hour) and NTP corrections, for about two hours of events read at
each end of a time range."""

WALK_FROM = 1000
"""Scopes of this many index reads or more (people and doors, each times the event types
present) are walked newest-first before they are merged; smaller ones are only merged
(see the module docstring for how these two were measured)."""

WALK_ROWS = 2000
"""The most rows one walk visits before the page falls back to the merge."""

_EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""Bounds outside these years cannot be written as `ts` is (four-digit years)."""
_COLUMNS = "seq, id, type, ts, door, person, payload"
_LAST_SEQ = 2**63 - 1
_BY_PERSON = "outbox INDEXED BY outbox_by_person"
_BY_DOOR = "outbox INDEXED BY outbox_by_door"
_PERSONLESS_BY_DOOR = "outbox INDEXED BY outbox_personless_by_door"
_BY_TYPE = "outbox INDEXED BY outbox_by_type"
_BY_TS = "outbox INDEXED BY outbox_by_ts"
_BY_SEQ = "outbox NOT INDEXED"
"""NOT INDEXED still walks the primary key (seq), and only it."""


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


@dataclass(frozen=True)
class EventScope:
    """What a landlord may see: events about these people, plus person-less events at
    these doors."""

    people: frozenset[str]
    doors: frozenset[str]


@dataclass(frozen=True)
class EventRow:
    seq: int
    id: str
    type: str
    ts: str
    door: str | None
    person: str | None
    payload: str


@dataclass(frozen=True)
class _Read:
    """One index range: the index, its equality terms and their values."""

    source: str
    terms: tuple[str, ...]
    args: tuple[str, ...]


@dataclass(frozen=True)
class _Reads:
    """Index ranges of one shape, one per combination of its values: for each term with a
    `?`, in order, the values it takes (person x type, say)."""

    source: str
    terms: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]

    @property
    def count(self) -> int:
        return math.prod(len(column) for column in self.values)

    def each(self) -> Iterator[_Read]:
        for args in itertools.product(*self.values):
            yield _Read(self.source, self.terms, args)


@dataclass(frozen=True)
class _Window:
    """The seq range a page reads, and the exact time predicate's bounds (ISO text)."""

    low: int
    high: int
    since: str | None
    until: str | None


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
        window = _window(conn, events, before_seq)
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
            rows = conn.execute(
                _select(read, window, _COLUMNS), _args(read, window, limit)
            ).fetchall()
        else:
            seqs: list[int] = []
            rest: _Window | None = window
            if scope is not None and count >= walk_from:
                seqs, rest = _walk(conn, events, scope, kinds, window, limit=limit, rows=walk_rows)
            if rest is not None and len(seqs) < limit:
                seqs += _newest_of(conn, groups, rest, limit - len(seqs))
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM outbox"  # noqa: S608
                " WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq DESC",
                (json.dumps(seqs),),
            ).fetchall()
    return [EventRow(*row) for row in rows]


def _walk(
    conn: sqlite3.Connection,
    events: EventFilter,
    scope: EventScope,
    kinds: Sequence[str],
    window: _Window,
    *,
    limit: int,
    rows: int,
) -> tuple[list[int], _Window | None]:
    """The scope's newest seqs found by walking at most `rows` rows of the window newest-first,
    up to `limit` of them; and the part of the window below the rows walked (None: nothing
    is left to read, the window was walked to its end or the page is full).

    The rows walked are those of the filter's door and type (the door index, merged over
    types, or the type index), else all (the primary key); person, door and the time
    predicate are read from each row and tested here, so every row visited counts."""
    people, doors = _narrowed(events, scope)
    at = events.door
    walked = 0
    last = window.high
    found: list[int] = []
    typed = events.type is not None
    sql = _walk_statement(
        typed,
        at is not None,
        0 if typed or at is None else len(kinds),
        window.since is not None,
        window.until is not None,
    )
    values: dict[str, object] = {
        "low": window.low,
        "high": window.high,
        "rows": rows,
        "since": window.since,
        "until": window.until,
        "door": at,
        "type": events.type,
        **{f"k{n}": kind for n, kind in enumerate(kinds)},
    }
    cursor = conn.execute(sql, values)
    try:
        for seq, person, door, inside in cursor:
            walked += 1
            last = seq
            if not inside:
                continue
            if person in people if person is not None else (door if at is None else at) in doors:
                found.append(seq)
                if len(found) == limit:
                    return found, None
    finally:
        cursor.close()
    if walked < rows or last <= window.low:
        return found, None
    return found, replace(window, high=last - 1)


@functools.lru_cache(maxsize=64)
def _walk_statement(typed: bool, at_door: bool, kinds: int, since: bool, until: bool) -> str:
    """The rows a walk visits, newest first: seq, person, door (when the source does not
    fix it), and whether the row is inside the time range."""
    inside = [
        *(["julianday(ts) >= julianday(:since)"] if since else []),
        *(["julianday(ts) < julianday(:until)"] if until else []),
    ]
    door = "NULL" if at_door else "CASE WHEN person IS NULL THEN door END"
    columns = f"seq, person, {door}, {' AND '.join(inside) or '1'}"
    if typed:
        arms = [(_BY_DOOR, "door = :door AND type = :type AND ")] if at_door else []
        arms = arms or [(_BY_TYPE, "type = :type AND ")]
    elif at_door:
        # Compound SELECTs ordered by seq are merged by SQLite (MERGE (UNION ALL)): no sort.
        arms = [(_BY_DOOR, f"door = :door AND type = :k{n} AND ") for n in range(kinds)]
    else:
        arms = [(_BY_SEQ, "")]
    selects = (
        f"SELECT {columns} FROM {source} WHERE {terms}seq BETWEEN :low AND :high"  # noqa: S608
        for source, terms in arms
    )
    # Only the fixed fragments above are joined here; every value is bound.
    return " UNION ALL ".join(selects) + " ORDER BY seq DESC LIMIT :rows"


def _newest_of(
    conn: sqlite3.Connection, groups: Sequence[_Reads], window: _Window, limit: int
) -> list[int]:
    """The `limit` newest seqs of the union of the reads of `groups`, in two rounds.

    First each read's newest seq: one statement per group, SQLite looping over the
    reads (a seek each). The `limit` reads with the newest of those hold the page: a
    row of any other read has `limit` newer rows above it. Those reads, newest first,
    are asked again for up to `limit` - 1 more, down to a cutoff: the `limit`-th newest
    seq found so far, which only rises, so that a read whose newest is below it is not
    asked at all.
    """
    heads = [head for group in groups for head in _heads(conn, group, window, limit)]
    top = heapq.nlargest(limit, heads, key=lambda head: head[0])
    found = [seq for seq, _read in top]  # the newest `limit` seen, a min-heap
    heapq.heapify(found)
    for newest, read in top:
        cutoff = found[0] if len(found) == limit else window.low - 1
        if newest <= cutoff + 1:
            break  # every later read's newest is lower still
        for seq in _seqs(conn, read, replace(window, low=cutoff + 1, high=newest - 1), limit - 1):
            if len(found) < limit:
                heapq.heappush(found, seq)
            elif seq > found[0]:
                heapq.heapreplace(found, seq)
            else:
                break  # the seqs come newest first: the rest are lower still
    return sorted(found, reverse=True)


def _heads(
    conn: sqlite3.Connection, group: _Reads, window: _Window, limit: int
) -> list[tuple[int, _Read]]:
    """The `limit` reads of `group` whose newest seqs are the newest, with those seqs."""
    sql = _heads_statement(
        group.source, group.terms, window.since is not None, window.until is not None
    )
    values: dict[str, object] = {
        "low": window.low,
        "high": window.high,
        "since": window.since,
        "until": window.until,
        **{f"v{n}": json.dumps(list(column)) for n, column in enumerate(group.values)},
    }
    rows = conn.execute(sql, values).fetchall()
    return [
        (int(row[-1]), _Read(group.source, group.terms, tuple(str(arg) for arg in row[:-1])))
        for row in heapq.nlargest(limit, rows, key=operator.itemgetter(-1))
    ]


@functools.lru_cache(maxsize=64)
def _heads_statement(source: str, terms: tuple[str, ...], since: bool, until: bool) -> str:
    """One row per combination of the terms' values (json_each of each list) that has a
    row in the window: the values, and the newest seq of that read."""
    where: list[str] = []
    valued = 0
    for term in terms:
        if "?" in term:
            term = term.replace("?", f"v{valued}.value")  # noqa: PLW2901
            valued += 1
        where.append(term)
    where.append("seq BETWEEN :low AND :high")
    if since:
        where.append("julianday(ts) >= julianday(:since)")
    if until:
        where.append("julianday(ts) < julianday(:until)")
    newest = f"SELECT seq FROM {source} WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT 1"  # noqa: S608
    columns = [*(f"v{n}.value" for n in range(valued)), f"({newest}) AS newest"]
    tables = "".join(f"{', ' if n else ' FROM '}json_each(:v{n}) AS v{n}" for n in range(valued))
    # Only the fixed fragments above are joined here; every value is bound. Reads with no
    # row are dropped in SQLite: handing them to Python would cost more than their seeks.
    return f"SELECT {', '.join(columns)}{tables} WHERE newest IS NOT NULL"


def _seqs(conn: sqlite3.Connection, read: _Read, window: _Window, limit: int) -> list[int]:
    cursor = conn.execute(_select(read, window, "seq"), _args(read, window, limit))
    return [int(seq) for (seq,) in cursor]


def after(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[EventRow]:
    """Up to `limit` events with seq > after_seq, oldest first (the live feed)."""
    _check_limit(limit)
    if after_seq < 0:
        raise ValueError(f"after_seq must not be negative, got {after_seq}")
    with translated():
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
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
            f"SELECT type FROM {_BY_TYPE} WHERE type > ? ORDER BY type LIMIT 1",  # noqa: S608
            (found[-1] if found else "",),
        ).fetchone()
    ) is not None:
        found.append(str(row[0]))
    return found


def _reads(events: EventFilter, scope: EventScope | None, kinds: Sequence[str]) -> list[_Reads]:
    """The index ranges whose union, filtered, is the answer (none: nothing can match).

    `kinds` are the types to read per door or person: the filter's, else all present.
    """
    if scope is None:
        if events.person is not None:
            return [_about((events.person,), events.door, kinds)]
        if events.door is not None:
            return [_Reads(_BY_DOOR, ("door = ?", "type = ?"), ((events.door,), tuple(kinds)))]
        if events.type is not None:
            return [_Reads(_BY_TYPE, ("type = ?",), ((events.type,),))]
        return [_Reads(_BY_SEQ, (), ())]
    people, doors = _narrowed(events, scope)
    terms = ("door = ?", "type = ?", "person IS NULL")
    groups = [
        _about(tuple(people), events.door, kinds),
        _Reads(_PERSONLESS_BY_DOOR, terms, (tuple(doors), tuple(kinds))),
    ]
    return [group for group in groups if group.count]


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


def _about(people: tuple[str, ...], door: str | None, kinds: Sequence[str]) -> _Reads:
    if door is None:
        return _Reads(_BY_PERSON, ("person = ?", "type = ?"), (people, tuple(kinds)))
    terms = ("person = ?", "type = ?", "door = ?")
    return _Reads(_BY_PERSON, terms, (people, tuple(kinds), (door,)))


def _select(read: _Read, window: _Window, columns: str) -> str:
    return _statement(
        columns, read.source, read.terms, window.since is not None, window.until is not None
    )


@functools.lru_cache(maxsize=64)
def _statement(columns: str, source: str, terms: tuple[str, ...], since: bool, until: bool) -> str:
    where = [*terms, "seq BETWEEN ? AND ?"]
    if since:
        where.append("julianday(ts) >= julianday(?)")
    if until:
        where.append("julianday(ts) < julianday(?)")
    # Only the fixed fragments above are joined here; every value is bound.
    return (
        f"SELECT {columns} FROM {source} WHERE {' AND '.join(where)}"  # noqa: S608
        " ORDER BY seq DESC LIMIT ?"
    )


def _args(read: _Read, window: _Window, limit: int) -> tuple[object, ...]:
    times = tuple(bound for bound in (window.since, window.until) if bound is not None)
    return (*read.args, window.low, window.high, *times, limit)


def _window(
    conn: sqlite3.Connection, events: EventFilter, before_seq: int | None
) -> _Window | None:
    """The seq range to read (see the module docstring); None when it is empty."""
    low, high = 1, _LAST_SEQ if before_seq is None else min(before_seq - 1, _LAST_SEQ)
    if events.since is None and events.until is None:
        return _Window(low, high, None, None) if low <= high else None
    newest = conn.execute(
        "SELECT ts FROM outbox WHERE seq > 0 ORDER BY seq DESC LIMIT 1"  # a search, one row
    ).fetchone()
    if newest is None:
        return None
    zone = _zone_of(newest[0])
    since = until = None
    if events.since is not None:
        since = _iso(_ceil_ms(events.since).astimezone(UTC))
        bound = _iso(_in(zone, events.since - CLOCK_SLACK))  # truncated: earlier still
        row = conn.execute(
            f"SELECT seq FROM {_BY_TS} WHERE ts < ? ORDER BY ts DESC LIMIT 1",  # noqa: S608
            (bound,),
        ).fetchone()
        if row is not None:
            low = int(row[0])
    if events.until is not None:
        until = _iso(_ceil_ms(events.until).astimezone(UTC))
        bound = _iso(_in(zone, _ceil_ms(events.until + CLOCK_SLACK)))
        row = conn.execute(
            f"SELECT seq FROM {_BY_TS} WHERE ts >= ? ORDER BY ts LIMIT 1",  # noqa: S608
            (bound,),
        ).fetchone()
        if row is not None:
            high = min(high, int(row[0]))
    return _Window(low, high, since, until) if low <= high else None


def _zone_of(ts: str) -> tzinfo | None:
    """The UTC offset the newest event was stamped with (None: keep the caller's)."""
    try:
        return datetime.fromisoformat(ts).tzinfo
    except ValueError:
        return None


def _in(zone: tzinfo | None, moment: datetime) -> datetime:
    return moment if zone is None else moment.astimezone(zone)


def _ceil_ms(moment: datetime) -> datetime:
    """Up to the next whole millisecond: `ts` has milliseconds and SQLite reads no finer,
    so `ts >= t` is `ts >= ceil_ms(t)`, and `ts < t` is `ts < ceil_ms(t)`."""
    extra = moment.microsecond % 1000
    return moment if extra == 0 else moment + timedelta(microseconds=1000 - extra)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")
