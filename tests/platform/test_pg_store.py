"""The ingest's store against a real PostgreSQL: exactly once, the gap-free run it acknowledges,
monthly partitions, presence, replays claimed once, and two instances writing at once."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest

from gateway.platform.fleet import fleet_report, gateway_status
from gateway.platform.intake import take
from gateway.platform.pg_store import IngestStore
from gateway.platform.source import Delivery

GW = "GW-1"


def envelope(seqs: list[int], gw: str = GW, month: str = "2026-11") -> Delivery:
    events = [
        {"seq": s, "type": "access.decision", "ts": f"{month}-28T09:12:03.{s % 1000:03d}+08:00"}
        for s in seqs
    ]
    body = json.dumps({"v": 1, "gw": gw, "events": events}).encode()
    return Delivery(f"rentgate/v1/{gw}/events", body)


def state(gw: str = GW, **fields: Any) -> Delivery:
    document = {"v": 1, "gw": gw, "online": True, "ts": "2026-11-28T09:12:03.000+08:00"}
    document.update(fields)
    return Delivery(f"rentgate/v1/{gw}/state", json.dumps(document).encode())


def rows(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture
def store(pg_dsn: str) -> Any:
    opened = IngestStore(pg_dsn)
    yield opened
    opened.close()


def test_repeats_are_stored_once_and_acknowledged_again(store: IngestStore, pg_dsn: str) -> None:
    first = store.store(take([envelope([1, 2, 3])]))
    assert (first.events_new, first.events_repeated, first.acks) == (3, 0, {GW: 3})
    again = store.store(take([envelope([2, 3]), envelope([3])]))
    assert (again.events_new, again.events_repeated) == (0, 3)
    assert again.acks == {GW: 3}, "a gateway that resends did not get its ack: send it again"
    assert rows(pg_dsn, "SELECT count(*), count(DISTINCT seq) FROM events") == [(3, 3)]


def test_the_ack_stops_at_a_gap_and_moves_when_it_is_filled(store: IngestStore) -> None:
    assert store.store(take([envelope([1, 2]), envelope([5, 6])])).acks == {GW: 2}
    assert store.store(take([envelope([4])])).acks == {}
    assert store.store(take([envelope([3])])).acks == {GW: 6}


def test_the_gateways_own_acked_seq_is_the_floor(store: IngestStore) -> None:
    """Below what it was acknowledged before, a gateway may have pruned: never wait for it."""
    assert store.store(take([envelope([101, 102])])).acks == {}
    assert store.store(take([state(acked_seq=100, head_seq=102)])).acks == {GW: 102}


def test_events_go_to_monthly_partitions(store: IngestStore, pg_dsn: str) -> None:
    store.store(take([envelope([1], month="2026-11"), envelope([2], month="2027-01")]))
    found = rows(
        pg_dsn,
        "SELECT tableoid::regclass::text, seq FROM events ORDER BY seq",
    )
    assert found == [("events_y2026m11", 1), ("events_y2027m01", 2)]


def test_rejections_are_kept_with_their_reason_and_change_nothing(
    store: IngestStore, pg_dsn: str
) -> None:
    bad = Delivery(f"rentgate/v1/{GW}/events", b'{"v":1,"gw":"GW-2","events":[]}')
    stored = store.store(take([bad, envelope([1])]))
    assert stored.rejected == 1
    assert rows(pg_dsn, "SELECT topic, reason FROM rejected") == [
        (f"rentgate/v1/{GW}/events", "the payload's gw is not the topic's gateway")
    ]
    assert rows(pg_dsn, "SELECT gw, seq FROM events") == [(GW, 1)]


def test_a_gap_with_no_progress_is_claimed_for_one_replay_then_backs_off(
    store: IngestStore, pg_dsn: str
) -> None:
    store.store(take([envelope([1, 2, 4])]))
    assert store.due_replays(gap_after_s=60) == [], "a gap younger than gap_after waits"
    time.sleep(0.3)
    assert store.due_replays(gap_after_s=0.2) == [(GW, 3)]
    other = IngestStore(pg_dsn)
    try:
        assert other.due_replays(gap_after_s=0.2) == [], "claimed once, by one instance"
    finally:
        other.close()
    time.sleep(0.5)
    assert store.due_replays(gap_after_s=0.2) == [(GW, 3)], "again after its backoff"
    store.store(take([envelope([3])]))
    assert store.due_replays(gap_after_s=0.0) == []
    assert rows(pg_dsn, "SELECT stored_seq, replays FROM gateways") == [(4, 0)]


def test_a_lost_tail_is_replayed_when_the_gateway_says_it_sent_everything(
    store: IngestStore,
) -> None:
    store.store(take([envelope([1, 2]), state(head_seq=5, backlog=0, acked_seq=0)]))
    time.sleep(0.3)
    assert store.due_replays(gap_after_s=0.2) == [(GW, 3)]


def test_a_backlog_still_being_sent_is_not_a_gap(store: IngestStore) -> None:
    store.store(take([envelope([1, 2]), state(head_seq=500, backlog=498, acked_seq=0)]))
    time.sleep(0.3)
    assert store.due_replays(gap_after_s=0.2) == []


def test_presence_online_offline_and_stale_as_the_contract_says(
    store: IngestStore, pg_dsn: str
) -> None:
    store.store(
        take(
            [
                state("GW-ON", state_every_s=60),
                state("GW-OFF", online=False),
                state("GW-QUIET", state_every_s=1),
                state("GW-SILENT", state_every_s=0.5),
            ]
        )
    )
    time.sleep(2.2)  # past twice GW-QUIET's interval, past three times GW-SILENT's
    report = fleet_report(pg_dsn)
    assert (report.counts["online"], report.counts["offline"], report.counts["stale"]) == (1, 2, 1)
    quiet = gateway_status(pg_dsn, "GW-QUIET")
    assert quiet is not None
    assert quiet.status == "stale"


def test_a_late_will_from_the_current_session_counts_an_older_one_does_not(
    store: IngestStore, pg_dsn: str
) -> None:
    store.store(take([state(ts="2026-11-28T10:00:05.000+00:00")]))
    # The Will carries its session's connect time, a moment before the birth: it counts.
    store.store(take([state(online=False, ts="2026-11-28T10:00:04.000+00:00")]))
    assert gateway_status(pg_dsn, GW).status == "offline"  # type: ignore[union-attr]
    store.store(take([state(ts="2026-11-28T11:00:00.000+00:00")]))
    # A Will of a session an hour older, delivered late: the gateway stays online.
    store.store(take([state(online=False, ts="2026-11-28T10:00:04.000+00:00")]))
    assert gateway_status(pg_dsn, GW).status == "online"  # type: ignore[union-attr]


def test_two_instances_storing_the_same_streams_at_once_store_each_event_once(
    pg_dsn: str,
) -> None:
    """Both get overlapping batches of 50 gateways (repeats across instances, in any order):
    nothing twice, no deadlock left unresolved, every gateway's run complete."""
    gateways = [f"GW-{n:03d}" for n in range(50)]
    batches = [[envelope([s, s + 1], gw) for gw in gateways] for s in range(1, 60, 2)]
    failures: list[BaseException] = []

    def write(order: list[list[Delivery]]) -> None:
        store = IngestStore(pg_dsn)
        try:
            for batch in order:
                for _attempt in range(5):
                    try:
                        store.store(take(batch))
                        break
                    except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                        store.rollback()
        except BaseException as exc:  # surfaced below
            failures.append(exc)
        finally:
            store.close()

    threads = [
        threading.Thread(target=write, args=(batches,)),
        threading.Thread(target=write, args=(list(reversed(batches)),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures
    assert rows(pg_dsn, "SELECT count(*) FROM events") == [(50 * 60,)]
    assert rows(pg_dsn, "SELECT DISTINCT stored_seq FROM gateways") == [(60,)]
