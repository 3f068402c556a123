"""What the running gateway reads of itself for `/metrics` and the birth: status, outbox, disk.

Both processes use it: the door core for the birth/state message it publishes
(`essentials`), the web for `/metrics` and `/readyz`. It lives below the API
so the door core need not import the web stack (FastAPI, uvicorn, templates)
to publish its birth. The only disk work, the outbox head/cursor read and the
data dir's free space, runs in threads with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.ops.status import GatewayStatus
from gateway.store.errors import StoreError
from gateway.store.outbox import OutboxStats

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 2.0
"""A reading waits this long for the outbox and the disk, then goes on without them."""
WARN_EVERY_S = 60.0
MIB = 1024 * 1024
GRANTED = "granted"
"""The one decision reason that opens a door (`gateway.doors.access.DecisionReason`)."""


class Monitored(Protocol):
    """What the endpoints read from a running gateway: its status, its outbox, its disk."""

    @property
    def data_dir(self) -> Path: ...

    def status(self) -> GatewayStatus:
        """Now; `running` is false until the gateway is ready (and once it stops)."""

    async def fresh_status(self) -> GatewayStatus:
        """`status()`, asked of the door core now (the web process caches it in between)."""

    async def outbox_stats(self, delivered_at_least: int = 0) -> OutboxStats: ...


@dataclass(frozen=True)
class StorageReading:
    """One scrape's disk reads; None where the read failed or took too long."""

    outbox: OutboxStats | None
    disk_free_bytes: int | None
    disk_total_bytes: int | None


@dataclass(frozen=True)
class Essentials:
    """The few numbers of `/metrics` the MQTT birth message carries for the platform."""

    decisions: int
    decisions_denied: int
    rejected_inputs: int
    readers: int
    readers_online: int
    store_failing: bool
    disk_free_mb: int | None


class ReadWarnings:
    """At most one log line a minute per kind of read failure, however often we are scraped."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def warn(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._last[kind] = now
            log.warning(message, *args)


async def read_storage(
    gateway: Monitored, delivered_seq: int, warnings: ReadWarnings | None = None
) -> StorageReading:
    """The outbox's head, cursor and oldest unsent event (counting what the uplink has had
    acknowledged through `delivered_seq`), and the data dir's free space."""
    warnings = warnings or ReadWarnings()
    outbox: OutboxStats | None = None
    try:
        outbox = await asyncio.wait_for(gateway.outbox_stats(delivered_seq), READ_TIMEOUT_S)
    except (StoreError, TimeoutError) as exc:
        warnings.warn("outbox", "metrics: outbox not read: %s", str(exc) or "timed out")
    except RuntimeError as exc:  # its reader thread was shut down: the gateway is stopping
        warnings.warn("outbox", "metrics: outbox not read: %s", exc)
    free = total = None
    data_dir = gateway.data_dir
    try:
        usage = await asyncio.wait_for(
            asyncio.to_thread(shutil.disk_usage, data_dir), READ_TIMEOUT_S
        )
        free, total = usage.free, usage.total
    except (OSError, TimeoutError) as exc:
        warnings.warn(
            "disk", "metrics: free space of %s not read: %s", data_dir, str(exc) or "timed out"
        )
    return StorageReading(outbox, free, total)


async def essentials(gateway: Monitored) -> Essentials:
    """Decisions, readers, store and disk in brief, for the birth/state message."""
    status = await gateway.fresh_status()
    storage = await read_storage(gateway, status.link.delivered_seq)
    free = storage.disk_free_bytes
    return Essentials(
        decisions=sum(status.decisions.values()),
        decisions_denied=sum(n for reason, n in status.decisions.items() if reason != GRANTED),
        rejected_inputs=sum(status.rejected_inputs.values()),
        readers=len(status.readers),
        readers_online=status.readers_online,
        store_failing=status.store.failing,
        disk_free_mb=free // MIB if free is not None else None,
    )
