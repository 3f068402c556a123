"""Event history pages (gateway/store/event_history.py) with a million events stored, idle and busy.

1. A store is built with N events (default 1,000,000) through
   `gateway.store.outbox.append_rows`, 50,000 per transaction, on a file opened
   the gateway's one way (WAL, synchronous=FULL, the real schema and its
   migration 7 indexes). The mix is what a building writes: ~85 %
   access.decision over 8 doors and 2,000 people (1 in 20 taps an unknown
   card, so no person), ~11 % device.status, ~1 % door.alarm, ~3 %
   alert.raised (half of them at a door); stamps spread evenly over 90 days.
   Payloads have the envelope `new_event` writes (id, type, ts, mono, body),
   built here without the UUIDv7 generator so that the build takes seconds.
2. Page latency, limit 50, one read connection, `event_history.page` timed call to
   return (rows materialised), for each case below; each case draws its
   parameters (door, person, day, scope, ...) at random per call:
   newest page; deep page (before_seq near the middle); door; person; a rare
   type (door.alarm); one day; landlord scopes of 40, 400 and 2,000 people
   (+ 2 doors); and, beyond the required cases, door + rare type, scope (40) +
   one day, and the 2,000-people scope with a deep page, a door, a rare type,
   one day, and at its sparsest: 40 of its people with events, 1,960 without
   any (a big scope is walked newest-first, then merged if the walk runs out:
   gateway/store/event_merge.py).
3. The same cases again while a background thread records taps through the
   real `gateway.store.writer.Writer` (group commit, synchronous=FULL) at
   ~50 taps/s, as doors in use do; it stops after the measurement.

Prints p50/p95/p99/max per case, idle and busy, and the ratio busy/idle of
p99. Numbers only: nothing here asserts a timing.

    .venv/bin/python bench/events_page.py                   # 1,000,000 events
    .venv/bin/python bench/events_page.py --events 100000 --samples 100
    .venv/bin/python bench/events_page.py --db /tmp/history.db   # build once, reuse
    .venv/bin/python bench/events_page.py --db /tmp/history.db --only "scope 2,000"

(--db reuses the store, and the busy runs add their taps to it: copy a pristine
build when runs are to be compared.)
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import benchlib
from benchlib import percentile

from gateway.domain.events import EventType, OutboxEvent, new_event
from gateway.store import event_history, outbox
from gateway.store.db import connect, transaction
from gateway.store.writer import Writer

TARGET_P99_MS = 50.0
LIMIT = 50
DOORS = tuple(f"door-{n}" for n in range(8))
PEOPLE_COUNT = 2_000
DAYS = 90
CHUNK = 50_000
ZONE = ZoneInfo("Asia/Shanghai")
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def person_id(n: int) -> str:
    return f"5f0c6c0e-8a1e-4c4e-9a55-{n:012x}"


PEOPLE = tuple(person_id(n) for n in range(PEOPLE_COUNT))


def _body(rng: random.Random) -> tuple[EventType, dict[str, object]]:
    """One event's type and body, in the building's mix."""
    roll = rng.random()
    door = rng.choice(DOORS)
    if roll < 0.85:
        known = rng.random() >= 0.05
        return EventType.ACCESS_DECISION, {
            "door": door,
            "reader": f"{door}-line-0",
            "result": "allow" if known else "deny",
            "reason": "granted" if known else "unknown",
            "credential": {
                "kind": "card_uid",
                "masked": "04A***D4",
                "hash": f"{rng.getrandbits(128):032x}",
            },
            "person": rng.choice(PEOPLE) if known else None,
        }
    if roll < 0.96:
        return EventType.DEVICE_STATUS, {
            "device": f"{door}-line-0",
            "door": door,
            "online": rng.random() < 0.5,
            "error": None,
        }
    if roll < 0.97:
        return EventType.DOOR_ALARM, {
            "door": door,
            "alarm": "held_open",
            "state": "raised",
            "device": f"{door}-sensor",
            "detail": None,
            "fail_mode": "secure",
        }
    body: dict[str, object] = {
        "alert": f"0192f1c0-0000-7000-8000-{rng.getrandbits(48):012x}",
        "rule": "unregistered_stay",
        "person": rng.choice(PEOPLE),
        "deadline": None,
        "severity": "warning",
        "action": "register",
        "building": "B1",
        "id_masked": "341***********0010",
    }
    if rng.random() < 0.5:
        body["door"] = door
    return EventType.ALERT_RAISED, body


def build(path: Path, count: int, seed: int) -> tuple[datetime, datetime]:
    """Write `count` events stamped evenly over the last DAYS days; returns (first, last) ts."""
    rng = random.Random(seed)
    end = datetime.now(ZONE)
    start = end - timedelta(days=DAYS)
    step = (end - start) / count
    benchlib.fresh_store(path)
    conn = connect(path)
    try:
        serial = 0
        while serial < count:
            batch: list[OutboxEvent] = []
            for _ in range(min(CHUNK, count - serial)):
                event_type, body = _body(rng)
                moment = start + step * serial
                event_id = f"0192f1c0-{serial >> 48 & 0xFFFF:04x}-7000-8000-{serial:012x}"
                ts = moment.isoformat(timespec="milliseconds")
                document = {"id": event_id, "type": event_type.value, "ts": ts, "mono": 1.0}
                document.update(body)
                batch.append(OutboxEvent(event_id, event_type.value, ts, _ENCODER.encode(document)))
                serial += 1
            with transaction(conn):
                outbox.append_rows(conn, batch)
    finally:
        conn.close()
    return start, end


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[
        [random.Random],
        tuple[event_history.EventFilter, event_history.EventScope | None, int | None],
    ]


def cases(head: int, start: datetime) -> list[Case]:
    def day(rng: random.Random) -> tuple[datetime, datetime]:
        first = (start + timedelta(days=rng.randrange(1, DAYS - 1))).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        return first, first + timedelta(days=1)

    def scope_of(people: int) -> Callable[[random.Random], event_history.EventScope]:
        def draw(rng: random.Random) -> event_history.EventScope:
            return event_history.EventScope(
                frozenset(rng.sample(PEOPLE, people)), frozenset(rng.sample(DOORS, 2))
            )

        return draw

    scope = scope_of(40)
    big = scope_of(PEOPLE_COUNT)

    def sparse(rng: random.Random) -> event_history.EventScope:
        """40 people with events and 1,960 without (tenancies ended long ago, cards never
        used): the big scope at its sparsest."""
        absent = (person_id(PEOPLE_COUNT + n) for n in range(PEOPLE_COUNT - 40))
        return event_history.EventScope(
            frozenset((*rng.sample(PEOPLE, 40), *absent)), frozenset(rng.sample(DOORS, 2))
        )

    def middle(rng: random.Random) -> int:
        return head // 2 + rng.randrange(-head // 20, head // 20 + 1)

    def one_day(rng: random.Random) -> event_history.EventFilter:
        since, until = day(rng)
        return event_history.EventFilter(since=since, until=until)

    def scope_day(
        rng: random.Random,
    ) -> tuple[event_history.EventFilter, event_history.EventScope, None]:
        since, until = day(rng)
        return event_history.EventFilter(since=since, until=until), scope(rng), None

    alarm = EventType.DOOR_ALARM.value
    return [
        Case("newest page", lambda _rng: (event_history.EventFilter(), None, None)),
        Case("deep page (middle)", lambda rng: (event_history.EventFilter(), None, middle(rng))),
        Case("door", lambda rng: (event_history.EventFilter(door=rng.choice(DOORS)), None, None)),
        Case(
            "person", lambda rng: (event_history.EventFilter(person=rng.choice(PEOPLE)), None, None)
        ),
        Case("type door.alarm", lambda _rng: (event_history.EventFilter(type=alarm), None, None)),
        Case("one day", lambda rng: (one_day(rng), None, None)),
        Case(
            "scope 40 people + 2 doors", lambda rng: (event_history.EventFilter(), scope(rng), None)
        ),
        Case(
            "scope 400 people + 2 doors",
            lambda rng: (event_history.EventFilter(), scope_of(400)(rng), None),
        ),
        Case(
            "scope 2,000 people + 2 doors",
            lambda rng: (event_history.EventFilter(), big(rng), None),
        ),
        Case(
            "door + door.alarm",
            lambda rng: (event_history.EventFilter(door=rng.choice(DOORS), type=alarm), None, None),
        ),
        Case("scope + one day", scope_day),
        Case(
            "scope 2,000 + deep page",
            lambda rng: (event_history.EventFilter(), big(rng), middle(rng)),
        ),
        Case(
            "scope 2,000 + door",
            lambda rng: (event_history.EventFilter(door=rng.choice(DOORS)), big(rng), None),
        ),
        Case(
            "scope 2,000 + door.alarm",
            lambda rng: (event_history.EventFilter(type=alarm), big(rng), None),
        ),
        Case("scope 2,000 + one day", lambda rng: (one_day(rng), big(rng), None)),
        Case(
            "scope 2,000, 40 with events",
            lambda rng: (event_history.EventFilter(), sparse(rng), None),
        ),
    ]


@dataclass
class Result:
    ms: list[float]
    rows: int


def measure(path: Path, case: Case, samples: int, seed: int) -> Result:
    rng = random.Random(seed)
    conn = connect(path, readonly=True)
    try:
        for _ in range(3):  # warm the statement cache and the pages this case reads
            filters, scope, before = case.call(rng)
            event_history.page(conn, filters, scope, before_seq=before, limit=LIMIT)
        times: list[float] = []
        rows = 0
        for _ in range(samples):
            filters, scope, before = case.call(rng)
            began = time.perf_counter()
            found = event_history.page(conn, filters, scope, before_seq=before, limit=LIMIT)
            times.append((time.perf_counter() - began) * 1000)
            rows += len(found)
    finally:
        conn.close()
    return Result(times, rows)


class Taps:
    """Taps recorded through the real Writer at `rate`/s on a thread of their own."""

    def __init__(self, path: Path, rate: float, seed: int) -> None:
        self._writer = Writer(path)
        self._rate = rate
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taps", daemon=True)
        self.recorded = 0
        self.seconds = 0.0

    def __enter__(self) -> Taps:
        self._writer.start()
        self._thread.start()
        return self

    def _run(self) -> None:
        interval = 1.0 / self._rate
        began = next_at = time.perf_counter()
        while not self._stop.is_set():
            body = {
                "door": self._rng.choice(DOORS),
                "reader": "line-0",
                "result": "allow",
                "reason": "granted",
                "credential": {"kind": "card_uid", "masked": "04A***D4", "hash": "0" * 32},
                "person": self._rng.choice(PEOPLE),
            }
            event = new_event(EventType.ACCESS_DECISION, datetime.now(ZONE), time.monotonic(), body)
            self._writer.append(event)
            self.recorded += 1
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.perf_counter()))
        self.seconds = time.perf_counter() - began

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._writer.close()


def _stats(values: list[float]) -> str:
    return (
        f"{percentile(values, 0.5):6.2f} {percentile(values, 0.95):6.2f} "
        f"{percentile(values, 0.99):6.2f} {max(values):7.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=200, help="pages timed per case")
    parser.add_argument("--rate", type=float, default=50.0, help="taps/s while busy")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--only", default="", help="run only the cases whose name contains this text"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the database goes")
    parser.add_argument(
        "--db", type=Path, default=None, help="reuse this store if it exists (else build it)"
    )
    args = parser.parse_args()
    if not any(args.only in case.name for case in cases(2, datetime.now(ZONE))):
        parser.error(f"no case's name contains {args.only!r}")

    workdir = Path(tempfile.mkdtemp(prefix="rentgate-events-", dir=args.dir))
    path = args.db or workdir / "history.db"
    print(f"machine: {benchlib.machine()}")
    try:
        if args.db is None or not args.db.exists():
            began = time.perf_counter()
            build(path, args.events, args.seed)
            print(f"built {args.events:,} events in {time.perf_counter() - began:.1f} s: {path}")
        conn = connect(path, readonly=True)
        try:
            head = outbox.head_seq(conn)
            (first_ts,) = conn.execute("SELECT ts FROM outbox ORDER BY seq LIMIT 1").fetchone()
        finally:
            conn.close()
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        print(f"store: {head:,} events, {size / 1e6:.0f} MB; limit {LIMIT}, {args.samples} pages")
        todo = [
            case for case in cases(head, datetime.fromisoformat(first_ts)) if args.only in case.name
        ]
        idle = {case.name: measure(path, case, args.samples, args.seed) for case in todo}
        with Taps(path, args.rate, args.seed) as taps:
            busy = {case.name: measure(path, case, args.samples, args.seed) for case in todo}
        print(
            f"busy: {taps.recorded:,} taps recorded through the Writer in {taps.seconds:.1f} s "
            f"({taps.recorded / max(taps.seconds, 1e-9):.0f}/s)"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(
        f"{'page (limit 50), ms':<30} {'idle p50    p95    p99     max':>30}  "
        f"{'busy p50    p95    p99     max':>30}  p99 busy/idle  rows/page"
    )
    worst = 0.0
    for case in todo:
        quiet, loaded = idle[case.name], busy[case.name]
        ratio = percentile(loaded.ms, 0.99) / max(percentile(quiet.ms, 0.99), 1e-9)
        worst = max(worst, percentile(loaded.ms, 0.99))
        print(
            f"{case.name:<30} {_stats(quiet.ms):>30}  {_stats(loaded.ms):>30}  "
            f"{ratio:>12.2f}x  {loaded.rows / len(loaded.ms):9.1f}"
        )
    print()
    print(
        f"target: p99 <= {TARGET_P99_MS:.0f} ms per page while doors are in use: worst busy p99 "
        f"{worst:.2f} ms {benchlib.verdict(worst <= TARGET_P99_MS)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
