"""How the API's services reach the store without holding up the doors.

Reads use a read-only connection of their own in a worker thread, so a page
never queues behind the writer's group commit; writes go through the
gateway's single `Writer`. Store failures stay `StoreError`: each service
turns them into its own refusal at one place.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gateway.store.db import connect
from gateway.store.errors import translated
from gateway.store.writer import Writer

T = TypeVar("T")


class StoreAccess:
    """One read-only connection (used by one thread at a time) and the shared writer."""

    def __init__(self, database: Path, writer: Writer) -> None:
        self._database = database
        self.writer = writer
        self._lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None

    def read_now(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run `query` on the read connection in this thread."""
        with self._lock, translated():
            if self._reader is None:
                self._reader = connect(self._database, readonly=True)
            return query(self._reader)

    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run `query` in a worker thread; StoreError if the store cannot answer."""
        return await asyncio.to_thread(self.read_now, query)

    async def write(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run `operation` in the writer's next transaction; committed when this returns."""
        return await asyncio.wrap_future(self.writer.submit(operation))

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
