"""The audit log is kept for its period (six months at least) and no longer.

A real store, the real writer thread and the housekeeper's real round, on a
manual clock: entries written over a year are pruned at `audit_days`, whatever
offset they were stamped with, and the log stays append-only for everyone else.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.config import ConfigError, parse_config
from gateway.ops.housekeeping import Housekeeper
from gateway.store import users
from gateway.store.db import connect, transaction
from gateway.store.migrations import migrate
from gateway.store.writer import Writer

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone(timedelta(hours=8)))
MINIMAL = '[gateway]\nid = "GW-1"\ndata_dir = "/tmp/x"\n[mqtt]\nurl = "mqtt://127.0.0.1"\n'


def _write_entries(database: Path, ages_days: list[float]) -> None:
    with closing(connect(database)) as conn, transaction(conn):
        for n, age in enumerate(ages_days):
            zone = timezone(timedelta(hours=(-14, 0, 8, 14)[n % 4]))  # offsets must not matter
            at = (NOW - timedelta(days=age)).astimezone(zone)
            users.append_audit(conn, at=at.isoformat(), user_id=None, actor="li", action=f"a{age}")


def test_housekeeping_keeps_the_audit_period_and_the_log_stays_append_only(
    tmp_path: Path,
) -> None:
    database = tmp_path / "db.sqlite"
    with closing(connect(database)) as conn:
        migrate(conn)
    ages = [400, 365, 200, 184, 183.01, 182.99, 100, 1, 0]
    _write_entries(database, ages)
    writer = Writer(database)
    writer.start()
    try:
        keeper = Housekeeper(
            writer=writer,
            database=database,
            clock=ManualClock(NOW),
            budget_bytes=1 << 30,
            history=timedelta(days=30),
            every_s=300,
            audit=timedelta(days=183),
        )
        asyncio.run(keeper.check())
    finally:
        writer.close()
    with closing(connect(database)) as conn:
        kept = [entry.action for entry in users.audit_entries(conn, limit=100)]
        assert kept == ["a182.99", "a100", "a1", "a0"]
        assert keeper.stats.audit_pruned == 5
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit_log")


def test_the_audit_period_is_a_config_key_of_at_least_six_months() -> None:
    assert parse_config(MINIMAL, environ={}).storage.audit_days == 183
    longer = parse_config(MINIMAL + "[storage]\naudit_days = 365\n", environ={})
    assert longer.storage.audit_days == 365
    with pytest.raises(ConfigError) as refused:
        parse_config(MINIMAL + "[storage]\naudit_days = 30\n", environ={})
    assert any(problem.startswith("storage.audit_days") for problem in refused.value.problems)
