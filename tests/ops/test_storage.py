"""The data dir within its budget: history pruned, undelivered records never, alarms up and down;
and a really full filesystem (a size-limited tmpfs) that loses nothing and keeps deciding doors."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.events import EventType, new_event
from gateway.store import outbox, retention
from gateway.store.db import connect, transaction
from gateway.store.migrations import migrate
from gateway.sync.local_broker import LocalBroker
from tests.support.contract import assert_valid, payload_ref, validator
from tests.support.gateway import (
    InProcessGateway,
    PersistentSubscriber,
    enrol_cards,
    load,
    stats_of,
    wait_until,
    write_config,
    write_taps,
)
from tests.support.platform import AckingPlatform, key_file

GW = "GW-STORAGE"


def _event(ts: datetime, n: int) -> Any:
    return new_event(
        EventType.DEVICE_STATUS,
        ts,
        1.0,
        {"device": f"d{n}", "door": "x", "online": True, "error": None},
    )


def test_only_delivered_history_is_pruned_and_space_comes_back(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite"
    conn = connect(database)
    try:
        assert retention.ensure_incremental_vacuum(conn)
        assert not retention.ensure_incremental_vacuum(conn)
        migrate(conn)
        old = datetime.now().astimezone() - timedelta(days=40)
        with transaction(conn):
            outbox.append_rows(conn, [_event(old, n) for n in range(3000)])
            outbox.append_rows(conn, [_event(datetime.now().astimezone(), n) for n in range(1000)])
            outbox.mark_delivered(conn, 4000)  # the broker PUBACKed everything: not enough
        with transaction(conn):
            assert retention.prune_delivered(conn, before=None, limit=10_000) == 0
            outbox.mark_acked(conn, 3500)  # the platform acknowledged all old, half the new
        before = retention.usage(conn, database)
        assert (before.undelivered, before.delivered_kept) == (500, 3500)
        cutoff = datetime.now().astimezone() - timedelta(days=30)
        with transaction(conn):
            assert retention.prune_delivered(conn, before=cutoff, limit=10_000) == 3000
        with transaction(conn):
            assert retention.prune_delivered(conn, before=None, limit=10_000) == 500
            assert retention.prune_delivered(conn, before=None, limit=10_000) == 0
        after = retention.usage(conn, database)
        assert (after.undelivered, after.delivered_kept) == (500, 0)
        assert after.free_bytes > 0
        retention.reclaim(conn, 100_000)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        reclaimed = retention.usage(conn, database)
        assert reclaimed.free_bytes == 0
        assert reclaimed.file_bytes < before.file_bytes
        assert outbox.head_seq(conn) == 4000  # seq is never reused after pruning
    finally:
        conn.close()


def test_undelivered_records_over_budget_raise_an_alarm_and_are_all_delivered(
    tmp_path: Path, persistent_broker: LocalBroker
) -> None:
    # The platform acknowledges what it stores: only then are records delivered, and
    # only delivered history yields to the budget.
    key, public = key_file(tmp_path / "platform")
    subscriber = AckingPlatform(persistent_broker.port, GW, key, persistent=True)
    persistent_broker.stop()
    path = write_config(
        tmp_path, persistent_broker.url, gateway_id=GW, extra=f'[platform]\nkeys = ["{public}"]\n'
    )
    with path.open("a", encoding="utf-8") as config:
        config.write("\n[storage]\nbudget_mb = 0.02\ncheck_every_s = 0.2\n")
    cfg = load(path)
    enrol_cards(cfg, ["0A000001"])
    with InProcessGateway(cfg) as running:
        gateway = running.gateway
        for burst in range(4):
            write_taps(tmp_path / "front.reader", [f"0B{burst:02X}{n:04X}" for n in range(40)])
        write_taps(tmp_path / "front.reader", ["0A000001"])
        wait_until(lambda: "storage_budget" in gateway.parts.housekeeper.alarms, 20, "budget alarm")
        assert gateway.doors.counters.decisions["granted"] == 1  # doors kept deciding
        persistent_broker.start()
        try:
            wait_until(
                lambda: "storage_budget" not in gateway.parts.housekeeper.alarms, 30, "cleared"
            )
            head = stats_of(cfg.gateway.database).head_seq
            wait_until(lambda: subscriber.unique_seqs() >= set(range(1, head + 1)), 30, "all")
            # The alarm's "cleared" event is recorded just after the alarm clears: it may
            # be past the head read above.
            wait_until(
                lambda: (
                    ("gateway.alarm", "cleared")
                    in {(e["type"], e.get("state")) for e in subscriber.events()}
                ),
                30,
                "the cleared alarm at the platform",
            )
        finally:
            subscriber.close()
    alarms = [e for e in subscriber.events() if e["type"] == "gateway.alarm"]
    assert [(a["alarm"], a["state"]) for a in alarms] == [
        ("storage_budget", "raised"),
        ("storage_budget", "cleared"),
    ]
    assert "nothing undelivered is dropped" in alarms[0]["detail"]
    check = validator(payload_ref("events"))
    for envelope in subscriber.envelopes():
        assert_valid(check, envelope, "an envelope with gateway.alarm")
    decisions = subscriber.decisions()
    assert len({d["seq"] for d in decisions}) == 161


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_disk_loses_no_record_and_doors_keep_deciding(
    tmp_path: Path, small_disk: Path, persistent_broker: LocalBroker
) -> None:
    subscriber = PersistentSubscriber(persistent_broker.port, f"rentgate/v1/{GW}/events")
    persistent_broker.stop()
    path = write_config(tmp_path, persistent_broker.url, gateway_id=GW)
    text = path.read_text().replace(str(tmp_path / "data"), str(small_disk / "data"))
    path.write_text(text + "\n[storage]\nbudget_mb = 100\ncheck_every_s = 0.2\n")
    cfg = load(path)
    enrol_cards(cfg, ["0A000001"])
    filler = small_disk / "filler"
    with InProcessGateway(cfg) as running:
        gateway = running.gateway
        write_taps(tmp_path / "front.reader", ["0A000001"])
        wait_until(lambda: gateway.writer.health.events_recorded >= 2, 10, "first records")
        with filler.open("wb") as handle:  # fill the disk to the last block
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass
        taps = [f"0C{n:06X}" for n in range(50)] + ["0A000001"]
        write_taps(tmp_path / "front.reader", taps)
        wait_until(lambda: gateway.writer.health.failing_since is not None, 20, "writes fail")
        wait_until(
            lambda: "storage_failing" in gateway.parts.housekeeper.alarms, 20, "failing alarm"
        )
        wait_until(lambda: gateway.doors.counters.decisions["granted"] == 2, 20, "door decided")
        assert (
            gateway.parts.devices.locks["front"].commands[-1].seconds > 0
        )  # and opened, disk full or not
        filler.unlink()  # the installer frees space
        persistent_broker.start()
        try:
            wait_until(lambda: gateway.writer.health.failing_since is None, 30, "writes recover")
            wait_until(lambda: gateway.writer.pending() == 0, 30, "everything recorded")
            head = stats_of(cfg.gateway.database).head_seq
            try:
                wait_until(lambda: subscriber.unique_seqs() >= set(range(1, head + 1)), 30, "all")
            except AssertionError:
                missing = sorted(set(range(1, head + 1)) - subscriber.unique_seqs())
                stats = stats_of(cfg.gateway.database)
                raise AssertionError(
                    f"missing {missing[:20]} of {head}; {stats}; {gateway.status().link}"
                ) from None
        finally:
            subscriber.close()
    decisions = subscriber.decisions()
    assert len({d["seq"] for d in decisions}) == 52  # every tap accepted is there
    kinds = [(e["alarm"], e["state"]) for e in subscriber.events() if e["type"] == "gateway.alarm"]
    assert ("storage_failing", "raised") in kinds
    assert json.dumps(kinds).count("storage_failing") >= 1


def test_full_id_numbers_leave_soon_after_the_platform_has_them(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite"
    conn = connect(database)
    try:
        migrate(conn)
        two_days_ago = datetime.now().astimezone() - timedelta(days=2)
        captured = new_event(
            EventType.REGISTRATION_CAPTURED, two_days_ago, 1.0, {"id_number": "11010519491231002X"}
        )
        with transaction(conn):
            outbox.append_rows(conn, [captured, _event(two_days_ago, 1), captured, captured])
            outbox.mark_delivered(conn, 4)  # PUBACKed, all of them
        with transaction(conn):
            assert retention.prune_personal(conn, before=datetime.now().astimezone()) == 0
            outbox.mark_acked(conn, 3)  # the last capture is not acknowledged yet
        grace = datetime.now().astimezone() - timedelta(days=1)
        with transaction(conn):
            assert retention.prune_personal(conn, before=grace) == 2
        kept = [row[0] for row in conn.execute("SELECT type FROM outbox ORDER BY seq")]
        assert kept == ["device.status", "registration.captured"]  # history; the unacknowledged
    finally:
        conn.close()
