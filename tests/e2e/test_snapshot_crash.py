"""SIGKILL while a 100,000-entry allowlist snapshot is being applied: the old one stays in force."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.domain.command_bodies import snapshot_pages
from gateway.store.db import connect
from gateway.store.errors import StoreError
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    GatewayProcess,
    Subscriber,
    allowlist_version,
    wait_until,
    write_config,
    write_taps,
)
from tests.support.platform import Platform, key_file, person_entry

GW = "GW-SNAPKILL"
BIG = 100_000


def _count(database: Path, sql: str) -> int:
    try:
        conn = connect(database, readonly=True)
    except StoreError:  # not created yet
        return 0
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_during_a_large_snapshot_leaves_the_previous_version_in_force(
    tmp_path: Path, broker: LocalBroker
) -> None:
    key, public = key_file(tmp_path / "platform")
    config = write_config(
        tmp_path,
        f"mqtt://127.0.0.1:{broker.port}",
        gateway_id=GW,
        extra=f'[platform]\nkeys = ["{public}"]\n',
    )
    database = tmp_path / "data" / "rentgate.db"
    subscriber = Subscriber(broker.port, f"rentgate/v1/{GW}/#", client_id="snapkill-test")
    platform = Platform(broker, GW, key, SystemClock())
    gateway = GatewayProcess(config, tmp_path / "gateway.log")
    gateway.start()
    try:
        wait_until(lambda: any(s["online"] for s in subscriber.states()), 20, "gateway online")
        assert platform.send_snapshot(1, [person_entry(i, [f"A{i:05X}"]) for i in range(1000)])[
            "ok"
        ]

        big = [person_entry(i, [f"B{i:05X}"]) for i in range(BIG)]
        pages = [platform.signed("allowlist.snapshot", body) for body in snapshot_pages(2, big)]
        topic = f"rentgate/v1/{GW}/cmd/allowlist.snapshot"

        def send_all() -> None:
            for page in pages:
                platform.client.publish(topic, page)

        sender = threading.Thread(target=send_all)
        sender.start()
        wait_until(
            lambda: _count(database, "SELECT count(*) FROM staged_pages") >= len(pages) // 3,
            300,
            "a third of the pages staged",
        )
        gateway.kill()
        sender.join(120)
        staged = _count(database, "SELECT count(*) FROM staged_pages")
        assert 0 < staged < len(pages), "killed mid-apply"
        assert allowlist_version(database) == 1

        before = len(subscriber.decisions())
        gateway.start()
        write_taps(tmp_path / "front.reader", ["A00001", "B00001", "A003E7"])
        wait_until(lambda: len(subscriber.decisions()) >= before + 3, 30, "decisions")
        after = subscriber.decisions()[before:]
        assert [(d["result"], d["reason"]) for d in after] == [
            ("allow", "granted"),
            ("deny", "unknown"),
            ("allow", "granted"),
        ]
        assert allowlist_version(database) == 1
        # The staging survived the kill: re-sending every page resumes, the pages already
        # staged are recognised, and the last one switches the new version in.
        replies = [platform.send_raw("allowlist.snapshot", page, timeout=120) for page in pages]
        assert all(reply["ok"] for reply in replies)
        assert replies[-1]["allowlist_version"] == 2
        assert allowlist_version(database) == 2
        assert _count(database, "SELECT count(*) FROM staged_pages") == 0
        assert gateway.terminate() == 0
    finally:
        if gateway.process is not None and gateway.process.poll() is None:
            gateway.kill()
        platform.close()
        subscriber.close()
