"""The ingest's NATS source against a real nats-server (2.9, JetStream, MQTT 3.1.1): what
gateways publish over MQTT is captured by the stream, shared by the ingest instances on
one durable consumer, given to another when an instance dies before settling, and kept
while no ingest runs.

The nats-server is the session's; each test starts from a stream of its own making and
deletes it afterwards (its subjects would overlap any other on `rentgate.v1.*`).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import nats
import pytest

from gateway.platform import nats_source
from gateway.platform.nats_source import NatsStreamSource
from gateway.sync.local_broker import free_port
from tests.support.nats import NatsBroker
from tests.support.publisher import GatewayPublisher
from tests.support.sources import collect, payloads

STREAM = "RENTGATE"


async def _delete_stream(url: str) -> None:
    client = await nats.connect(url)
    try:
        await client.jetstream().delete_stream(STREAM)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await client.close()


async def _stream_messages(url: str) -> int:
    client = await nats.connect(url)
    try:
        return (await client.jetstream().stream_info(STREAM)).state.messages
    finally:
        await client.close()


@pytest.fixture
def nats_url(nats_broker: NatsBroker) -> Iterator[str]:
    url = f"nats://127.0.0.1:{nats_broker.client_port}"
    asyncio.run(_delete_stream(url))
    yield url
    asyncio.run(_delete_stream(url))


@pytest.fixture
def sources(nats_url: str) -> Iterator[list[NatsStreamSource]]:
    """Ingest instances the test makes; each is closed at the end."""
    made: list[NatsStreamSource] = []
    yield made
    for source in made:
        source.close()


def _source(made: list[NatsStreamSource], url: str, **options: float) -> NatsStreamSource:
    source = NatsStreamSource([url], **options)  # type: ignore[arg-type]
    made.append(source)
    source.connect()  # the stream and the consumer exist from here on
    return source


def test_events_and_the_retained_state_arrive_with_their_mqtt_topic_and_payload(
    nats_broker: NatsBroker, nats_url: str, sources: list[NatsStreamSource]
) -> None:
    source = _source(sources, nats_url)
    with GatewayPublisher(nats_broker.port, "GW-NATS-SRC-1") as gateway:
        events = gateway.events(range(1, 4))
        state = gateway.state()
    got = collect(source, 4, 10)
    assert [(d.topic, d.payload) for d in got] == [
        *(("rentgate/v1/GW-NATS-SRC-1/events", payload) for payload in events),
        ("rentgate/v1/GW-NATS-SRC-1/state", state),
    ]
    assert [d.gateway_id for d in got] == ["GW-NATS-SRC-1"] * 4
    assert got[-1].is_state
    source.settle(got)  # again: harmless
    assert source.fetch(10, 0.2) == []
    assert asyncio.run(_stream_messages(nats_url)) == 0, "work queue: settled ones are gone"


def test_two_instances_share_the_messages_each_getting_every_one_once(
    nats_broker: NatsBroker, nats_url: str, sources: list[NatsStreamSource]
) -> None:
    first, second = _source(sources, nats_url), _source(sources, nats_url)
    with GatewayPublisher(nats_broker.port, "GW-NATS-SRC-2") as gateway:
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
    nats_broker: NatsBroker, nats_url: str, sources: list[NatsStreamSource]
) -> None:
    leaving, staying = _source(sources, nats_url), _source(sources, nats_url)
    with GatewayPublisher(nats_broker.port, "GW-NATS-SRC-3") as gateway:
        published = gateway.events(range(1, 11))
    taken = collect(leaving, 10, 10, settle=False)
    assert payloads(taken) == published
    leaving.close()
    started = time.monotonic()
    again = collect(staying, 10, 10)
    assert sorted(payloads(again)) == sorted(published)
    assert time.monotonic() - started < 5, "handed back by the close, not after ack_wait (30 s)"


_DYING_INSTANCE = """
import sys, time
from gateway.platform import nats_source
from gateway.platform.nats_source import NatsStreamSource
from tests.support.sources import collect
source = NatsStreamSource([sys.argv[1]], ack_wait_s=2)
print(len(collect(source, int(sys.argv[2]), 10, settle=False)), flush=True)
time.sleep(60)
"""


def test_what_a_killed_instance_took_comes_back_after_ack_wait(
    nats_broker: NatsBroker, nats_url: str, sources: list[NatsStreamSource]
) -> None:
    staying = _source(sources, nats_url, ack_wait_s=2)
    with GatewayPublisher(nats_broker.port, "GW-NATS-SRC-4") as gateway:
        published = gateway.events(range(1, 11))
    dying = subprocess.Popen(
        [sys.executable, "-c", _DYING_INSTANCE, nats_url, "10"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert dying.stdout is not None
        assert dying.stdout.readline().strip() == "10", "the dying instance took them all"
    finally:
        dying.kill()
        dying.wait(10)
        if dying.stdout is not None:
            dying.stdout.close()
    again = collect(staying, 10, 10)
    assert sorted(payloads(again)) == sorted(published)


def test_what_is_published_while_no_ingest_runs_waits_in_the_stream(
    nats_broker: NatsBroker, nats_url: str, sources: list[NatsStreamSource]
) -> None:
    _source(sources, nats_url).close()  # the ingest ran once: the stream exists
    with GatewayPublisher(nats_broker.port, "GW-NATS-SRC-5") as gateway:
        published = gateway.events(range(1, 6))
        state = gateway.state(online=False)
    assert asyncio.run(_stream_messages(nats_url)) == 6
    later = _source(sources, nats_url)
    assert payloads(collect(later, 6, 10)) == [*published, state]


def test_a_puback_is_no_proof_that_the_stream_stored_the_message(
    nats_broker: NatsBroker, nats_url: str, sources: list[NatsStreamSource]
) -> None:
    """Why the platform's own acknowledgement to the gateway must follow the commit."""
    _source(sources, nats_url, max_bytes=1000)
    with GatewayPublisher(nats_broker.port, "GW-NATS-SRC-6") as gateway:
        gateway.events(range(1, 21))  # each PUBACKed (else publish() fails)
    stored = asyncio.run(_stream_messages(nats_url))
    assert 0 < stored < 20, f"the full stream (discard new) refused some: {stored}"


