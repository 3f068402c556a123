"""Upgrading in place: a store written by the previous release (schema 3, the first landed
release), full of undelivered events, is migrated at start and every event is delivered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.store import outbox
from gateway.store.db import connect, transaction
from gateway.store.errors import SchemaTooNewError
from gateway.store.migrations import LATEST_VERSION, migrate, schema_version
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    load,
    stats_of,
    wait_until,
    write_config,
)

GW = "GW-UPGRADE"
PREVIOUS_RELEASE_SCHEMA = 3
BACKLOG = 20_000


def _previous_release_store(database: Path) -> None:
    """What release 1 left behind: its schema, a delivered prefix, a large undelivered backlog
    (rows written with that release's SQL)."""
    conn = connect(database)
    try:
        migrate(conn, target=PREVIOUS_RELEASE_SCHEMA)
        with transaction(conn):
            conn.executemany(
                "INSERT INTO outbox (seq, id, type, ts, payload) VALUES (?, ?, ?, ?, ?)",
                (
                    (
                        seq,
                        f"0192f1c0-0000-7000-8000-{seq:012d}",
                        "device.status",
                        "2026-11-27T09:00:00.000+08:00",
                        json.dumps(
                            {
                                "id": f"0192f1c0-0000-7000-8000-{seq:012d}",
                                "type": "device.status",
                                "ts": "2026-11-27T09:00:00.000+08:00",
                                "mono": 1.0,
                                "device": "front-line-0",
                                "door": "front",
                                "online": seq % 2 == 0,
                                "error": None,
                            },
                            separators=(",", ":"),
                        ),
                    )
                    for seq in range(1, BACKLOG + 1)
                ),
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'head_seq'", (BACKLOG,))
            conn.execute("UPDATE meta SET value = 100 WHERE key = 'delivered_seq'")
    finally:
        conn.close()


def test_the_previous_release_s_backlog_is_upgraded_and_delivered(
    tmp_path: Path, broker: LocalBroker
) -> None:
    config = load(write_config(tmp_path, broker.url, gateway_id=GW))
    config.gateway.data_dir.mkdir(parents=True)
    _previous_release_store(config.gateway.database)
    subscriber = Subscriber(broker.port, f"rentgate/v1/{GW}/events", client_id="upgrade")
    try:
        with InProcessGateway(config) as running:
            conn = connect(config.gateway.database, readonly=True)
            try:
                assert schema_version(conn) == LATEST_VERSION
            finally:
                conn.close()
            wait_until(
                lambda: (
                    stats_of(config.gateway.database).delivered_seq
                    >= running.gateway.writer.health.head_seq
                ),
                60,
                "the whole backlog delivered",
            )
        expected = set(range(101, BACKLOG + 1))
        wait_until(lambda: subscriber.unique_seqs() >= expected, 30, "the backlog at the platform")
    finally:
        subscriber.close()
    conn = connect(config.gateway.database, readonly=True)
    try:
        assert outbox.head_seq(conn) > BACKLOG  # new events continued the same seq
    finally:
        conn.close()


def test_a_store_from_a_newer_release_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "db.sqlite"
    conn = connect(database)
    try:
        migrate(conn)
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    finally:
        conn.close()
    config = load(write_config(tmp_path, "mqtt://127.0.0.1:1", gateway_id=GW))
    config.gateway.data_dir.mkdir(parents=True)
    database.rename(config.gateway.database)
    with pytest.raises(SchemaTooNewError, match="newer release; refusing to start"):
        InProcessGateway(config)
    path = tmp_path / "gateway.toml"
    assert main(["run", "--config", str(path)]) == 1
    assert "written by a newer release; refusing to start" in capsys.readouterr().err
