"""The outbox's read side for the uplink and the web: a connection and a thread of its own,
so reading a backlog never holds up the event loop or the store writer."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.store import outbox
from gateway.store.db import connect
from gateway.store.outbox import OutboxStats, StoredEvent


class OutboxSource:
    """Read side of the outbox on a connection and thread of its own."""

    def __init__(self, path: Path) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-read")
        self._path = path
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path)
            self._local.conn = conn
        return conn

    async def read_after(self, seq: int, limit: int) -> list[StoredEvent]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, lambda: outbox.read_after(self._conn(), seq, limit)
        )

    async def stats(self, delivered_at_least: int = 0) -> OutboxStats:
        """Outbox stats; `delivered_at_least` counts PUBACKs whose cursor write is queued."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, lambda: outbox.stats(self._conn(), delivered_at_least)
        )

    def close(self) -> None:
        def close_conn() -> None:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()

        self._pool.submit(close_conn).result()
        self._pool.shutdown()
