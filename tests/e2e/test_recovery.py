"""A damaged store is kept aside and rebuilt at start; backups are taken online and restored."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.domain.events import EventType, new_event
from gateway.store import outbox
from gateway.store.db import connect, transaction
from gateway.store.maintenance import SEQ_GAP, quick_check
from gateway.store.migrations import migrate
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    access_decisions,
    enrol_cards,
    load,
    stats_of,
    wait_until,
    write_config,
    write_taps,
)

GW = "GW-RECOVER"


def _fill(database: Path, events: int) -> None:
    conn = connect(database)
    try:
        migrate(conn)
        now = datetime.now().astimezone()
        with transaction(conn):
            outbox.append_rows(
                conn,
                [
                    new_event(
                        EventType.DEVICE_STATUS,
                        now,
                        1.0,
                        {"device": "d", "door": "front", "online": True, "error": "x" * 200},
                    )
                    for _ in range(events)
                ],
            )
            outbox.mark_delivered(conn, events // 2)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _damage(database: Path) -> None:
    """Overwrite a run of pages in the middle of the file, as a failing SD card would."""
    size = database.stat().st_size
    with database.open("r+b") as handle:
        handle.seek((size // 2) // 4096 * 4096)
        handle.write(os.urandom(4096 * 8))


def test_a_damaged_store_is_kept_aside_rebuilt_and_announced(
    tmp_path: Path, broker: LocalBroker
) -> None:
    path = write_config(tmp_path, broker.url, gateway_id=GW)
    config = load(path)
    enrol_cards(config, ["0A000001"])
    database = config.gateway.database
    _fill(database, 5000)
    _damage(database)
    assert quick_check(database) != []
    subscriber = Subscriber(broker.port, f"rentgate/v1/{GW}/events", client_id="recover")
    try:
        with InProcessGateway(config) as running:
            gateway = running.gateway
            assert gateway.parts.recovery is not None
            assert gateway.parts.recovery.damaged.exists()
            assert gateway.parts.recovery.copied["outbox"] > 1000  # most of it was readable
            assert gateway.parts.recovery.copied["credentials"] == 1
            write_taps(tmp_path / "front.reader", ["0A000001"])
            wait_until(
                lambda: bool(subscriber.decisions()),
                20,
                "a decision after recovery",
            )
            assert "store_recovered" in gateway.status().alarms
        events = subscriber.events()
        alarm = next(e for e in events if e["type"] == "gateway.alarm")
        assert (alarm["alarm"], alarm["state"]) == ("store_recovered", "raised")
        assert "kept as" in alarm["detail"]
        decision = access_decisions(events)[0]
        assert decision["result"] == "allow"
        assert decision["seq"] > 5000 + SEQ_GAP - 1_000  # never a seq the platform had seen
    finally:
        subscriber.close()
    assert quick_check(database) == []


def test_backup_while_running_and_restore_when_stopped(
    tmp_path: Path, broker: LocalBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, broker.url, gateway_id=GW + "-B")
    config = load(path)
    enrol_cards(config, ["0A000002"])
    backup = tmp_path / "backup.sqlite"
    with InProcessGateway(config) as running:
        write_taps(tmp_path / "front.reader", ["0A000002", "0BADCAFE"])
        wait_until(lambda: running.gateway.writer.health.events_recorded >= 3, 10, "recorded")
        running.gateway.write_status(running=True)
        assert main(["backup", "--config", str(path), "--out", str(backup)]) == 0
        assert "checked" in capsys.readouterr().out
        assert main(["restore", "--config", str(path), str(backup)]) == 1
        assert "stop it first" in capsys.readouterr().err
        head_at_backup = stats_of(backup).head_seq
        write_taps(tmp_path / "front.reader", ["0A000002"])
        wait_until(lambda: running.gateway.writer.health.head_seq > head_at_backup, 10, "one more")
    assert main(["backup", "--config", str(path), "--out", str(backup)]) == 1
    assert "not overwriting" in capsys.readouterr().err
    assert main(["restore", "--config", str(path), str(backup)]) == 0
    out = capsys.readouterr().out
    assert "kept as" in out
    assert stats_of(config.gateway.database).head_seq == head_at_backup
    assert quick_check(config.gateway.database) == []
