"""The uplink: drain the outbox to the broker in seq order, mark delivered only on PUBACK.

Per session it starts from the delivery cursor (the first event not PUBACKed),
publishes batch envelopes at QoS 1 with at most `window` of them unacknowledged,
and advances the cursor as PUBACKs arrive, in order. A session that ends with
envelopes in flight changes nothing: the next session sends them again, and the
platform deduplicates by (gateway, seq). A PUBACK with a failure reason code
(MQTT 5) is not an acknowledgement: the session is ended and the batch retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from paho.mqtt.reasoncodes import ReasonCode

from gateway.clock import Clock, iso_ms
from gateway.store import outbox
from gateway.store.db import connect
from gateway.store.errors import StoreError
from gateway.store.outbox import OutboxStats, StoredEvent
from gateway.store.writer import Writer
from gateway.sync.link import LinkLostError, MqttLink, Session, Will
from gateway.sync.wire import GatewayState, StateHealth, Topics, envelope

log = logging.getLogger(__name__)


@dataclass
class UplinkStats:
    """Counters for status, the birth message and (later) metrics."""

    envelopes_published: int = 0
    envelopes_acked: int = 0
    events_acked: int = 0
    delivered_seq: int = 0
    last_puback: datetime | None = None
    rejected_pubacks: int = 0


@dataclass(frozen=True)
class UplinkSettings:
    window: int = 16
    batch_events: int = 500
    batch_chars: int = 256 * 1024
    ack_timeout_s: float = 60.0
    """A session whose oldest envelope waits this long for its PUBACK is ended and redone."""
    state_every_s: float = 60.0
    """The birth is republished this often: a state older than a few of these is stale."""


@dataclass(frozen=True, slots=True)
class _InFlight:
    first: int
    last: int
    future: asyncio.Future[ReasonCode | int]
    sent_at: float


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


class Uplink:
    """Drains the outbox over an `MqttLink`, session after session."""

    def __init__(
        self,
        gateway_id: str,
        *,
        link_factory: Callable[[Callable[[], Will]], MqttLink],
        source: OutboxSource,
        writer: Writer,
        clock: Clock,
        settings: UplinkSettings | None = None,
        software: str | None = None,
        health: Callable[[], Awaitable[StateHealth]] | None = None,
    ) -> None:
        self._gw = gateway_id
        self._topics = Topics(gateway_id)
        self._source = source
        self._writer = writer
        self._clock = clock
        self._settings = settings or UplinkSettings()
        self._software = software
        self._health = health
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: Session | None = None
        self.link = link_factory(self._will)
        self.stats = UplinkStats()
        self._background: set[asyncio.Future[None]] = set()

    @property
    def session(self) -> Session | None:
        """The session in use, if connected (the downlink replies through it)."""
        return self._session

    def rebirth(self) -> None:
        """Publish the birth/state message again (the platform's `resync`)."""
        session = self._session
        if session is None:
            return

        async def publish(session: Session = session) -> None:
            session.publish(self._topics.state, await self.birth(), retain=True).add_done_callback(
                _consume_outcome
            )

        task = asyncio.ensure_future(publish())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def notify_threadsafe(self, _head_seq: int) -> None:
        """Called by the writer thread after a commit with new events."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _will(self) -> Will:
        state = GatewayState(self._gw, online=False, ts=iso_ms(self._clock.now()))
        return Will(self._topics.state, state.encode())

    async def birth(self) -> bytes:
        """The retained state message announcing this gateway, its backlog and its health."""
        stats = await self._source.stats(self.stats.delivered_seq)
        health = await self._health() if self._health is not None else None
        age = None
        if stats.oldest_unsent_ts is not None:
            age = round(max(0.0, (self._clock.now() - stats.oldest_unsent_ts).total_seconds()), 3)
        return GatewayState(
            self._gw,
            online=True,
            ts=iso_ms(self._clock.now()),
            backlog=stats.depth,
            oldest_unsent_s=age,
            head_seq=stats.head_seq,
            software=self._software,
            health=health,
            state_every_s=self._settings.state_every_s,
        ).encode()

    async def run(self) -> None:
        """Run until cancelled: connect, announce, drain, repeat after any loss."""
        self._loop = asyncio.get_running_loop()
        sessions = self.link.sessions()
        try:
            async for session in sessions:
                await self._use(session)
        finally:
            await sessions.aclose()

    async def _use(self, session: Session) -> None:
        self._session = session
        try:
            # The birth's PUBACK is not waited for: draining must not hang on it.
            birth = session.publish(self._topics.state, await self.birth(), retain=True)
            birth.add_done_callback(_consume_outcome)
            fresh = asyncio.ensure_future(self._keep_state_fresh(session))
            try:
                await self._drain(session)
            finally:
                fresh.cancel()
                # wait, not `await fresh`: a cancellation of this task must not be swallowed
                await asyncio.wait({fresh})
        except LinkLostError as exc:
            log.warning("uplink session lost: %s", exc)
        except StoreError as exc:
            log.error("uplink cannot read the outbox, ending the session: %s", exc)
            session.disconnect()
        finally:
            self._session = None

    async def _keep_state_fresh(self, session: Session) -> None:
        """Republish the birth every `state_every_s` while the session lasts.

        A Last Will lives on the broker node that holds the session: if that node dies,
        no one publishes it, and the retained `online: true` on the other nodes would
        stand for ever. A birth refreshed on a timer lets the platform call a gateway
        offline once its state's `ts` goes stale, whatever became of the Will.
        """
        while not session.closed.is_set():
            await asyncio.sleep(self._settings.state_every_s)
            if session.closed.is_set():
                return
            try:
                payload = await self.birth()
            except StoreError as exc:
                log.warning("state not refreshed: cannot read the outbox: %s", exc)
                continue
            session.publish(self._topics.state, payload, retain=True).add_done_callback(
                _consume_outcome
            )

    async def _drain(self, session: Session) -> None:
        settings = self._settings
        delivered = outbox_delivered = await self._delivered_cursor()
        self.stats.delivered_seq = delivered
        sent_through = delivered
        inflight: deque[_InFlight] = deque()
        closed: asyncio.Future[Any] = asyncio.ensure_future(session.closed.wait())
        try:
            while not session.closed.is_set():
                self._wake.clear()  # before reading: a commit after this point wakes us
                while len(inflight) < settings.window:
                    batch = await self._next_batch(sent_through)
                    if not batch:
                        break
                    future = session.publish(self._topics.events, envelope(self._gw, batch))
                    inflight.append(
                        _InFlight(batch[0].seq, batch[-1].seq, future, time.monotonic())
                    )
                    sent_through = batch[-1].seq
                    self.stats.envelopes_published += 1
                await self._wait_for_progress(session, inflight, closed)
                while inflight and inflight[0].future.done():
                    done = inflight.popleft()
                    self._check_ack(session, done.future.result(), done.first, done.last)
                    delivered = done.last
                    self.stats.envelopes_acked += 1
                    self.stats.events_acked += done.last - done.first + 1
                if delivered != outbox_delivered:
                    self._persist_cursor(delivered)
                    outbox_delivered = delivered
        finally:
            closed.cancel()
            for item in inflight:  # their outcome no longer matters: the next session resends
                item.future.add_done_callback(_consume_outcome)

    async def _wait_for_progress(
        self, session: Session, inflight: deque[_InFlight], closed: asyncio.Future[Any]
    ) -> None:
        """Until the oldest envelope is answered, new events can be sent, or the session ends.

        An envelope unanswered for `ack_timeout_s` ends the session: the broker has
        stopped acknowledging, and only a new session will make progress.
        """
        waits: set[asyncio.Future[Any]] = {closed}
        timeout = None
        if inflight:
            waits.add(inflight[0].future)
            timeout = self._settings.ack_timeout_s - (time.monotonic() - inflight[0].sent_at)
        wake = None
        if len(inflight) < self._settings.window:
            wake = asyncio.ensure_future(self._wake.wait())
            waits.add(wake)
        try:
            await asyncio.wait(
                waits,
                timeout=max(timeout, 0) if timeout is not None else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if wake is not None:
                wake.cancel()
        front = inflight[0] if inflight else None
        overdue = front is not None and (
            not front.future.done()
            and not session.closed.is_set()
            and time.monotonic() - front.sent_at >= self._settings.ack_timeout_s
        )
        if front is not None and overdue:
            session.disconnect()
            raise LinkLostError(
                f"no PUBACK for seq {front.first}..{front.last} within "
                f"{self._settings.ack_timeout_s:g} s; starting a new session"
            )

    async def _next_batch(self, after_seq: int) -> list[StoredEvent]:
        settings = self._settings
        batch = await self._source.read_after(after_seq, settings.batch_events)
        total = 0
        for index, event in enumerate(batch):
            total += len(event.payload)
            if total > settings.batch_chars and index > 0:
                return batch[:index]
        return batch

    async def _delivered_cursor(self) -> int:
        """The first unacknowledged seq minus one, counting acks not yet persisted."""
        return (await self._source.stats(self.stats.delivered_seq)).delivered_seq

    def _check_ack(self, session: Session, code: ReasonCode | int, first: int, last: int) -> None:
        if isinstance(code, ReasonCode) and code.is_failure:
            self.stats.rejected_pubacks += 1
            session.disconnect()
            raise LinkLostError(f"broker refused seq {first}..{last}: {code}")
        self.stats.last_puback = self._clock.now()

    def _persist_cursor(self, delivered: int) -> None:
        self.stats.delivered_seq = delivered
        self._writer.submit(lambda conn: outbox.mark_delivered(conn, delivered))

    async def close(self, timeout: float = 5.0) -> None:
        """Say goodbye: a retained offline state, then a clean disconnect."""
        session = self._session
        if session is None or session.closed.is_set():
            return
        offline = GatewayState(self._gw, online=False, ts=iso_ms(self._clock.now()))
        acknowledged = False
        with contextlib.suppress(LinkLostError, TimeoutError):
            await asyncio.wait_for(
                session.publish(self._topics.state, offline.encode(), retain=True), timeout
            )
            acknowledged = True
        # Unacknowledged goodbye: leave so that the broker publishes the Will instead.
        session.disconnect(with_will=not acknowledged)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.closed.wait(), timeout)


def _consume_outcome(future: asyncio.Future[ReasonCode | int]) -> None:
    """Retrieve a fire-and-forget publish's outcome so a lost session is not reported twice."""
    if not future.cancelled():
        future.exception()
