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
  one read per person or door (and type), merged newest-first with
  `heapq.merge`. Each read is first asked for a few of its newest seqs; only
  those that may still reach the page (at most `limit`/2 of them) are asked
  again, for at most `limit`: one seek per read plus at most `limit`**2/2
  rows, whatever the table holds. Filters
  narrow the scope (intersection). A row names at most one person and the
  door reads take only person-less rows, so no row comes from two reads.
  Merged reads return seqs only; the page's rows are then read by seq.
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
) -> list[EventRow]:
    """Newest first, seq < before_seq (None = from the newest). scope None = everything."""
    _check_limit(limit)
    if before_seq is not None and before_seq < 1:
        raise ValueError(f"before_seq must be at least 1, got {before_seq}")
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
        reads = _reads(events, scope, kinds)
        if not reads:
            return []
        if len(reads) == 1:
            rows = conn.execute(
                _select(reads[0], window, _COLUMNS), _args(reads[0], window, limit)
            ).fetchall()
        else:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM outbox"  # noqa: S608
                " WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq DESC",
                (json.dumps(_newest_of(conn, reads, window, limit)),),
            ).fetchall()
    return [EventRow(*row) for row in rows]


def _newest_of(
    conn: sqlite3.Connection, reads: Sequence[_Read], window: _Window, limit: int
) -> list[int]:
    """The `limit` newest seqs of the union of `reads`, in two rounds.

    Each read is first asked for a few of its newest seqs; the newest `limit` of
    all those set a cutoff, and only reads that may hold more above it are asked
    again, for up to `limit`. A read not asked again has nothing left above the
    cutoff; one that filled its second ask puts `limit` seqs above what it left.
    """
    first = max(2, -(-2 * limit // len(reads)))
    found: list[list[int]] = []
    unfinished: list[tuple[_Read, int]] = []
    for read in reads:
        seqs = _seqs(conn, read, window, first)
        found.append(seqs)
        if len(seqs) == first:
            unfinished.append((read, seqs[-1]))
    newest = heapq.nlargest(limit, itertools.chain.from_iterable(found))
    cutoff = newest[-1] if len(newest) == limit else 0
    for read, oldest in unfinished:
        if oldest > cutoff:
            found.append(_seqs(conn, read, replace(window, high=oldest - 1), limit))
    return list(itertools.islice(heapq.merge(*found, reverse=True), limit))


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


def _reads(events: EventFilter, scope: EventScope | None, kinds: Sequence[str]) -> list[_Read]:
    """The index ranges whose union, filtered, is the answer (none: nothing can match).

    `kinds` are the types to read per door or person: the filter's, else all present.
    """
    if scope is None:
        if events.person is not None:
            return _about(events.person, events.door, kinds)
        if events.door is not None:
            return _at_door(events.door, kinds, personless=False)
        if events.type is not None:
            return [_Read(_BY_TYPE, ("type = ?",), (events.type,))]
        return [_Read(_BY_SEQ, (), ())]
    people = scope.people
    doors = scope.doors
    if events.person is not None:
        people &= {events.person}
        doors = frozenset()  # a person-less row never matches a person filter
    if events.door is not None:
        doors &= {events.door}
    reads: list[_Read] = []
    for person in sorted(people):
        reads += _about(person, events.door, kinds)
    for door in sorted(doors):
        reads += _at_door(door, kinds, personless=True)
    return reads


def _about(person: str, door: str | None, kinds: Sequence[str]) -> list[_Read]:
    terms = ("person = ?", "type = ?") if door is None else ("person = ?", "type = ?", "door = ?")
    extra = () if door is None else (door,)
    return [_Read(_BY_PERSON, terms, (person, kind, *extra)) for kind in kinds]


def _at_door(door: str, kinds: Sequence[str], *, personless: bool) -> list[_Read]:
    if personless:
        terms = ("door = ?", "type = ?", "person IS NULL")
        return [_Read(_PERSONLESS_BY_DOOR, terms, (door, kind)) for kind in kinds]
    return [_Read(_BY_DOOR, ("door = ?", "type = ?"), (door, kind)) for kind in kinds]


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
