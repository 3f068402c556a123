"""The ingest's source on NATS: a JetStream stream of the gateways' messages, read by one
durable pull consumer that every ingest instance shares (competing consumers).

Gateways speak MQTT to NATS's MQTT port; NATS turns `rentgate/v1/GW/events` into the
subject `rentgate.v1.GW.events`, and a stream of our own on `rentgate.v1.*.events` and
`rentgate.v1.*.state` captures it, QoS 0 or 1, retained or not (a retained `state` is
captured as it is published; one retained before the stream existed is not). Tested
against NATS 2.9 (tests/platform/test_nats_source.py). NATS's MQTT PUBACK does *not* wait
for our stream: a message the stream refuses (full, `discard: new`) is PUBACKed all the
same, so a PUBACK is no proof of storage; the platform's own acknowledgement to the gateway
(after the ingest committed) is, and a gateway resends what was never acknowledged.

The stream (`RENTGATE`) is made or updated idempotently at connect, so it must exist
before gateways publish: whatever they publish before the ingest first ran is not kept.
Its retention is *work queue*: a message is deleted once acked, so the stream holds the
backlog the ingest has not stored yet, not history (PostgreSQL is the history). A backlog
older than `max_age` (7 days) is dropped; past `max_bytes` the stream refuses the newest
(`discard: new`) rather than dropping the oldest: what it stored stays one step from
PostgreSQL, and what it refused is still on its gateway, unacknowledged, and resent. A
long outage fills the stream with those resends, which `max_bytes` bounds. Work-queue
retention refuses a second consumer on the same subjects: another reader (analytics, an
audit) needs a stream that sources this one. `replicas` (3 on a cluster) is the stream's,
and the consumer's, so a node may die with nothing stored lost.

nats-py is asyncio; the ingest is not. The client runs on a private event loop in a
daemon thread and `fetch`/`settle`/`close` call into it, from any one thread at a time.
Settling acks each message and flushes, so the acks reached the server before `settle`
returns; a message not acked within `ack_wait` (its instance died or hung) is given to
another instance, and `close` naks what it fetched and did not settle, so that goes at
once. Several server URLs make one client that fails over and reconnects for ever;
`fetch` raises ConnectionError while it is away. A message on any other subject cannot
reach the stream, but would be returned like the rest (mapped `.`→`/`) for the ingest to
count, reject and settle.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext

from gateway.platform.source import Delivery

SUBJECTS = ["rentgate.v1.*.events", "rentgate.v1.*.state"]
DAY_S = 86_400.0
ALREADY_IN_USE = 10058  # JetStream: stream name already in use with a different configuration
CHECK_IDLE_EVERY_S = 10.0  # while idle, whether the consumer still exists (a pull on a deleted
# one just times out, and gateways' messages would go unstored until a restart)

T = TypeVar("T")

# Transient: the server is away, or JetStream has no leader yet (a cluster electing one).
_TRANSIENT = (
    OSError,
    asyncio.TimeoutError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
)


def topic_of(subject: str) -> str:
    """The MQTT topic NATS made `subject` from (gateway ids hold no `.`, so `.` was `/`)."""
    return subject.replace(".", "/")


class NatsStreamSource:
    """A JetStream durable pull consumer as a synchronous `Source`."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        stream: str = "RENTGATE",
        durable: str = "ingest",
        replicas: int = 1,
        ack_wait_s: float = 30.0,
        max_ack_pending: int = 200_000,
        max_age_s: float = 7 * DAY_S,
        max_bytes: int | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if not urls:
            raise ValueError("at least one nats:// URL is needed")
        self.urls = list(urls)
        self.stream = stream
        self.durable = durable
        self.replicas = replicas
        self.ack_wait_s = ack_wait_s
        self.max_ack_pending = max_ack_pending
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.connect_timeout_s = connect_timeout_s
        self._client: Client | None = None
        self._unsettled: dict[str, Msg] = {}  # by reply subject, unique to each delivery
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._jetstream: JetStreamContext | None = None
        self._checked_at = time.monotonic()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="nats-source", daemon=True
        )
        self._thread.start()

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run `coroutine` on the private loop; ConnectionError for whatever means "broker away"."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout_s)
        except TimeoutError as exc:
            future.cancel()
            raise ConnectionError("NATS did not answer in time") from exc
        except _TRANSIENT as exc:
            raise ConnectionError(f"NATS is unreachable: {exc!r}") from exc

    def stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=self.stream,
            subjects=SUBJECTS,
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            max_age=self.max_age_s,
            max_bytes=-1 if self.max_bytes is None else self.max_bytes,
            discard=DiscardPolicy.NEW,
        )

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=-1,  # a message is never given up on; the ingest settles even bad ones
            max_ack_pending=self.max_ack_pending,
        )

    async def _connect(self) -> None:
        client = Client()
        try:
            # Reconnects forever once connected; the first connection is bounded by wait_for.
            await asyncio.wait_for(
                client.connect(
                    servers=self.urls,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=max(1, min(2, int(self.connect_timeout_s))),
                    error_cb=_ignore,
                    disconnected_cb=_nothing,
                    reconnected_cb=_nothing,
                ),
                self.connect_timeout_s,
            )
            jetstream = client.jetstream(timeout=self.connect_timeout_s)
            self._jetstream = jetstream
            await self._ensure_stream(jetstream)
            await jetstream.add_consumer(self.stream, self.consumer_config())
            self._subscription = await jetstream.pull_subscribe_bind(
                durable=self.durable, stream=self.stream
            )
        except BaseException:
            await client.close()
            raise
        self._client = client

    async def _ensure_stream(self, jetstream: JetStreamContext) -> None:
        try:
            await jetstream.add_stream(self.stream_config())
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != ALREADY_IN_USE:
                raise
            await jetstream.update_stream(self.stream_config())

    async def _ensure_connected(self) -> None:
        if self._client is None:
            await self._connect()

    def connect(self) -> None:
        """Connect and make the stream and the consumer, if not yet (fetch does it too):
        for a deployment step that must have the stream before gateways publish."""
        self._run(self._ensure_connected(), 2 * self.connect_timeout_s)

    async def _fetch(self, max_items: int, timeout_s: float) -> list[Msg]:
        await self._ensure_connected()
        assert self._client is not None
        assert self._subscription is not None
        if not self._client.is_connected:
            raise nats.errors.ConnectionReconnectingError
        try:
            return await self._subscription.fetch(max_items, timeout=max(timeout_s, 0.01))
        except nats.errors.TimeoutError:
            await self._check_consumer()
            return []

    async def _check_consumer(self) -> None:
        """Make the stream and consumer again if someone deleted them."""
        if self._jetstream is None or time.monotonic() - self._checked_at < CHECK_IDLE_EVERY_S:
            return
        self._checked_at = time.monotonic()
        try:
            await self._jetstream.consumer_info(self.stream, self.durable)
        except nats.js.errors.NotFoundError:
            await self._close()  # the next fetch connects again and makes them

    def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        """Up to `max_items` messages, waiting at most `timeout_s` for them."""
        try:
            messages = self._run(
                self._fetch(max_items, timeout_s), timeout_s + 2 * self.connect_timeout_s
            )
        except ConnectionError:
            # After a node dies, nats-py's pull subscription can stay stuck on the old
            # route (fetches time out while the cluster is healthy): start over.
            self._reset()
            raise
        self._unsettled.update((m.reply, m) for m in messages)
        return [Delivery(topic_of(m.subject), m.data, m) for m in messages]

    async def _settle(self, messages: list[Msg]) -> None:
        for message in messages:
            with contextlib.suppress(nats.errors.MsgAlreadyAckdError):  # settled twice
                await message.ack()
        if self._client is not None:
            await self._client.flush(timeout=max(1, int(self.connect_timeout_s)))

    def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Ack each one (they are stored); an ack lost on the way only means a repeat."""
        messages = [d.token for d in deliveries if isinstance(d.token, Msg)]
        for message in messages:
            self._unsettled.pop(message.reply, None)
        if messages:
            self._run(self._settle(messages), self.connect_timeout_s + 1)

    async def _close(self) -> None:
        client, self._client, self._subscription = self._client, None, None
        self._jetstream = None
        unsettled, self._unsettled = list(self._unsettled.values()), {}
        if client is None:
            return
        try:
            if client.is_connected:
                for message in unsettled:
                    await message.nak()
                await client.flush(timeout=1)
        finally:
            await client.close()

    def _reset(self) -> None:
        """Drop the connection; the next fetch connects, binds the consumer again."""
        with contextlib.suppress(ConnectionError, TimeoutError):
            self._run(self._close(), self.connect_timeout_s)

    def close(self) -> None:
        """Disconnect, handing back (nak) what was fetched and not settled, so another
        instance gets it now rather than after `ack_wait`; that is best effort, and what
        the nak misses comes back after `ack_wait` all the same."""
        if self._loop.is_closed():
            return
        with contextlib.suppress(ConnectionError):
            self._run(self._close(), self.connect_timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.connect_timeout_s)
        if not self._thread.is_alive():
            self._loop.close()


async def _ignore(error: Exception) -> None:
    """nats-py reports each failed (re)connection here; fetch reports the outage instead."""


async def _nothing() -> None:
    pass
