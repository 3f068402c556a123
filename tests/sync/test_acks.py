"""The platform's ack cursor and the resend clock, on a real store and writer (no broker)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from gateway.domain.events import EventType, new_event
from gateway.store import outbox
from gateway.store.db import connect
from gateway.store.migrations import migrate
from gateway.store.writer import Writer
from gateway.sync.acks import MAX_BACKOFF, PlatformAcks


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _writer(tmp_path: Path, events: int) -> Writer:
    database = tmp_path / "db.sqlite"
    conn = connect(database)
    migrate(conn)
    conn.close()
    writer = Writer(database, window_s=0)
    writer.start()
    for n in range(events):
        body = {"device": f"d{n}", "door": "x", "online": True, "error": None}
        writer.append(new_event(EventType.DEVICE_STATUS, datetime.now().astimezone(), 1.0, body))
    writer.flush()
    return writer


def test_acks_move_the_cursor_forward_only_and_refuse_beyond_the_head(tmp_path: Path) -> None:
    writer = _writer(tmp_path, 5)
    advanced: list[int] = []

    async def scenario() -> PlatformAcks:
        acks = PlatformAcks(writer, resend_after_s=120, on_advance=lambda: advanced.append(1))
        for through in (3, 2, 3, 9, 5):
            acks.offer(through)
            await asyncio.wrap_future(writer.submit(lambda _c: None))  # after the ack's op
            await asyncio.sleep(0)
        return acks

    try:
        acks = asyncio.run(scenario())
        stats = acks.stats
        assert (stats.acked_seq, stats.applied, stats.stale) == (5, 2, 2)
        assert dict(stats.refused) == {"above_head": 1}
        assert len(advanced) == 2
        conn = connect(tmp_path / "db.sqlite", readonly=True)
        try:
            assert outbox.acked_seq(conn) == 5
        finally:
            conn.close()
    finally:
        writer.close()


def test_the_resend_wait_starts_at_puback_doubles_without_acks_and_resets_on_one(
    tmp_path: Path,
) -> None:
    writer = _writer(tmp_path, 5)
    ticks = Ticks()

    async def scenario() -> None:
        acks = PlatformAcks(writer, resend_after_s=10, monotonic=ticks)
        assert acks.resend_in(0) is None  # nothing PUBACKed waits
        acks.published(4)
        assert acks.resend_in(4) == 10
        ticks.now += 10
        assert acks.resend_in(4) == 0
        waits = []
        for _ in range(5):
            assert acks.resending() == 0  # back to the platform's cursor
            waits.append(acks.resend_in(4))
        assert waits == [20, 40, 80, 10 * MAX_BACKOFF, 10 * MAX_BACKOFF]
        acks.offer(2)
        await asyncio.wrap_future(writer.submit(lambda _c: None))
        await asyncio.sleep(0)
        assert acks.acked_seq == 2
        assert acks.resend_in(4) == 10, "an ack is progress: the wait starts again, unstretched"
        acks.published(2)
        assert acks.resend_in(2) is None
        assert acks.stats.resends == 5

    try:
        asyncio.run(scenario())
    finally:
        writer.close()
