"""Many index reads of the event history as one newest-first page: the merge, and the walk
that goes before it for a big scope.

A module of its own because this is where a landlord's scope (one read per
person or door, and type) gets its cost bound, and the numbers that set
`event_history.WALK_FROM` belong beside the code they measured. `event_history`
decides which reads a page needs; this reads them. SQL only.

* **The reads are merged in two rounds.** First one statement asks every read
  for its newest seq: SQLite loops over the people (or doors) and types, given
  as `json_each` lists, one seek each (~1.5 µs for a read with no rows, ~5 µs
  for one with, against ~12 µs for a statement of its own from Python). The
  `limit` reads with the newest seqs hold the page (a row of any other read has
  `limit` newer rows); they are asked again, newest first, for up to `limit` - 1
  seqs above the `limit`-th newest found so far, a cutoff that only rises. So:
  one seek per read, plus at most `limit` statements and `limit`**2 index rows,
  whatever the table holds. Merged reads return seqs only; the page's rows are
  then read by seq.
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
"""

from __future__ import annotations

import functools
import heapq
import json
import operator
import sqlite3
from collections.abc import Sequence
from dataclasses import replace

from gateway.store.event_reads import (
    BY_DOOR,
    BY_SEQ,
    BY_TYPE,
    IN_TENANCY,
    Read,
    Reads,
    Window,
    seqs,
)


def walk(
    conn: sqlite3.Connection,
    window: Window,
    kinds: Sequence[str],
    *,
    people: frozenset[str],
    doors: frozenset[str],
    tenancy: tuple[str, str] | None = None,
    door_filter: str | None,
    type_filter: str | None,
    limit: int,
    rows: int,
) -> tuple[list[int], Window | None]:
    """The scope's newest seqs found by walking at most `rows` rows of the window newest-first,
    up to `limit` of them; and the part of the window below the rows walked (None: nothing
    is left to read, the window was walked to its end or the page is full).

    `people` and `doors` are the scope cut by the filter; `door_filter` and `type_filter`
    the filter's own door and type, `kinds` the types read per door (as for the merge).
    The rows walked are those of the filter's door and type (the door index, merged over
    types, or the type index), else all (the primary key); person, door and the time
    predicate are read from each row and tested here, so every row visited counts.
    `tenancy` (the values of `IN_TENANCY`) cuts a person's rows to the scope's tenancies
    and doors, tested in SQL with the time predicate."""
    walked = 0
    last = window.high
    found: list[int] = []
    typed = type_filter is not None
    sql = _walk_statement(
        typed,
        door_filter is not None,
        0 if typed or door_filter is None else len(kinds),
        window.since is not None,
        window.until is not None,
        tenancy is not None,
    )
    units, tenancy_doors = tenancy if tenancy is not None else (None, None)
    values: dict[str, object] = {
        "units": units,
        "doors": tenancy_doors,
        "low": window.low,
        "high": window.high,
        "rows": rows,
        "since": window.since,
        "until": window.until,
        "door": door_filter,
        "type": type_filter,
        **{f"k{n}": kind for n, kind in enumerate(kinds)},
    }
    cursor = conn.execute(sql, values)
    try:
        for seq, person, door, inside in cursor:
            walked += 1
            last = seq
            if not inside:
                continue
            at = door if door_filter is None else door_filter
            if person in people if person is not None else at in doors:
                found.append(seq)
                if len(found) == limit:
                    return found, None
    finally:
        cursor.close()
    if walked < rows or last <= window.low:
        return found, None
    return found, replace(window, high=last - 1)


@functools.lru_cache(maxsize=64)
def _walk_statement(  # noqa: PLR0917 - the statement's shape, one flag each
    typed: bool, at_door: bool, kinds: int, since: bool, until: bool, tenancy: bool
) -> str:
    """The rows a walk visits, newest first: seq, person, door (when the source does not
    fix it), and whether the row is inside the time range (and the scope's tenancies)."""
    in_tenancy = " AND ".join(IN_TENANCY).replace("?", ":units", 1).replace("?", ":doors", 1)
    inside = [
        *(["julianday(ts) >= julianday(:since)"] if since else []),
        *(["julianday(ts) < julianday(:until)"] if until else []),
        *([f"(person IS NULL OR ({in_tenancy}))"] if tenancy else []),
    ]
    door = "NULL" if at_door else "CASE WHEN person IS NULL THEN door END"
    columns = f"seq, person, {door}, {' AND '.join(inside) or '1'}"
    if typed:
        arms = [(BY_DOOR, "door = :door AND type = :type AND ")] if at_door else []
        arms = arms or [(BY_TYPE, "type = :type AND ")]
    elif at_door:
        # Compound SELECTs ordered by seq are merged by SQLite (MERGE (UNION ALL)): no sort.
        arms = [(BY_DOOR, f"door = :door AND type = :k{n} AND ") for n in range(kinds)]
    else:
        arms = [(BY_SEQ, "")]
    selects = (
        f"SELECT {columns} FROM {source} WHERE {terms}seq BETWEEN :low AND :high"  # noqa: S608
        for source, terms in arms
    )
    # Only the fixed fragments above are joined here; every value is bound.
    return " UNION ALL ".join(selects) + " ORDER BY seq DESC LIMIT :rows"


def newest_of(
    conn: sqlite3.Connection, groups: Sequence[Reads], window: Window, limit: int
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
        for seq in seqs(conn, read, replace(window, low=cutoff + 1, high=newest - 1), limit - 1):
            if len(found) < limit:
                heapq.heappush(found, seq)
            elif seq > found[0]:
                heapq.heapreplace(found, seq)
            else:
                break  # the seqs come newest first: the rest are lower still
    return sorted(found, reverse=True)


def _heads(
    conn: sqlite3.Connection, group: Reads, window: Window, limit: int
) -> list[tuple[int, Read]]:
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
        (int(row[-1]), Read(group.source, group.terms, tuple(str(arg) for arg in row[:-1])))
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
