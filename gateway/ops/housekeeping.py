"""Keeping the data dir within its budget, for years, with nobody looking after it.

Every few minutes: delivered events carrying full ID numbers go once their
grace period after acknowledgement is over (domain.md: hold a full ID number
only until the platform has the record, plus a short grace); delivered events
older than the history period go; audit entries older than the audit
period go (at least six months, `audit_retention.MIN_AUDIT_DAYS`); when the
file nears its budget, older delivered history goes first, whatever its age;
freed pages are given back to the filesystem a chunk at a time. Undelivered
records are never touched: when they alone reach the budget the gateway raises
a `gateway.alarm` (locally and uplink) and goes on deciding doors. A store
whose writes fail (a really full disk) raises its own alarm.

"Delivered" here means acknowledged by the platform (a signed `cmd/ack`, the
outbox's `acked_seq`), never merely PUBACKed by a broker: brokers acknowledge
and then drop, and a pruned event could not be sent again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from gateway.clock import Clock
from gateway.domain.events import EventType, new_event
from gateway.store import retention
from gateway.store.audit_retention import MIN_AUDIT_DAYS, prune_audit
from gateway.store.db import connect
from gateway.store.errors import StoreError
from gateway.store.writer import Writer

log = logging.getLogger(__name__)

HIGH_WATER = 0.9
"""Share of the budget at which delivered history starts to shrink beyond its period."""
LOW_WATER = 0.8
"""Shrinking stops once the file is back under this share."""
RECLAIM_ROUNDS = 100
"""At most this many chunks of free pages are given back per round (800 MB)."""
T = TypeVar("T")


@dataclass
class HousekeepingStats:
    pruned: int = 0
    audit_pruned: int = 0
    reclaims: int = 0
    last_usage: retention.Usage | None = None


class Housekeeper:
    def __init__(
        self,
        *,
        writer: Writer,
        database: Path,
        clock: Clock,
        budget_bytes: int,
        history: timedelta,
        every_s: float,
        personal_grace: timedelta = timedelta(days=1),
        audit: timedelta = timedelta(days=MIN_AUDIT_DAYS),
    ) -> None:
        self._writer = writer
        self._database = database
        self._clock = clock
        self._budget = budget_bytes
        self._history = history
        self._every_s = every_s
        self._grace = personal_grace
        self._audit = audit
        self.alarms: dict[str, str] = {}
        """Active gateway alarms by kind, with their detail."""
        self.stats = HousekeepingStats()

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except StoreError as exc:
                log.error("housekeeping failed, trying again later: %s", exc)
            await asyncio.sleep(self._every_s)

    async def _op(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.wrap_future(self._writer.submit(operation))

    def _measure(self) -> retention.Usage:
        conn = connect(self._database, readonly=True)
        try:
            return retention.usage(conn, self._database)
        finally:
            conn.close()

    def _reclaim(self) -> None:
        conn = connect(self._database)
        try:
            retention.reclaim(conn)
        finally:
            conn.close()

    async def check(self) -> retention.Usage:
        """One round: history and audit periods, budget, reclaim, alarms; the usage after it."""
        self._storage_failing()
        grace = self._clock.now() - self._grace
        while (pruned := await self._op(lambda c: retention.prune_personal(c, before=grace))) > 0:
            self.stats.pruned += pruned
        cutoff = self._clock.now() - self._history
        while (pruned := await self._op(lambda c: retention.prune_delivered(c, before=cutoff))) > 0:
            self.stats.pruned += pruned
        audit_cutoff = self._clock.now() - self._audit
        while (pruned := await self._op(lambda c: prune_audit(c, before=audit_cutoff))) > 0:
            self.stats.audit_pruned += pruned
        used = await asyncio.to_thread(self._measure)
        while used.used_bytes > HIGH_WATER * self._budget and used.delivered_kept:
            pruned = await self._op(lambda c: retention.prune_delivered(c, before=None))
            self.stats.pruned += pruned
            used = await asyncio.to_thread(self._measure)
            if used.used_bytes <= LOW_WATER * self._budget or not pruned:
                break
        for _ in range(RECLAIM_ROUNDS):  # a chunk at a time: the writer waits only briefly
            if not used.free_bytes:
                break
            await asyncio.to_thread(self._reclaim)
            self.stats.reclaims += 1
            used = await asyncio.to_thread(self._measure)
        self.stats.last_usage = used
        self._set(
            "storage_budget",
            used.undelivered_bytes >= self._budget,
            f"undelivered records alone take {used.undelivered_bytes} bytes of a"
            f" {self._budget}-byte budget; nothing undelivered is dropped, doors keep working",
        )
        return used

    def _storage_failing(self) -> None:
        health = self._writer.health
        self._set(
            "storage_failing",
            health.failing_since is not None,
            f"store writes are failing ({health.last_error}); records wait in memory and are"
            " retried",
        )

    def set_alarm(self, kind: str, active: bool, detail: str) -> None:
        """Raise or clear an alarm some other part of the gateway watches (the clock)."""
        self._set(kind, active, detail)

    def raise_alarm(self, kind: str, detail: str) -> None:
        """An alarm that stays until the gateway restarts (a store that was rebuilt)."""
        self._set(kind, True, detail)

    def _set(self, kind: str, active: bool, detail: str) -> None:
        if active == (kind in self.alarms):
            return
        body: dict[str, Any] = {"alarm": kind, "state": "raised" if active else "cleared"}
        if active:
            self.alarms[kind] = detail
            body["detail"] = detail
            log.error("gateway alarm %s: %s", kind, detail)
        else:
            self.alarms.pop(kind, None)
            body["detail"] = None
            log.warning("gateway alarm %s cleared", kind)
        now = self._clock.now()
        self._writer.append(new_event(EventType.GATEWAY_ALARM, now, self._clock.monotonic(), body))
