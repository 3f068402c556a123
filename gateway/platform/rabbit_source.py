"""The ingest's source on RabbitMQ: one durable queue bound to `amq.topic`, consumed by
every ingest instance at once (competing consumers), acked after the commit.

RabbitMQ's MQTT plugin publishes what gateways send to `amq.topic` with the topic's `/`
turned into `.`, so `rentgate/v1/GW/events` is the routing key `rentgate.v1.GW.events`;
the queue `rentgate.ingest` is bound with `rentgate.v1.*.events` and `rentgate.v1.*.state`
and takes QoS 1 and retained messages alike (a retained `state` as it is published; one
retained before the queue existed is not). Tested against RabbitMQ 3.10
(tests/platform/test_rabbit_source.py): its MQTT PUBACK comes after the queue confirmed
the message; one the queue refused (full, `reject-publish`) is not PUBACKed, the plugin
drops the gateway's connection instead, and the gateway resends. The queue must exist
before gateways publish (`connect` makes it; a message routed to no queue is dropped).

The queue is a *quorum* queue by default, on one node as on a cluster: it is the durable,
replicated type (classic mirroring is deprecated), it keeps QoS 0 messages across a
restart as well (a classic queue drops the non-persistent), and its type cannot change
after it is declared, so choosing it from the first day lets a cluster grow
(`rabbitmq-queues grow`) without moving the backlog. `queue_type="classic"` is for a
broker older than 3.8. No length limit is set: RabbitMQ's disk alarm blocks publishers
(gateways keep their events) rather than dropping a stored one. No delivery limit either
(3.10 has none by default; RabbitMQ 4 drops a message after 20 redeliveries unless a
policy sets `delivery-limit` to -1). Tune a declared queue by policy: declaring it again
with other arguments is refused (RuntimeError here).

pika's BlockingConnection is not thread-safe: every call (`fetch`, `settle`, `close`)
must come from one thread, and often enough to answer heartbeats (`heartbeat_s`; a
commit longer than that loses the connection, and the batch comes back). Deliveries
pushed within `prefetch` wait in a buffer until fetched; closing the connection gives
the broker back all that is unsettled, at once, and so does a dead instance's socket.
A message with another routing key cannot reach the queue, but would be returned like
the rest (mapped `.`→`/`) for the ingest to count, reject and settle.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from gateway.platform.source import Delivery

EXCHANGE = "amq.topic"
ROUTING_KEYS = ("rentgate.v1.*.events", "rentgate.v1.*.state")
REFUSED = (403, 406)  # ACCESS_REFUSED, PRECONDITION_FAILED: no retry mends these


def topic_of(routing_key: str) -> str:
    """The MQTT topic RabbitMQ made `routing_key` from (gateway ids hold no `.`)."""
    return routing_key.replace(".", "/")


@dataclass(frozen=True)
class _Tag:
    """A delivery tag, valid only on the connection (`generation`) that delivered it."""

    generation: int
    tag: int


class RabbitQueueSource:
    """A durable queue on `amq.topic`, consumed with manual acks, as a synchronous `Source`."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        queue: str = "rentgate.ingest",
        queue_type: str = "quorum",
        prefetch: int = 5_000,
        heartbeat_s: int = 60,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if not urls:
            raise ValueError("at least one amqp:// URL is needed")
        if queue_type not in ("quorum", "classic"):
            raise ValueError(f"queue_type is quorum or classic, not {queue_type!r}")
        self.urls = list(urls)
        self.queue = queue
        self.queue_type = queue_type
        self.prefetch = prefetch
        self.heartbeat_s = heartbeat_s
        self.connect_timeout_s = connect_timeout_s
        self._connection: Any = None  # pika.BlockingConnection
        self._channel: Any = None  # its BlockingChannel
        self._generation = 0
        self._buffer: deque[Delivery] = deque()
        self._unacked: set[int] = set()  # delivered on this connection, buffered or fetched
        self._cancelled = False  # the broker cancelled our consumer (the queue was deleted)

    def _parameters(self, url: str) -> Any:
        parameters = pika.URLParameters(url)
        parameters.connection_attempts = 1
        parameters.socket_timeout = self.connect_timeout_s
        parameters.stack_timeout = self.connect_timeout_s * 2
        parameters.heartbeat = self.heartbeat_s
        return parameters

    def connect(self) -> None:
        """Connect to the first URL that answers, declare and bind the queue, consume.

        fetch does it too; a deployment step calls it so the queue is there before gateways
        publish. ConnectionError when no URL answers; RuntimeError when the queue exists with
        other arguments (another type) or the user may not use it, which no retry mends."""
        if self._connection is not None:
            return
        try:
            connection = pika.BlockingConnection([self._parameters(url) for url in self.urls])
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise ConnectionError(f"RabbitMQ is unreachable at {self.urls}: {exc!r}") from exc
        try:
            channel = connection.channel()
            channel.queue_declare(
                self.queue, durable=True, arguments={"x-queue-type": self.queue_type}
            )
            for key in ROUTING_KEYS:
                channel.queue_bind(self.queue, EXCHANGE, routing_key=key)
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.add_on_cancel_callback(self._on_cancel)
            channel.basic_consume(self.queue, self._on_message, auto_ack=False)
        except pika.exceptions.ChannelClosedByBroker as exc:
            _close_quietly(connection)
            if exc.reply_code in REFUSED:
                raise RuntimeError(f"RabbitMQ refused queue {self.queue!r}: {exc}") from exc
            raise ConnectionError(f"RabbitMQ could not set up {self.queue!r}: {exc}") from exc
        except pika.exceptions.AMQPError as exc:
            _close_quietly(connection)
            raise ConnectionError(f"RabbitMQ went away while setting up: {exc!r}") from exc
        self._connection, self._channel = connection, channel
        self._generation += 1
        self._cancelled = False

    def _on_message(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        self._unacked.add(method.delivery_tag)
        token = _Tag(self._generation, method.delivery_tag)
        self._buffer.append(Delivery(topic_of(method.routing_key), body, token))

    def _on_cancel(self, _method: Any) -> None:
        self._cancelled = True

    def _lost(self, exc: Exception) -> ConnectionError:
        """Forget the connection (the broker requeues what it had delivered on it)."""
        connection, self._connection, self._channel = self._connection, None, None
        self._buffer.clear()
        self._unacked.clear()
        _close_quietly(connection)
        return ConnectionError(f"RabbitMQ connection lost: {exc!r}")

    def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        """Up to `max_items` deliveries, waiting at most `timeout_s` for the first."""
        self.connect()
        deadline = time.monotonic() + timeout_s
        try:
            self._connection.process_data_events(time_limit=0)
            while not self._buffer and not self._cancelled:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._connection.process_data_events(time_limit=remaining)
            if self._cancelled:
                raise pika.exceptions.ConsumerCancelled("the broker cancelled our consumer")
        except pika.exceptions.AMQPError as exc:
            raise self._lost(exc) from exc
        count = min(max_items, len(self._buffer))
        return [self._buffer.popleft() for _ in range(count)]

    def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Ack them: with one `multiple` ack up to the highest tag when no other delivery
        below it is still out (buffered or fetched and not settled), one by one otherwise.
        Deliveries of an earlier connection were requeued by the broker: they are skipped."""
        tags = sorted(
            d.token.tag
            for d in deliveries
            if isinstance(d.token, _Tag) and d.token.generation == self._generation
        )
        tags = [tag for tag in tags if tag in self._unacked]
        if not tags or self._channel is None:
            return
        settled = set(tags)
        below = [tag for tag in self._unacked if tag not in settled and tag < tags[-1]]
        ceiling = min(below) if below else tags[-1] + 1  # acks below it may be `multiple`
        covered = [tag for tag in tags if tag < ceiling]
        try:
            if covered:
                self._channel.basic_ack(covered[-1], multiple=True)
            for tag in tags[len(covered) :]:
                self._channel.basic_ack(tag)
        except pika.exceptions.AMQPError as exc:
            raise self._lost(exc) from exc
        self._unacked -= settled

    def close(self) -> None:
        """Close the connection: the broker requeues whatever was not settled."""
        connection, self._connection, self._channel = self._connection, None, None
        self._buffer.clear()
        self._unacked.clear()
        _close_quietly(connection)


def _close_quietly(connection: Any) -> None:
    if connection is None:
        return
    try:
        if connection.is_open:
            connection.close()
    except pika.exceptions.AMQPError:
        pass  # already gone: the broker requeues all the same
