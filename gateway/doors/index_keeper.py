"""Keeping the access index in step with the registry, wherever the change was made.

Every registry change is logged with the person it concerns (`registry_changes`),
by this process or another one (`rentgate enroll`). The keeper polls the log,
reads the changed people's rows and builds their entries in a worker thread, and
applies them on the event loop between two decisions. When it has fallen behind
the log, or a change is too large to apply in one go, it builds a whole new index
off the loop and swaps it in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from gateway.doors.access import AccessIndex, DoorPolicy, Entry, entries_for
from gateway.store import registry
from gateway.store.db import connect

log = logging.getLogger(__name__)

POLL_S = 1.0
INCREMENTAL_LIMIT = 5_000
"""Changed credentials applied in place; more than this and the index is rebuilt and swapped."""


def load_index(database: Path, doors: Mapping[str, DoorPolicy]) -> tuple[int, AccessIndex]:
    """The registry version and a whole index built from one consistent read."""
    conn = connect(database, readonly=True)
    try:
        rows = registry.snapshot(conn)
    finally:
        conn.close()
    return rows.version, AccessIndex.build(rows.credentials, rows.tenancies, doors)


def read_changes(
    database: Path, version: int
) -> tuple[int, dict[bytes, Entry], list[bytes]] | None:
    """Entries for the people changed since `version`, or None to rebuild from scratch."""
    conn = connect(database, readonly=True)
    try:
        changes = registry.changes_since(conn, version)
    finally:
        conn.close()
    if changes is None or len(changes.credentials) > INCREMENTAL_LIMIT:
        return None
    return changes.version, entries_for(changes.credentials, changes.tenancies), changes.removed


class IndexKeeper:
    """Owns the access index's registry version and follows the change log."""

    def __init__(self, database: Path, doors: Mapping[str, DoorPolicy]) -> None:
        self._database = database
        self._doors = doors
        self.version, self.index = load_index(database, doors)

    async def follow(self, swapped: Callable[[AccessIndex], None]) -> None:
        """Poll until cancelled; `swapped` receives each wholly rebuilt index."""
        while True:
            await asyncio.sleep(POLL_S)
            update = await asyncio.to_thread(read_changes, self._database, self.version)
            if update is None:
                self.version, self.index = await asyncio.to_thread(
                    load_index, self._database, self._doors
                )
                swapped(self.index)
                log.info("access index rebuilt: %d credential(s)", len(self.index))
            elif update[0] != self.version:
                self.version, entries, removed = update
                self.index.apply(entries, removed)
                log.info("access index updated: %d credential(s) changed", len(entries))