def test_an_existing_consumer_is_updated_to_the_new_ack_wait(
    nats_url: str, sources: list[NatsStreamSource]
) -> None:
    _source(sources, nats_url, ack_wait_s=30)
    _source(sources, nats_url, ack_wait_s=3)

    async def ack_wait() -> float | None:
        client = await nats.connect(nats_url)
        try:
            return (await client.jetstream().consumer_info(STREAM, "ingest")).config.ack_wait
        finally:
            await client.close()

    assert asyncio.run(ack_wait()) == 3


def test_a_deleted_stream_is_made_again_by_an_idle_instance(
    nats_broker: NatsBroker,
    nats_url: str,
    sources: list[NatsStreamSource],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nats_source, "CHECK_IDLE_EVERY_S", 0.0)
    source = _source(sources, nats_url)
    asyncio.run(_delete_stream(nats_url))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert source.fetch(10, 0.1) == []
        with contextlib.suppress(nats.js.errors.NotFoundError):
            asyncio.run(_stream_messages(nats_url))
            break
    with GatewayPublisher(nats_broker.port, "GW-NATS-SRC-7") as gateway:
        published = gateway.events(range(1, 4))
    assert payloads(collect(source, 3, 10)) == published


def test_fetch_raises_connection_error_when_nats_is_unreachable() -> None:
    source = NatsStreamSource([f"nats://127.0.0.1:{free_port()}"], connect_timeout_s=1)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            source.fetch(10, 0.5)
        assert time.monotonic() - started < 5
    finally:
        source.close()
