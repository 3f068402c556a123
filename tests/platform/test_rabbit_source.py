"""The ingest's RabbitMQ source against a real RabbitMQ (3.10, MQTT plugin, AMQP 0-9-1):
what gateways publish over MQTT lands in the quorum queue bound to `amq.topic`, is shared
by the ingest instances consuming it, comes back when an instance closes or dies before
settling, and is kept while no ingest runs.

The node is the session's (`rabbit_broker`); each test starts with no queue and deletes
the one it made, so no other test's messages pile up in it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import paho.mqtt.client as paho
import pika
import pytest

from gateway.platform.rabbit_source import RabbitQueueSource
from gateway.sync.local_broker import free_port
from tests.support.gateway import wait_until
from tests.support.publisher import GatewayPublisher, envelope
from tests.support.rabbitmq import RabbitBroker
from tests.support.sources import collect, payloads

QUEUE = "rentgate.ingest"


def _delete_queue(url: str, queue: str = QUEUE) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_delete(queue)
    finally:
        connection.close()


def _queued(url: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(QUEUE, passive=True).method.message_count)
    finally:
        connection.close()


@pytest.fixture
def amqp_url(rabbit_broker: RabbitBroker) -> Iterator[str]:
    _delete_queue(rabbit_broker.amqp_url)
    yield rabbit_broker.amqp_url
    _delete_queue(rabbit_broker.amqp_url)


@pytest.fixture
def sources(amqp_url: str) -> Iterator[list[RabbitQueueSource]]:
    """Ingest instances the test makes; each is closed at the end."""
    made: list[RabbitQueueSource] = []
    yield made
    for source in made:
        source.close()


def _source(made: list[RabbitQueueSource], url: str, **options: str) -> RabbitQueueSource:
    source = RabbitQueueSource([url], **options)  # type: ignore[arg-type]
    made.append(source)
    source.connect()  # the queue exists and is consumed from here on
    return source


def test_events_and_the_retained_state_arrive_with_their_mqtt_topic_and_payload(
    rabbit_broker: RabbitBroker, amqp_url: str, sources: list[RabbitQueueSource]
) -> None:
    source = _source(sources, amqp_url)
    with GatewayPublisher(rabbit_broker.port, "GW-RABBIT-SRC-1") as gateway:
        events = gateway.events(range(1, 4))
        state = gateway.state()
    got = collect(source, 4, 10)
    assert [(d.topic, d.payload) for d in got] == [
        *(("rentgate/v1/GW-RABBIT-SRC-1/events", payload) for payload in events),
        ("rentgate/v1/GW-RABBIT-SRC-1/state", state),
    ]
    assert [d.gateway_id for d in got] == ["GW-RABBIT-SRC-1"] * 4
    assert got[-1].is_state
    source.settle(got)  # again: harmless (an unknown tag would close the channel)
    assert source.fetch(10, 0.2) == []
    source.close()
    assert _queued(amqp_url) == 0, "settled: acked, not requeued by the close"


def test_two_instances_share_the_messages_each_getting_every_one_once(
    rabbit_broker: RabbitBroker, amqp_url: str, sources: list[RabbitQueueSource]
) -> None:
    first = _source(sources, amqp_url, prefetch=20)  # type: ignore[arg-type]
    second = _source(sources, amqp_url, prefetch=20)  # type: ignore[arg-type]
    with GatewayPublisher(rabbit_broker.port, "GW-RABBIT-SRC-2") as gateway:
        published = gateway.events(range(1, 201))
    taken: dict[int, list[bytes]] = {0: [], 1: []}
    deadline = time.monotonic() + 15
    while len(taken[0]) + len(taken[1]) < len(published) and time.monotonic() < deadline:
        for index, source in enumerate((first, second)):
            batch = source.fetch(15, 0.2)
            source.settle(batch)
            taken[index].extend(payloads(batch))
    assert sorted(taken[0] + taken[1]) == sorted(published)
    assert taken[0], "the first instance took a share"
    assert taken[1], "the second instance took a share"


def test_what_a_closed_instance_did_not_settle_goes_to_the_other_at_once(
    rabbit_broker: RabbitBroker, amqp_url: str, sources: list[RabbitQueueSource]
) -> None:
    leaving = _source(sources, amqp_url)
    with GatewayPublisher(rabbit_broker.port, "GW-RABBIT-SRC-3") as gateway:
        published = gateway.events(range(1, 11))
    taken = collect(leaving, 10, 10, settle=False)
    assert payloads(taken) == published
    staying = _source(sources, amqp_url)
    assert staying.fetch(10, 0.3) == [], "while the first holds them, nobody else has them"
    leaving.close()
    assert sorted(payloads(collect(staying, 10, 5))) == sorted(published)


def test_settling_a_later_batch_first_leaves_the_earlier_one_unacked(
    rabbit_broker: RabbitBroker, amqp_url: str, sources: list[RabbitQueueSource]
) -> None:
    """A `multiple` ack must not reach below what is still out: the earlier batch comes back."""
    source = _source(sources, amqp_url)
    with GatewayPublisher(rabbit_broker.port, "GW-RABBIT-SRC-4") as gateway:
        published = gateway.events(range(1, 11))
    earlier = collect(source, 5, 10, settle=False, batch=5)
    later = collect(source, 5, 10, settle=False, batch=5)
    assert payloads(earlier + later) == published
    source.settle(later)
    source.close()
    assert _queued(amqp_url) == 5
    again = collect(_source(sources, amqp_url), 5, 5)
    assert payloads(again) == payloads(earlier)


_DYING_INSTANCE = """
import sys, time
from gateway.platform.rabbit_source import RabbitQueueSource
from tests.support.sources import collect
source = RabbitQueueSource([sys.argv[1]])
print(len(collect(source, int(sys.argv[2]), 10, settle=False)), flush=True)
time.sleep(60)
"""


def test_what_a_killed_instance_took_comes_back(
    rabbit_broker: RabbitBroker, amqp_url: str, sources: list[RabbitQueueSource]
) -> None:
    staying = _source(sources, amqp_url)
    staying.close()  # the queue exists; the dying instance is its only consumer
    with GatewayPublisher(rabbit_broker.port, "GW-RABBIT-SRC-5") as gateway:
        published = gateway.events(range(1, 11))
    dying = subprocess.Popen(
        [sys.executable, "-c", _DYING_INSTANCE, amqp_url, "10"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert dying.stdout is not None
        assert dying.stdout.readline().strip() == "10", "the dying instance took them all"
    finally:
        dying.kill()
        dying.wait(10)
        if dying.stdout is not None:
            dying.stdout.close()
    again = collect(_source(sources, amqp_url), 10, 10)
    assert sorted(payloads(again)) == sorted(published)


def test_what_is_published_while_no_ingest_runs_waits_in_the_queue(
    rabbit_broker: RabbitBroker, amqp_url: str, sources: list[RabbitQueueSource]
) -> None:
    _source(sources, amqp_url).close()  # the ingest ran once: the queue exists
    with GatewayPublisher(rabbit_broker.port, "GW-RABBIT-SRC-6") as gateway:
        published = gateway.events(range(1, 6))
        state = gateway.state(online=False)
    assert _queued(amqp_url) == 6
    assert payloads(collect(_source(sources, amqp_url), 6, 10)) == [*published, state]


def test_a_puback_comes_only_once_the_queue_took_the_message(
    rabbit_broker: RabbitBroker, amqp_url: str
) -> None:
    """A queue that refuses a message (full, `reject-publish`) gets the gateway no PUBACK:
    RabbitMQ 3.10's MQTT plugin drops the connection instead, and the gateway resends."""
    full = "rentgate.test-full"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        arguments = {"x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "reject-publish"}
        channel.queue_declare(full, durable=True, arguments=arguments)
        channel.queue_bind(full, "amq.topic", routing_key="rentgate.v1.GW-RABBIT-FULL.events")
    finally:
        connection.close()
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id="GW-RABBIT-FULL", protocol=paho.MQTTv311
    )
    client.connect("127.0.0.1", rabbit_broker.port)
    client.loop_start()
    wait_until(client.is_connected, 10, "connected over MQTT")
    try:
        acked = []
        for seq in range(1, 6):
            info = client.publish("rentgate/v1/GW-RABBIT-FULL/events", envelope("x", seq), qos=1)
            deadline = time.monotonic() + 5
            while not info.is_published() and time.monotonic() < deadline:
                if not client.is_connected():
                    break  # dropped: no PUBACK will come for this one
                time.sleep(0.02)
            acked.append(info.is_published())
            if not acked[-1]:
                break
    finally:
        client.disconnect()
        client.loop_stop()
        _delete_queue(amqp_url, full)
    assert acked[0], "a queue with room PUBACKs"
    assert acked[-1] is False, f"the full queue's refusal reached the gateway: {acked}"


def test_a_queue_of_another_type_is_refused_plainly(
    amqp_url: str, sources: list[RabbitQueueSource]
) -> None:
    _source(sources, amqp_url)  # quorum
    with pytest.raises(RuntimeError, match="x-queue-type"):
        RabbitQueueSource([amqp_url], queue_type="classic").connect()


def test_fetch_raises_connection_error_when_rabbitmq_is_unreachable() -> None:
    source = RabbitQueueSource([f"amqp://127.0.0.1:{free_port()}/%2F"], connect_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        source.fetch(10, 0.5)
    assert time.monotonic() - started < 5
    source.close()


def test_the_next_url_is_tried_when_one_does_not_answer(
    amqp_url: str, sources: list[RabbitQueueSource]
) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    source = RabbitQueueSource([dead, amqp_url], connect_timeout_s=1)
    sources.append(source)
    assert source.fetch(10, 0.1) == []
