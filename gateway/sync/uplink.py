"""The uplink: drain the outbox to the broker in seq order; PUBACKs move the send window.

Per session it starts from the PUBACK cursor (the first event not PUBACKed),
publishes batch envelopes at QoS 1 with at most `window` of them unacknowledged,
and advances the cursor as PUBACKs arrive, in order. A session that ends with
envelopes in flight changes nothing: the next session sends them again, and the
platform deduplicates by (gateway, seq). A PUBACK with a failure reason code
(MQTT 5) is not an acknowledgement: the session is ended and the batch retried.

A PUBACK is not delivery: the platform's signed ack is (`gateway.sync.acks`).
When PUBACKed events wait unacknowledged for `ack_resend_s`, or the platform
asks with `replay`, the send position goes back and the events go out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paho.mqtt.reasoncodes import ReasonCode

from gateway.clock import Clock, iso_ms
from gateway.store import outbox
from gateway.store.errors import StoreError
from gateway.store.outbox import StoredEvent
from gateway.store.writer import Writer
from gateway.sync.acks import PlatformAcks
from gateway.sync.link import LinkLostError, MqttLink, Session, Will
from gateway.sync.outbox_source import OutboxSource
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
    ack_resend_s: float = 120.0
    """PUBACKed events the platform has not acknowledged for this long are published again."""


@dataclass(frozen=True, slots=True)
class _InFlight:
    first: int
    last: int
    future: asyncio.Future[ReasonCode | int]
    sent_at: float


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
        self._rewind_to: int | None = None
        self.acks = PlatformAcks(
            writer, resend_after_s=self._settings.ack_resend_s, on_advance=self._wake.set
        )

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

    def replay(self, from_seq: int) -> None:
        """Publish again from `from_seq` (the platform's `replay`), in this session or the next;
        what was pruned is gone, so it starts at the oldest event still kept."""
        after = from_seq - 1
        self._rewind_to = after if self._rewind_to is None else min(self._rewind_to, after)
        self._wake.set()

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
        self.acks.seed(stats.acked_seq)
        return GatewayState(
            self._gw,
            online=True,
            ts=iso_ms(self._clock.now()),
            backlog=stats.depth,
            oldest_unsent_s=self._age(stats.oldest_unsent_ts),
            head_seq=stats.head_seq,
            acked_seq=stats.acked_seq,
            oldest_unacked_s=self._age(stats.oldest_unacked_ts),
            software=self._software,
            health=health,
            state_every_s=self._settings.state_every_s,
        ).encode()

    def _age(self, ts: datetime | None) -> float | None:
        if ts is None:
            return None
        return round(max(0.0, (self._clock.now() - ts).total_seconds()), 3)

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
        self.acks.published(delivered)
        sent_through = delivered
        inflight: deque[_InFlight] = deque()
        closed: asyncio.Future[Any] = asyncio.ensure_future(session.closed.wait())
        try:
            while not session.closed.is_set():
                self._wake.clear()  # before reading: a commit after this point wakes us
                sent_through = self._rewound(sent_through, delivered)
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
                    delivered = max(delivered, done.last)  # a resend PUBACKs seqs again
                    self.stats.envelopes_acked += 1
                    self.stats.events_acked += done.last - done.first + 1
                if delivered != outbox_delivered:
                    self._persist_cursor(delivered)
                    outbox_delivered = delivered
                self.acks.published(delivered)
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
        timeout = self.acks.resend_in(self.stats.delivered_seq)
        if inflight:
            waits.add(inflight[0].future)
            puback_in = self._settings.ack_timeout_s - (time.monotonic() - inflight[0].sent_at)
            timeout = puback_in if timeout is None else min(timeout, puback_in)
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

    def _rewound(self, sent_through: int, delivered: int) -> int:
        """Where to send from next: back to a `replay`'s seq, or to the platform's cursor when
        PUBACKed events have waited too long for its ack; else on from `sent_through`."""
        target, self._rewind_to = self._rewind_to, None
        if self.acks.resend_in(delivered) == 0:
            acked = self.acks.resending()
            log.warning(
                "the platform has acknowledged only through seq %d of %d PUBACKed;"
                " publishing again from seq %d",
                acked,
                delivered,
                acked + 1,
            )
            target = acked if target is None else min(target, acked)
            # The state says where the cursor is: a platform that lost track (a new consumer,
            # a restored database) starts its contiguous run there, not at seq 1.
            self.rebirth()
        return sent_through if target is None else min(sent_through, target)

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
        """The first seq not PUBACKed minus one, counting PUBACKs not yet persisted (and
        learning the platform's cursor as the store has it)."""
        stats = await self._source.stats(self.stats.delivered_seq)
        self.acks.seed(stats.acked_seq)
        return stats.delivered_seq

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
