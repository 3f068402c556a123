"""The event history and the live feed, as each caller may see them.

History pages come from the outbox (it keeps delivered events for
`storage.history_days`) through `gateway.store.event_history`. The live feed reads
what each commit added, once, and hands it to every subscriber whose scope
admits it; a subscriber that falls behind is closed and reconnects with
`Last-Event-ID`, so a slow browser never holds the feed up or grows memory.

A landlord's scope is their tenants (people with a tenancy in one of their
units) plus person-less events at their doors; it is recomputed whenever the
registry changes, so a tenant enrolled a moment ago shows up live. A tenant's
events are seen only during the landlord's own tenancy of them and at the doors
that serve the landlord's units (`EventScope`): a person who is also another
landlord's tenant, or a former tenant, shows nothing of their life elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gateway.api import models
from gateway.api.auth import Principal
from gateway.api.directory import DirectoryError, DirectoryProblem
from gateway.api.monitor import Monitor
from gateway.api.storeaccess import StoreAccess
from gateway.store import event_history, outbox, registry
from gateway.store.errors import StoreError

log = logging.getLogger(__name__)

PERSONAL_FIELDS = frozenset(
    {"id_number", "name", "phone", "workplace", "id_hash", "household_address", "sealed"}
)
"""Never shown by the API (a captured record's event carries them, sealed, for the platform)."""
ENVELOPE_FIELDS = frozenset({"id", "type", "ts", "mono"})
"""Already top-level fields of `EventOut` (or of no use to a browser)."""
QUEUE_EVENTS = 1000
BATCH = 200


def event_out(row: event_history.EventRow) -> models.EventOut:
    data: dict[str, Any] = json.loads(row.payload)
    for key in (PERSONAL_FIELDS | ENVELOPE_FIELDS) & data.keys():
        del data[key]
    return models.EventOut(
        seq=row.seq,
        id=row.id,
        type=row.type,
        ts=row.ts,
        door=row.door,
        person=row.person,
        data=data,
    )


def admits(scope: event_history.EventScope | None, row: event_history.EventRow) -> bool:
    return scope is None or scope.admits(row.person, row.door, row.ts)


class History:
    """Event pages and the scope they are cut to."""

    def __init__(self, store: StoreAccess, monitor: Monitor) -> None:
        self._store = store
        self._monitor = monitor

    def scope_in(
        self, conn: sqlite3.Connection, principal: Principal
    ) -> event_history.EventScope | None:
        return self._monitor.scope_in(conn, principal)

    async def page(
        self,
        principal: Principal,
        wanted: event_history.EventFilter,
        *,
        before_seq: int | None,
        limit: int,
    ) -> models.EventsPage:
        def read(conn: sqlite3.Connection) -> list[event_history.EventRow]:
            return event_history.page(
                conn, wanted, self.scope_in(conn, principal), before_seq=before_seq, limit=limit
            )

        try:
            rows = await self._store.read(read)
        except StoreError as exc:
            raise DirectoryError(
                DirectoryProblem.STORE_UNAVAILABLE, "the gateway cannot read now"
            ) from exc
        more = len(rows) == limit
        return models.EventsPage(
            events=[event_out(row) for row in rows],
            next_before_seq=rows[-1].seq if rows and more else None,
        )


@dataclass(eq=False)
class Subscriber:
    principal: Principal
    scope: event_history.EventScope | None
    queue: asyncio.Queue[event_history.EventRow | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_EVENTS)
    )
    closed: bool = False


POLL_S = 0.25


class LiveFeed:
    """Fans each commit's new events out to the open event streams."""

    def __init__(self, store: StoreAccess, history: History) -> None:
        self._store = store
        self._history = history
        self._subscribers: set[Subscriber] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_seq: int | None = None
        self._registry_version = -1
        self.dropped_slow = 0

    def committed(self, _head: int) -> None:
        """From the writer's thread after each commit."""
        if self._loop is not None and self._subscribers:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Deliver new events until cancelled: on a commit of this process's writer at once,
        and every `POLL_S` for the door core's (another process: nobody tells us)."""
        self._loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._deliver()
            except StoreError as exc:
                log.warning("live feed: cannot read new events: %s", exc)
                await asyncio.sleep(1)

    async def _deliver(self) -> None:
        subscribers = list(self._subscribers)
        if not subscribers or self._last_seq is None:
            return
        after = self._last_seq

        def read(conn: sqlite3.Connection) -> tuple[list[event_history.EventRow], int]:
            version = registry.registry_version(conn)
            if version != self._registry_version:
                for subscriber in subscribers:
                    subscriber.scope = self._history.scope_in(conn, subscriber.principal)
            return event_history.after(conn, after, BATCH), version

        rows, self._registry_version = await self._store.read(read)
        for row in rows:
            for subscriber in subscribers:
                if not subscriber.closed and admits(subscriber.scope, row):
                    self._put(subscriber, row)
        if rows:
            self._last_seq = rows[-1].seq
            if len(rows) == BATCH:
                self._wake.set()

    def _put(self, subscriber: Subscriber, row: event_history.EventRow | None) -> None:
        try:
            subscriber.queue.put_nowait(row)
        except asyncio.QueueFull:
            self.dropped_slow += 1
            self._close(subscriber)

    def _close(self, subscriber: Subscriber) -> None:
        subscriber.closed = True
        self._subscribers.discard(subscriber)
        with contextlib.suppress(asyncio.QueueFull):
            subscriber.queue.put_nowait(None)

    async def subscribe(
        self, principal: Principal, last_seq: int | None
    ) -> tuple[Subscriber, list[event_history.EventRow]]:
        """A new stream, and what it missed after `last_seq` (its Last-Event-ID)."""

        def read(
            conn: sqlite3.Connection,
        ) -> tuple[event_history.EventScope | None, int, list[Any]]:
            scope = self._history.scope_in(conn, principal)
            head = outbox.head_seq(conn)
            missed: list[event_history.EventRow] = []
            if last_seq is not None and last_seq < head:
                missed = [
                    row for row in event_history.after(conn, last_seq, BATCH) if admits(scope, row)
                ]
            return scope, head, missed

        scope, head, missed = await self._store.read(read)
        subscriber = Subscriber(principal, scope)
        if self._last_seq is None or not self._subscribers:
            self._last_seq = head if not missed else max(head, missed[-1].seq)
        self._subscribers.add(subscriber)
        return subscriber, missed

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def close(self) -> None:
        for subscriber in list(self._subscribers):
            self._close(subscriber)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


async def stream(
    feed: LiveFeed, subscriber: Subscriber, missed: list[event_history.EventRow], keepalive_s: float
) -> AsyncIterator[str]:
    """Server-sent events: `id: seq`, `event: type`, `data: EventOut JSON`; comments keep the
    connection alive through proxies."""
    sent = 0  # the feed may hand over again what the replay of `missed` already sent
    try:
        yield "retry: 3000\n\n"
        for row in missed:
            sent = row.seq
            yield _sse(row)
        while True:
            try:
                next_row = await asyncio.wait_for(subscriber.queue.get(), keepalive_s)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if next_row is None:
                return
            if next_row.seq > sent:
                sent = next_row.seq
                yield _sse(next_row)
    finally:
        feed.unsubscribe(subscriber)


def _sse(row: event_history.EventRow) -> str:
    return f"id: {row.seq}\nevent: {row.type}\ndata: {event_out(row).model_dump_json()}\n\n"
