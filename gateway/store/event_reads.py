"""One index range of the outbox and the statement that reads it: the event history's unit.

A page of the event history (`event_history`) is a union of such ranges, cut to
one seq range (`event_window`) and merged (`event_merge`). Each of those parts
names its ranges and builds its statements from what is here, so which index a
read takes (`INDEXED BY`), and that every value is bound, is decided in one
place. SQL only.
"""

from __future__ import annotations

import functools
import itertools
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

COLUMNS = "seq, id, type, ts, door, person, payload"
"""An `EventRow`'s fields, in order."""
BY_PERSON = "outbox INDEXED BY outbox_by_person"
BY_DOOR = "outbox INDEXED BY outbox_by_door"
PERSONLESS_BY_DOOR = "outbox INDEXED BY outbox_personless_by_door"
BY_TYPE = "outbox INDEXED BY outbox_by_type"
BY_TS = "outbox INDEXED BY outbox_by_ts"
BY_SEQ = "outbox NOT INDEXED"
"""NOT INDEXED still walks the primary key (seq), and only it."""

IN_TENANCY = (
    "EXISTS (SELECT 1 FROM tenancies AS t WHERE t.person_id = outbox.person"
    " AND t.generation IN (0, (SELECT value FROM meta WHERE key = 'allowlist_generation'))"
    " AND t.unit IN (SELECT value FROM json_each(?))"
    " AND julianday(outbox.ts) >= max(julianday(t.valid_from), julianday(t.created_at))"
    " AND (t.valid_to IS NULL OR julianday(outbox.ts) < julianday(t.valid_to)))",
    "(door IS NULL OR door IN (SELECT value FROM json_each(?)))",
)
"""Terms cutting a person's rows to a landlord's scope (`event_history.EventScope`): during
one of the person's tenancies in the units (a JSON list), at one of the doors (a JSON list)
or at none. Checked on the rows of the person's range (through the tenancies index by
person), so they cost what a door filter on a person does: one person's rows are few."""


@dataclass(frozen=True)
class Read:
    """One index range: the index, its equality terms and their values."""

    source: str
    terms: tuple[str, ...]
    args: tuple[str, ...]


@dataclass(frozen=True)
class Reads:
    """Index ranges of one shape, one per combination of its values: for each term with a
    `?`, in order, the values it takes (person x type, say)."""

    source: str
    terms: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]

    @property
    def count(self) -> int:
        return math.prod(len(column) for column in self.values)

    def each(self) -> Iterator[Read]:
        for args in itertools.product(*self.values):
            yield Read(self.source, self.terms, args)


@dataclass(frozen=True)
class Window:
    """The seq range a page reads, and the exact time predicate's bounds (ISO text)."""

    low: int
    high: int
    since: str | None
    until: str | None


def select(read: Read, window: Window, columns: str) -> str:
    """`columns` of the read's rows in the window, newest first; its values are `args`."""
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


def args(read: Read, window: Window, limit: int) -> tuple[object, ...]:
    times = tuple(bound for bound in (window.since, window.until) if bound is not None)
    return (*read.args, window.low, window.high, *times, limit)


def seqs(conn: sqlite3.Connection, read: Read, window: Window, limit: int) -> list[int]:
    """Up to `limit` seqs of the read in the window, newest first."""
    cursor = conn.execute(select(read, window, "seq"), args(read, window, limit))
    return [int(seq) for (seq,) in cursor]
