"""The seq range a page of the event history reads: its cursor and its time range, as seqs.

A module of its own because it is the one part of the event history that reasons
about the wall clock rather than the indexes, and what it guarantees is stated
here, beside the code that keeps it. SQL only.

**A time range becomes a seq range.** `ts` is the wall clock, which can step
back (no RTC, NTP arriving late, someone setting the time), so ts order is not
seq order. Two single seeks on the (ts) index turn the bounds into seqs, each
pushed out by `CLOCK_SLACK`: the low seq is that of the latest-stamped event
before `since - CLOCK_SLACK`, the high seq that of the earliest-stamped event at
or after `until + CLOCK_SLACK`. The exact predicate is then applied to every row
in that seq range, on the instant (`julianday`), so events stamped with another
UTC offset compare right.

What that guarantees: an event with `since <= ts < until` is returned unless the
clock stepped back by more than `CLOCK_SLACK` across that bound. Precisely, it is
left out only if an event recorded after it is stamped before `since -
CLOCK_SLACK` (more than `CLOCK_SLACK` earlier than it), or an event recorded
before it is stamped at or after `until + CLOCK_SLACK`. So only after a step back
of more than `CLOCK_SLACK`, and only for a bound inside the stretch of wall-clock
time lived twice: events stamped in it before the step may be left out. The
stamps are compared there as the local time written in `ts` (the seeks read the
index, which orders text), with the bounds written in the newest event's offset,
so a change of UTC offset (summer time, a changed `gateway.timezone`) counts as a
step of the clock. Without such a step the answer is exact. The slack costs rows
read: up to `CLOCK_SLACK` of events at each end of a time range.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, tzinfo

from gateway.store.event_reads import BY_TS, Window

CLOCK_SLACK = timedelta(hours=2)
"""How far the wall clock may step back with time-bounded pages staying exact (see above):
summer time (one hour) and NTP corrections, for about two hours of events read at
each end of a time range."""

_LAST_SEQ = 2**63 - 1


def seq_range(
    conn: sqlite3.Connection,
    since: datetime | None,
    until: datetime | None,
    before_seq: int | None,
) -> Window | None:
    """The seq range to read, below `before_seq` (None: from the newest), for events
    stamped from `since` to before `until` (see the module docstring); None when it is
    empty."""
    low, high = 1, _LAST_SEQ if before_seq is None else min(before_seq - 1, _LAST_SEQ)
    if since is None and until is None:
        return Window(low, high, None, None) if low <= high else None
    newest = conn.execute(
        "SELECT ts FROM outbox WHERE seq > 0 ORDER BY seq DESC LIMIT 1"  # a search, one row
    ).fetchone()
    if newest is None:
        return None
    zone = _zone_of(newest[0])
    exact_since = exact_until = None
    if since is not None:
        exact_since = _iso(_ceil_ms(since).astimezone(UTC))
        bound = _iso(_in(zone, since - CLOCK_SLACK))  # truncated: earlier still
        row = conn.execute(
            f"SELECT seq FROM {BY_TS} WHERE ts < ? ORDER BY ts DESC LIMIT 1",  # noqa: S608
            (bound,),
        ).fetchone()
        if row is not None:
            low = int(row[0])
    if until is not None:
        exact_until = _iso(_ceil_ms(until).astimezone(UTC))
        bound = _iso(_in(zone, _ceil_ms(until + CLOCK_SLACK)))
        row = conn.execute(
            f"SELECT seq FROM {BY_TS} WHERE ts >= ? ORDER BY ts LIMIT 1",  # noqa: S608
            (bound,),
        ).fetchone()
        if row is not None:
            high = min(high, int(row[0]))
    return Window(low, high, exact_since, exact_until) if low <= high else None


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
