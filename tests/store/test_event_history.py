"""The event history the web API lists (gateway/store/event_history.py) on a real SQLite file.

Events are written the way the gateway writes them (`new_event`, then
`outbox.append_rows` in a transaction) and every answer is compared with a
brute-force reference: all rows read back, the payload parsed in Python, `ts`
compared as instants.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.events import EventType, new_event
from gateway.store import event_history, maintenance, outbox, tenants
from gateway.store.db import connect, transaction
from gateway.store.errors import StoreError
from gateway.store.event_history import EventFilter, EventRow, EventScope
from gateway.store.event_window import CLOCK_SLACK
from gateway.store.migrations import LATEST_VERSION, migrate, schema_version

CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=CST)
P1, P2, P3 = (f"5f0c6c0e-8a1e-4c4e-9a55-00000000000{n}" for n in (1, 2, 3))
TYPES = (
    EventType.ACCESS_DECISION,
    EventType.DEVICE_STATUS,
    EventType.DOOR_ALARM,
    EventType.ALERT_RAISED,
)


@dataclass(frozen=True)
class Spec:
    """One event to record: its type, wall-clock stamp, door and person (None: no key)."""

    type: EventType
    at: datetime
    door: str | None = None
    person: str | None = None


def _body(spec: Spec) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": "x"}
    if spec.door is not None:
        body["door"] = spec.door
    if spec.type is EventType.ACCESS_DECISION or spec.person is not None:
        body["person"] = spec.person  # access.decision writes null for an unknown card
    return body


def _record(conn: sqlite3.Connection, specs: Sequence[Spec]) -> None:
    rows = [new_event(spec.type, spec.at, 1.0, _body(spec)) for spec in specs]
    with transaction(conn):
        outbox.append_rows(conn, rows)


@contextmanager
def _store(directory: Path, specs: Sequence[Spec] = ()) -> Iterator[sqlite3.Connection]:
    conn = connect(directory / "gateway.db")
    try:
        migrate(conn)
        if specs:
            _record(conn, specs)
        yield conn
    finally:
        conn.close()


def _everything(conn: sqlite3.Connection) -> list[EventRow]:
    """All rows, newest first, with door and person taken from the payload in Python."""
    found = []
    for seq, event_id, kind, ts, payload in conn.execute(
        "SELECT seq, id, type, ts, payload FROM outbox ORDER BY seq DESC"
    ):
        try:
            body = json.loads(payload)
        except ValueError:
            body = {}
        door, person = body.get("door"), body.get("person")
        found.append(EventRow(seq, event_id, kind, ts, door, person, payload))
    return found


def _matches(row: EventRow, wanted: EventFilter, scope: EventScope | None) -> bool:
    moment = datetime.fromisoformat(row.ts)
    return (
        (wanted.door is None or row.door == wanted.door)
        and (wanted.person is None or row.person == wanted.person)
        and (wanted.type is None or row.type == wanted.type)
        and (wanted.since is None or moment >= wanted.since)
        and (wanted.until is None or moment < wanted.until)
        and (
            scope is None
            or row.person in scope.people
            or (row.person is None and row.door in scope.doors)
        )
    )


def _reference(
    conn: sqlite3.Connection, wanted: EventFilter, scope: EventScope | None
) -> list[EventRow]:
    return [row for row in _everything(conn) if _matches(row, wanted, scope)]


def _all_pages(
    conn: sqlite3.Connection,
    wanted: EventFilter,
    scope: EventScope | None,
    limit: int,
    **walk: int,
) -> list[EventRow]:
    """Page through to the end; every page but the last is full, and the one after it empty.

    `walk`: walk_from and walk_rows for event_history.page (a big scope's walk)."""
    found: list[EventRow] = []
    before = None
    while True:
        rows = event_history.page(conn, wanted, scope, before_seq=before, limit=limit, **walk)
        assert len(rows) <= limit
        assert [row.seq for row in rows] == sorted((row.seq for row in rows), reverse=True)
        if before is not None:
            assert all(row.seq < before for row in rows)
        found += rows
        if len(rows) < limit:
            if rows:
                after = event_history.page(
                    conn, wanted, scope, before_seq=rows[-1].seq, limit=limit, **walk
                )
                assert after == []
            return found
        before = rows[-1].seq


def _building() -> list[Spec]:
    """Two days at two doors: taps by three people and unknown cards, status, alarms, alerts."""
    specs = []
    for n in range(120):
        at = T0 + timedelta(minutes=23 * n)
        door = ("front", "back")[n % 2]
        kind = TYPES[0] if n % 5 else TYPES[1 + n // 5 % 3]
        person = (P1, P2, P3, None)[n % 4] if kind in (TYPES[0], TYPES[3]) else None
        specs.append(Spec(kind, at, None if kind is TYPES[3] and n % 3 else door, person))
    return specs


@pytest.fixture
def building(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    with _store(tmp_path, _building()) as conn:
        yield conn


# -- filters ------------------------------------------------------------------

SINCE = T0 + timedelta(hours=10)
UNTIL = T0 + timedelta(hours=30)
FIELDS: dict[str, object] = {
    "door": "back",
    "person": P2,
    "type": EventType.ACCESS_DECISION.value,
    "since": SINCE,
    "until": UNTIL,
}
COMBINATIONS = [
    dict(chosen)
    for size in range(len(FIELDS) + 1)
    for chosen in itertools.combinations(FIELDS.items(), size)
]


@pytest.mark.parametrize("fields", COMBINATIONS, ids=lambda f: "+".join(f) or "none")
@pytest.mark.parametrize("scoped", [False, True], ids=["all", "scope"])
def test_every_filter_and_combination_matches_the_reference(
    building: sqlite3.Connection, fields: dict[str, Any], scoped: bool
) -> None:
    wanted = EventFilter(**fields)
    scope = EventScope(frozenset({P1, P2}), frozenset({"back"})) if scoped else None
    expected = _reference(building, wanted, scope)
    assert expected or {"person", "door"} <= fields.keys()  # the fixture exercises the filter
    assert _all_pages(building, wanted, scope, limit=7) == expected
    assert event_history.page(building, wanted, scope, before_seq=None, limit=200) == expected


def test_door_and_person_are_read_from_the_payload(building: sqlite3.Connection) -> None:
    rows = event_history.page(building, EventFilter(), None, before_seq=None, limit=200)
    assert rows == _everything(building)
    assert {row.door for row in rows} == {"front", "back", None}
    assert {row.person for row in rows} == {P1, P2, P3, None}


def test_a_filter_value_nobody_has_finds_nothing(building: sqlite3.Connection) -> None:
    for wanted in (
        EventFilter(door="cellar"),
        EventFilter(person="nobody"),
        EventFilter(type="door.unlocked"),
        EventFilter(door="front", type="door.unlocked"),
        EventFilter(since=T0 + timedelta(days=30)),
        EventFilter(until=T0 - timedelta(days=30)),
    ):
        assert event_history.page(building, wanted, None, before_seq=None, limit=50) == []


def test_an_empty_store_has_no_events(tmp_path: Path) -> None:
    with _store(tmp_path) as conn:
        for wanted in (EventFilter(), EventFilter(door="front"), EventFilter(since=T0)):
            assert event_history.page(conn, wanted, None, before_seq=None, limit=50) == []
        assert event_history.after(conn, 0, 50) == []


# -- scope ------------------------------------------------------------------------


def test_a_scope_is_its_people_anywhere_plus_person_less_events_at_its_doors(
    tmp_path: Path,
) -> None:
    specs = [
        Spec(EventType.ACCESS_DECISION, T0, "front", P1),  # scope person, scope door
        Spec(EventType.ACCESS_DECISION, T0, "back", P1),  # scope person, other door
        Spec(EventType.ALERT_RAISED, T0, None, P1),  # scope person, no door
        Spec(EventType.ACCESS_DECISION, T0, "front", P3),  # other person at a scope door
        Spec(EventType.ACCESS_DECISION, T0, "front", None),  # unknown card at a scope door
        Spec(EventType.DEVICE_STATUS, T0, "front"),  # person-less at a scope door
        Spec(EventType.DOOR_ALARM, T0, "back"),  # person-less at another door
        Spec(EventType.ACCESS_DECISION, T0, "back", None),  # unknown card, other door
        Spec(EventType.ALERT_RAISED, T0, "front", P2),  # scope person 2
    ]
    with _store(tmp_path, specs) as conn:
        scope = EventScope(frozenset({P1, P2}), frozenset({"front"}))

        def seqs(wanted: EventFilter, limit: int = 50, within: EventScope = scope) -> list[int]:
            return [
                row.seq
                for row in event_history.page(conn, wanted, within, before_seq=None, limit=limit)
            ]

        assert seqs(EventFilter()) == [9, 6, 5, 3, 2, 1]
        assert seqs(EventFilter(), limit=4) == [9, 6, 5, 3]
        assert seqs(EventFilter(door="back")) == [2]  # the scope's person at another door
        assert seqs(EventFilter(door="front")) == [9, 6, 5, 1]
        assert seqs(EventFilter(person=P1)) == [3, 2, 1]
        assert seqs(EventFilter(person=P3)) == []  # not the landlord's tenant
        assert seqs(EventFilter(type=EventType.ACCESS_DECISION.value)) == [5, 2, 1]
        assert seqs(EventFilter(), within=EventScope(frozenset(), frozenset())) == []
        assert seqs(EventFilter(), within=EventScope(frozenset(), frozenset({"back"}))) == [8, 7]
        assert seqs(EventFilter(door="cellar")) == []


MANY_PEOPLE = [f"person-{n:03d}" for n in range(60)]
MANY_DOORS = [f"door-{n}" for n in range(6)]


def _many(count: int) -> list[Spec]:
    """`count` events a second apart at MANY_DOORS, nearly half naming one of MANY_PEOPLE."""
    return [
        Spec(
            TYPES[n % 4],
            T0 + timedelta(seconds=n),
            MANY_DOORS[n % 6],
            MANY_PEOPLE[n * 7 % 60] if n % 4 in (0, 3) and n % 9 else None,
        )
        for n in range(count)
    ]


def test_scope_reads_merge_newest_first_across_many_people_and_doors(tmp_path: Path) -> None:
    with _store(tmp_path, _many(3000)) as conn:
        scope = EventScope(frozenset(MANY_PEOPLE[:40]), frozenset(MANY_DOORS[:2]))
        for wanted in (EventFilter(), EventFilter(type=TYPES[2].value), EventFilter(door="door-1")):
            expected = _reference(conn, wanted, scope)
            assert len(expected) > 100
            for limit in (1, 13, 50, 200):
                assert _all_pages(conn, wanted, scope, limit) == expected


def _traced(conn: sqlite3.Connection, call: Any) -> tuple[Any, list[str]]:
    """What `call()` returns, and the SELECT statements it ran (values inlined)."""
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        result = call()
    finally:
        conn.set_trace_callback(None)
    return result, [sql for sql in seen if sql.startswith("SELECT")]


def _walked(statements: list[str]) -> bool:
    return any(sql.startswith("SELECT seq, person, ") for sql in statements)


def _merged(statements: list[str]) -> bool:
    return any(" AS newest FROM json_each(" in sql for sql in statements)


WALK_NOW = {"walk_from": 2}
"""Every scope with more than one read is walked."""


@pytest.mark.parametrize(
    "walk",
    [{}, WALK_NOW, {"walk_from": 2, "walk_rows": 1}, {"walk_from": 2, "walk_rows": 37}],
    ids=["merged", "walked", "walk-1-row", "walk-37-rows"],
)
def test_a_big_scope_is_walked_then_merged_to_the_same_answer(
    tmp_path: Path, walk: dict[str, int]
) -> None:
    with _store(tmp_path, _many(3000)) as conn:
        scope = EventScope(frozenset(MANY_PEOPLE[:40]), frozenset(MANY_DOORS[:2]))
        for wanted in (
            EventFilter(),
            EventFilter(type=TYPES[2].value),
            EventFilter(door="door-1"),
            EventFilter(door="door-2"),
            EventFilter(door="door-1", type=TYPES[1].value),
            EventFilter(door="door-2", type=TYPES[0].value),
            EventFilter(person=MANY_PEOPLE[8]),  # 50 events
            EventFilter(since=T0 + timedelta(seconds=500), until=T0 + timedelta(seconds=2500)),
        ):
            expected = _reference(conn, wanted, scope)
            assert len(expected) >= 50
            for limit in (1, 13, 50, 200):
                assert _all_pages(conn, wanted, scope, limit, **walk) == expected


def _let(conn: sqlite3.Connection, people: Sequence[str]) -> None:
    """Tenancies for `people`: in unit U1 (every third in U2 instead), each starting later,
    most ending 25 minutes on, some recorded only after they started."""
    stamp = T0.isoformat()
    with transaction(conn):
        for n, person in enumerate(people):
            start = T0 + timedelta(seconds=20 * n)
            end = None if n % 5 == 0 else start + timedelta(seconds=1500)
            recorded = start + timedelta(seconds=400) if n % 7 == 0 else T0
            conn.execute(
                "INSERT INTO people (id, id_hash, id_masked, id_number_sealed, created_at,"
                " updated_at) VALUES (?, ?, 'x', x'00', ?, ?)",
                (person, person.encode(), stamp, stamp),
            )
            conn.execute(
                "INSERT INTO tenancies (id, person_id, unit, valid_from, valid_to, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    f"t-{person}",
                    person,
                    "U2" if n % 3 == 0 else "U1",
                    start.isoformat(),
                    end.isoformat() if end else None,
                    recorded.isoformat(),
                ),
            )


@pytest.mark.parametrize(
    "walk", [{}, WALK_NOW, {"walk_from": 2, "walk_rows": 37}], ids=["merged", "walked", "walk-37"]
)
def test_a_landlords_scope_sees_their_tenants_only_in_their_tenancies_at_their_doors(
    tmp_path: Path, walk: dict[str, int]
) -> None:
    """SQL (merged or walked) and `EventScope.admits` (the live feed) cut alike: a person's
    events during one of their tenancies in the scope's units, from the later of its start
    and when it was recorded, at the scope's doors or none."""
    with _store(tmp_path, _many(3000)) as conn:
        _let(conn, MANY_PEOPLE[:40])
        windows = tenants.tenancy_windows(conn, {"U1"})
        assert 20 < len(windows) < 40
        scope = EventScope(
            frozenset(windows), frozenset(MANY_DOORS[:2]), units=frozenset({"U1"}), windows=windows
        )
        for wanted in (
            EventFilter(),
            EventFilter(door="door-1"),
            EventFilter(door="door-3"),
            EventFilter(person=MANY_PEOPLE[8]),
            EventFilter(type=TYPES[0].value, since=T0 + timedelta(seconds=500)),
        ):
            expected = [
                row
                for row in _reference(conn, wanted, None)
                if scope.admits(row.person, row.door, row.ts)
            ]
            if wanted == EventFilter():
                assert any(row.person for row in expected), "the fixture has tenants' events"
            for limit in (1, 13, 50):
                assert _all_pages(conn, wanted, scope, limit, **walk) == expected
        anywhere = _reference(conn, EventFilter(), EventScope(frozenset(windows), frozenset()))
        during = [row for row in anywhere if scope.admits(row.person, row.door, row.ts)]
        assert 0 < len(during) < len(anywhere) / 2, "most of their tenants' lives is not theirs"


def test_a_walk_that_runs_out_hands_the_rest_of_the_page_to_the_merge(tmp_path: Path) -> None:
    """The scope's people tapped long ago; the newest 300 events are strangers' taps, so a
    walk of 100 rows finds nothing and the merge reads below the rows walked."""
    specs = [Spec(EventType.ACCESS_DECISION, T0, "front", (P1, P2)[n % 2]) for n in range(30)]
    specs += [Spec(EventType.ACCESS_DECISION, T0, "front", P3) for _ in range(300)]
    specs += [Spec(EventType.DEVICE_STATUS, T0, "front")]  # person-less, at a scope door
    with _store(tmp_path, specs) as conn:
        scope = EventScope(frozenset({P1, P2, "nobody"}), frozenset({"front"}))
        walk = {"walk_from": 2, "walk_rows": 100}
        for wanted, below in (
            (EventFilter(), 231),  # seq 331 to 232 walked
            (EventFilter(door="front"), 231),
            (EventFilter(type=TYPES[0].value), 230),  # the taps: seq 330 to 231 walked
        ):
            expected = _reference(conn, wanted, scope)
            found, statements = _traced(
                conn,
                lambda w=wanted: event_history.page(
                    conn, w, scope, before_seq=None, limit=20, **walk
                ),
            )
            assert found == expected[:20]
            assert _walked(statements)
            assert _merged(statements)
            assert all(f"seq BETWEEN 1 AND {below} " in sql for sql in statements if _merged([sql]))
            assert _all_pages(conn, wanted, scope, 7, **walk) == expected
        # A window shorter than the walk is walked to its end: no merge.
        found, statements = _traced(
            conn,
            lambda: event_history.page(conn, EventFilter(), scope, before_seq=50, limit=40, **walk),
        )
        assert [row.seq for row in found] == list(range(30, 0, -1))
        assert _walked(statements)
        assert not _merged(statements)


def test_only_scopes_of_walk_from_reads_or_more_are_walked(building: sqlite3.Connection) -> None:
    """A read per person or door and type: the building has four types."""
    present = {row.type for row in _everything(building)}
    assert len(present) == 4
    small = EventScope(frozenset({P1, P2}), frozenset({"back"}))
    strangers = frozenset(f"stranger-{n}" for n in range(-(-event_history.WALK_FROM // 4) - 3))
    big = EventScope(small.people | strangers, small.doors)
    below = EventScope(big.people - {P1}, big.doors)
    assert (len(big.people) + len(big.doors)) * 4 >= event_history.WALK_FROM
    assert (len(below.people) + len(below.doors)) * 4 < event_history.WALK_FROM
    for scope, walked in ((small, False), (below, False), (big, True)):
        found, statements = _traced(
            building,
            lambda s=scope: event_history.page(
                building, EventFilter(), s, before_seq=None, limit=9
            ),
        )
        assert found == _reference(building, EventFilter(), scope)[:9]
        assert _walked(statements) == walked
        assert _merged(statements) != walked  # 120 events: a walk reads them all


# -- paging, as a property ---------------------------------------------------------

DOORS = ("front", "back", None)
PEOPLE = (P1, P2, P3, None)


@st.composite
def stores(draw: st.DrawFn) -> list[Spec]:
    """Events on a clock that advances with seq, each stamp displaced by up to the slack
    (less a minute): out of order with seq, as a clock stepping back and forth writes them."""
    slack = int(CLOCK_SLACK.total_seconds()) - 60
    event = st.tuples(
        st.sampled_from(TYPES),
        st.integers(0, 3600),
        st.integers(0, slack),
        st.sampled_from(DOORS),
        st.sampled_from(PEOPLE),
    )
    clock = T0
    specs = []
    for kind, step, jitter, door, person in draw(st.lists(event, max_size=80)):
        clock += timedelta(seconds=step)
        specs.append(Spec(kind, clock + timedelta(seconds=jitter), door, person))
    return specs


bounds = st.one_of(
    st.none(),
    st.builds(
        lambda seconds, micros, zone: (
            T0 + timedelta(seconds=seconds, microseconds=micros)
        ).astimezone(zone),
        st.integers(-3600, 3 * 86400),
        st.integers(0, 999_999),
        st.sampled_from([CST, UTC, timezone(timedelta(hours=-5))]),
    ),
)


@st.composite
def filters(draw: st.DrawFn) -> EventFilter:
    since, until = draw(bounds), draw(bounds)
    if since is not None and until is not None and until < since:
        since, until = until, since
    return EventFilter(
        door=draw(st.sampled_from([None, "front", "back", "cellar"])),
        person=draw(st.sampled_from([None, P1, P2, "nobody"])),
        type=draw(st.sampled_from([None, *(t.value for t in TYPES[:3])])),
        since=since,
        until=until,
    )


scopes = st.one_of(
    st.none(),
    st.builds(
        EventScope,
        st.frozensets(st.sampled_from([P1, P2, P3, "nobody"])),
        st.frozensets(st.sampled_from(["front", "back", "cellar"])),
    ),
)


walks = st.one_of(
    st.just({}),  # the defaults: these scopes are small, so merged
    st.builds(
        lambda rows: {"walk_from": 2, "walk_rows": rows},  # walked, falling back early or not
        st.one_of(st.integers(1, 12), st.just(event_history.WALK_ROWS)),
    ),
)


@settings(max_examples=120, deadline=None)
@given(specs=stores(), wanted=filters(), scope=scopes, limit=st.integers(1, 12), walk=walks)
def test_paging_returns_the_reference_without_gaps_or_repeats(
    specs: list[Spec],
    wanted: EventFilter,
    scope: EventScope | None,
    limit: int,
    walk: dict[str, int],
) -> None:
    with tempfile.TemporaryDirectory() as directory, _store(Path(directory), specs) as conn:
        expected = _reference(conn, wanted, scope)
        found = _all_pages(conn, wanted, scope, limit, **walk)
        assert [row.seq for row in found] == [row.seq for row in expected]
        assert found == expected


# -- time bounds and a clock that steps back ------------------------------------------


def test_time_bounds_are_instants_to_the_millisecond(tmp_path: Path) -> None:
    specs = [
        Spec(EventType.DEVICE_STATUS, T0 + timedelta(milliseconds=n), "front") for n in range(5)
    ]
    with _store(tmp_path, specs) as conn:

        def seqs(wanted: EventFilter) -> list[int]:
            return [
                row.seq for row in event_history.page(conn, wanted, None, before_seq=None, limit=50)
            ]

        assert seqs(EventFilter(since=T0 + timedelta(milliseconds=2))) == [5, 4, 3]
        assert seqs(EventFilter(since=T0 + timedelta(microseconds=2001))) == [5, 4]
        assert seqs(EventFilter(until=T0 + timedelta(milliseconds=2))) == [2, 1]
        assert seqs(EventFilter(until=T0 + timedelta(microseconds=2001))) == [3, 2, 1]
        in_utc = (T0 + timedelta(milliseconds=1)).astimezone(UTC)  # the same instant
        assert seqs(EventFilter(since=in_utc, until=in_utc + timedelta(milliseconds=1))) == [2]


def test_events_stamped_with_another_offset_compare_as_instants(tmp_path: Path) -> None:
    """A zone change between events: `ts` texts no longer sort as instants; bounds still do."""
    tokyo = timezone(timedelta(hours=9))
    specs = [
        Spec(EventType.DEVICE_STATUS, T0, "front"),  # 09:00+08:00
        Spec(EventType.DEVICE_STATUS, (T0 + timedelta(minutes=30)).astimezone(tokyo), "front"),
        Spec(EventType.DEVICE_STATUS, T0 + timedelta(minutes=50), "front"),  # 09:50+08:00
    ]
    with _store(tmp_path, specs) as conn:
        assert _everything(conn)[1].ts.startswith("2026-11-28T10:30:00.000+09:00")
        for wanted in (
            EventFilter(since=T0 + timedelta(minutes=40)),
            EventFilter(until=T0 + timedelta(minutes=40)),
            EventFilter(since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=31)),
        ):
            found = event_history.page(conn, wanted, None, before_seq=None, limit=50)
            assert found == _reference(conn, wanted, None)
            assert found


def _stepped_clock(step_back: timedelta) -> list[Spec]:
    """Taps every 10 minutes; at 10:00 the clock is found `step_back` fast and set right.

    Seq 1-6 are stamped 09:00..09:50, seq 7 at 10:00 + step_back (the fast clock),
    seq 8-13 at 10:00..10:50 again, after the correction.
    """
    specs = [
        Spec(EventType.ACCESS_DECISION, T0 + timedelta(minutes=10 * n), "front", P1)
        for n in range(6)
    ]
    specs.append(Spec(EventType.ACCESS_DECISION, T0 + timedelta(hours=1) + step_back, "front", P2))
    specs += [
        Spec(EventType.ACCESS_DECISION, T0 + timedelta(hours=1, minutes=10 * n), "front", P1)
        for n in range(6)
    ]
    return specs


@pytest.mark.parametrize("scoped", [False, True], ids=["all", "scope"])
def test_an_event_stamped_before_the_clock_stepped_back_within_the_slack_is_found(
    tmp_path: Path, scoped: bool
) -> None:
    step = CLOCK_SLACK - timedelta(minutes=5)
    scope = EventScope(frozenset({P1, P2}), frozenset()) if scoped else None
    with _store(tmp_path, _stepped_clock(step)) as conn:
        fast = T0 + timedelta(hours=1) + step
        for wanted in (
            EventFilter(since=fast - timedelta(minutes=1)),  # only the fast-clock event
            EventFilter(since=T0 + timedelta(minutes=55), until=T0 + timedelta(hours=1, minutes=5)),
            EventFilter(until=T0 + timedelta(minutes=5)),
            EventFilter(since=fast, until=fast + timedelta(milliseconds=1)),
        ):
            expected = _reference(conn, wanted, scope)
            assert expected
            for limit in (1, 2, 50):
                assert _all_pages(conn, wanted, scope, limit) == expected
        only = event_history.page(conn, EventFilter(since=fast), scope, before_seq=None, limit=50)
        assert [row.seq for row in only] == [7]


def test_beyond_the_slack_the_events_of_the_stretch_lived_twice_may_be_left_out(
    tmp_path: Path,
) -> None:
    """The documented limit (event_window.py, "What that guarantees"): seq 7 was stamped a day
    ahead, then the clock was set back a day. A page starting after 10:00 the next day
    has seq 8 (stamped 10:00 today, recorded after seq 7) more than CLOCK_SLACK before its
    bound, so its seq range starts above 7: seq 7 is left out. A bound outside the stretch
    lived twice finds it."""
    with _store(tmp_path, _stepped_clock(timedelta(days=1))) as conn:
        fast = T0 + timedelta(days=1, hours=1)
        late = EventFilter(since=fast - timedelta(minutes=1))
        assert [row.seq for row in _reference(conn, late, None)] == [7]
        assert event_history.page(conn, late, None, before_seq=None, limit=50) == []
        early = EventFilter(since=T0 + timedelta(minutes=45))
        found = event_history.page(conn, early, None, before_seq=None, limit=50)
        assert [row.seq for row in found] == list(range(13, 5, -1))
    # The other end: seq 2 stamped a day behind, recorded after seq 1 (stamped today); a
    # page ending inside the stretch lived twice has seq 1 after its bound + CLOCK_SLACK.
    with _store(
        tmp_path / "slow",
        [
            Spec(EventType.DEVICE_STATUS, T0, "front"),
            Spec(EventType.DEVICE_STATUS, T0 - timedelta(days=1), "front"),
        ],
    ) as conn:
        before = EventFilter(until=T0 - timedelta(hours=20))
        assert [row.seq for row in _reference(conn, before, None)] == [2]
        assert event_history.page(conn, before, None, before_seq=None, limit=50) == []
        assert [
            row.seq
            for row in event_history.page(
                conn, EventFilter(until=T0), None, before_seq=None, limit=50
            )
        ] == [2]


# -- the live feed ---------------------------------------------------------------


def test_after_is_oldest_first_from_a_seq(building: sqlite3.Connection) -> None:
    everything = list(reversed(_everything(building)))
    assert event_history.after(building, 0, 5) == everything[:5]
    assert event_history.after(building, 100, 200) == everything[100:]
    assert event_history.after(building, 120, 10) == []


# -- the queries' plans -------------------------------------------------------------


BIG = EventScope(frozenset({P1, P2}), frozenset({"front"}))
"""Walked with WALK_NOW."""


@pytest.mark.parametrize(
    ("wanted", "scope", "walk", "index"),
    [
        (EventFilter(door="front"), None, {}, "outbox_by_door"),
        (EventFilter(door="front", type="door.alarm"), None, {}, "outbox_by_door"),
        (EventFilter(person=P1), None, {}, "outbox_by_person"),
        (EventFilter(person=P1, door="front", since=T0, until=UNTIL), None, {}, "outbox_by_person"),
        (EventFilter(), EventScope(frozenset({P1}), frozenset({"front"})), {}, "outbox_by_person"),
        (
            EventFilter(),
            EventScope(frozenset(), frozenset({"front"})),
            {},
            "outbox_personless_by_door",
        ),
        (EventFilter(), BIG, WALK_NOW, "PRIMARY KEY"),
        (EventFilter(since=T0, until=UNTIL), BIG, WALK_NOW, "PRIMARY KEY"),
        (EventFilter(door="back"), BIG, WALK_NOW, "outbox_by_door"),
        (EventFilter(type="door.alarm"), BIG, WALK_NOW, "outbox_by_type"),
        (EventFilter(door="back", type="door.alarm"), BIG, WALK_NOW, "outbox_by_door"),
    ],
    ids=[
        "door",
        "door+type",
        "person",
        "person+door+time",
        "scope",
        "scope-doors",
        "walk",
        "walk+time",
        "walk+door",
        "walk+type",
        "walk+door+type",
    ],
)
def test_door_and_person_filters_read_their_index_never_the_table(
    building: sqlite3.Connection,
    wanted: EventFilter,
    scope: EventScope | None,
    walk: dict[str, int],
    index: str,
) -> None:
    _found, statements = _traced(
        building,
        lambda: event_history.page(building, wanted, scope, before_seq=100, limit=50, **walk),
    )
    assert _walked(statements) == bool(walk)
    plans = {
        sql: [row[3] for row in building.execute(f"EXPLAIN QUERY PLAN {sql}")] for sql in statements
    }
    assert any(
        f"USING INDEX {index} " in step or f"USING INTEGER {index} " in step
        for steps in plans.values()
        for step in steps
    )
    for sql, steps in plans.items():
        assert not any(step.startswith("SCAN outbox") for step in steps), (sql, steps)
        assert not any("TEMP B-TREE" in step for step in steps), (sql, steps)  # no sort


# -- validation and errors ------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, 201, True, 2.5])
def test_a_limit_outside_1_to_200_is_refused(building: sqlite3.Connection, limit: Any) -> None:
    with pytest.raises(ValueError, match="limit"):
        event_history.page(building, EventFilter(), None, before_seq=None, limit=limit)
    with pytest.raises(ValueError, match="limit"):
        event_history.after(building, 0, limit)


def test_malformed_arguments_are_refused(building: sqlite3.Connection) -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        EventFilter(since=datetime(2026, 11, 28, 9, 0))
    with pytest.raises(ValueError, match="years"):
        EventFilter(since=datetime.min.replace(tzinfo=UTC))
    with pytest.raises(ValueError, match="years"):
        EventFilter(until=datetime.max.replace(tzinfo=CST))
    with pytest.raises(ValueError, match="before since"):
        EventFilter(since=T0, until=T0 - timedelta(seconds=1))
    with pytest.raises(ValueError, match="before_seq"):
        event_history.page(building, EventFilter(), None, before_seq=0, limit=5)
    with pytest.raises(ValueError, match="walk_rows"):
        event_history.page(building, EventFilter(), None, before_seq=None, limit=5, walk_rows=0)
    with pytest.raises(ValueError, match="after_seq"):
        event_history.after(building, -1, 5)
    assert event_history.page(building, EventFilter(), None, before_seq=1, limit=5) == []
    assert len(event_history.page(building, EventFilter(), None, before_seq=2**70, limit=5)) == 5
    assert (
        event_history.page(
            building, EventFilter(since=T0, until=T0), None, before_seq=None, limit=5
        )
        == []
    )


def test_sqlite_errors_come_out_as_store_errors(tmp_path: Path) -> None:
    conn = connect(tmp_path / "v6.db")
    try:
        migrate(conn, target=6)  # no migration 7: none of its indexes
        with pytest.raises(StoreError, match="no such index"):
            event_history.page(conn, EventFilter(door="front"), None, before_seq=None, limit=5)
    finally:
        conn.close()
    with pytest.raises(StoreError):
        event_history.after(conn, 0, 5)  # closed


# -- migration 7 -----------------------------------------------------------------------


def test_a_v6_store_with_rows_upgrades_and_its_rows_read_right(tmp_path: Path) -> None:
    conn = connect(tmp_path / "gateway.db")
    try:
        migrate(conn, target=6)
        _record(conn, _building())
        with transaction(conn):  # a row whose payload is not JSON (a damaged copy)
            conn.execute(
                "INSERT INTO outbox (seq, id, type, ts, payload) VALUES"
                " (121, 'x', 'device.status', '2026-11-30T00:00:00.000+08:00', 'not json')"
            )
            conn.execute("UPDATE meta SET value = 121 WHERE key = 'head_seq'")
        before = conn.execute(
            "SELECT seq, id, type, ts, payload FROM outbox ORDER BY seq"
        ).fetchall()
        assert migrate(conn) == 6
        assert schema_version(conn) == LATEST_VERSION == 9
        assert (
            conn.execute("SELECT seq, id, type, ts, payload FROM outbox ORDER BY seq").fetchall()
            == before
        )
        indexes = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE tbl_name = 'outbox' AND type = 'index'"
            )
        }
        assert {
            "outbox_by_door",
            "outbox_by_person",
            "outbox_personless_by_door",
            "outbox_by_type",
            "outbox_by_ts",
        } <= indexes
        rows = event_history.page(conn, EventFilter(), None, before_seq=None, limit=200)
        assert (rows[0].seq, rows[0].door, rows[0].person) == (121, None, None)
        assert rows == _everything(conn)
        wanted = EventFilter(door="back", person=P2)
        assert event_history.page(conn, wanted, None, before_seq=None, limit=200) == _reference(
            conn, wanted, None
        )
        # New rows after the upgrade: the columns list of append_rows still fits.
        _record(conn, [Spec(EventType.DOOR_ALARM, T0, "cellar")])
        assert [
            row.door
            for row in event_history.page(
                conn, EventFilter(door="cellar"), None, before_seq=None, limit=5
            )
        ] == ["cellar"]
    finally:
        conn.close()


def test_a_recovered_store_keeps_its_history_and_reads_it_right(tmp_path: Path) -> None:
    """maintenance.recover copies rows by column name (generated columns are not among
    them) into a fresh store, whose indexes recompute door and person, a payload that is
    not JSON included."""
    with _store(tmp_path, _building()) as conn:
        with transaction(conn):
            conn.execute(
                "INSERT INTO outbox (seq, id, type, ts, payload) VALUES"
                " (121, 'x', 'device.status', '2026-11-30T00:00:00.000+08:00', '{not json')"
            )
            conn.execute("UPDATE meta SET value = 121 WHERE key = 'head_seq'")
        expected = _everything(conn)
    report = maintenance.recover(tmp_path / "gateway.db")
    assert report.copied["outbox"] == 121
    with _store(tmp_path) as conn:
        assert event_history.page(conn, EventFilter(), None, before_seq=None, limit=200) == expected
        wanted = EventFilter(person=P1, door="front")
        found = event_history.page(conn, wanted, None, before_seq=None, limit=200)
        assert found == _reference(conn, wanted, None)
