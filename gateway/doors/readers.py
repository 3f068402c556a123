"""Readers kept running, and what each last said about itself: the one source of reader health.

Every reader reports to the door controller: reads, rejects, and whether it is
online. A line or SAM reader is online once its device is open; an OSDP reader
reports its own link state (its serial line can be open while the reader behind
it is silent or has the wrong key). Either way the report passes through
`ReadSink.device_status`, and the controller keeps the latest in a
`ReaderHealthBoard`, which status, metrics and the web UI read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gateway.devices.protocols import Reader, ReaderError, ReadSink

log = logging.getLogger(__name__)

RETRY_MAX_S = 30.0
"""Longest pause between two attempts to reopen a failed reader; a reader that ran
this long before failing starts its backoff again from the shortest pause."""


@dataclass(frozen=True, slots=True)
class ReaderHealth:
    online: bool = False
    error: str | None = None


class ReaderHealthBoard:
    """The last state each reader reported (offline until it says otherwise)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._health = {name: ReaderHealth() for name in names}

    def report(self, name: str, online: bool, error: str | None) -> None:
        self._health[name] = ReaderHealth(online, None if online else error)

    def get(self, name: str) -> ReaderHealth:
        return self._health.get(name, ReaderHealth())

    def values(self) -> Iterator[ReaderHealth]:
        return iter(self._health.values())


class ReaderSupervisor:
    """Keeps one reader running: reopens it with exponential backoff, reports on- and offline."""

    def __init__(self, reader: Reader, sink: ReadSink, health: ReaderHealthBoard) -> None:
        self._reader = reader
        self._sink = sink
        self._health = health

    async def run(self) -> None:
        """Run the reader until cancelled; a `ReaderError` is reported and retried."""
        reader, attempt = self._reader, 0
        while True:
            started = time.monotonic()
            try:
                await reader.run(self._sink, self._opened)
                error = "reader stopped"
            except ReaderError as exc:
                error = str(exc)
            if time.monotonic() - started > RETRY_MAX_S:
                attempt = 0
            before = self._health.get(reader.name)
            if before.online or before.error != error:
                log.warning("reader %s offline: %s", reader.name, error)
            self._state(online=False, error=error)
            await asyncio.sleep(min(RETRY_MAX_S, 0.5 * 2**attempt))
            attempt = min(attempt + 1, 10)

    def _opened(self) -> None:
        self._state(online=True, error=None)

    def _state(self, *, online: bool, error: str | None) -> None:
        reader = self._reader
        if self._health.get(reader.name) == ReaderHealth(online, error):
            return
        self._sink.device_status(reader.name, reader.door, online, error)
