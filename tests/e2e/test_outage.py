"""The broker goes away during a stream of taps and comes back: nothing lost, order kept."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    load,
    stats_of,
    wait_until,
    write_config,
)


class PersistentSubscriber(Subscriber):
    """A platform consumer with a persistent session, so the broker queues for it."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages = []
        self._lock = threading.Lock()
        self._topic = topic
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="outage-platform", protocol=paho.MQTTv5
        )
        self._client.on_message = self._on_message
        self._client.on_connect = self._resubscribe
        self._client.reconnect_delay_set(0.1, 0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self._client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("subscription not acknowledged")

    def _resubscribe(self, client: paho.Client, *_args: object) -> None:
        client.subscribe(self._topic, qos=1)


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    with LocalBroker(workdir=workdir, persistent=True) as running:
        yield running


@pytest.mark.slow
def test_broker_outage_loses_nothing_and_keeps_order(
    persistent_broker: LocalBroker, tmp_path: Path
) -> None:
    config = load(write_config(tmp_path, persistent_broker.url, gateway_id="GW-OUTAGE"))
    platform = PersistentSubscriber(persistent_broker.port, "rentgate/v1/GW-OUTAGE/#")
    fifo = os.open(tmp_path / "front.reader", os.O_RDWR)
    offered = 0

    def tap_for(seconds: float) -> None:
        nonlocal offered
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            os.write(fifo, f"0A{offered:08X}\n".encode())
            offered += 1
            time.sleep(0.005)

    try:
        with InProcessGateway(config) as running:
            tap_for(1.0)
            persistent_broker.stop()
            wait_until(lambda: not running.gateway.uplink.link.connected, 10, "link down")
            tap_for(3.0)
            backlog = stats_of(config.gateway.database).depth
            persistent_broker.start()
            wait_until(lambda: running.gateway.uplink.link.connected, 20, "link up again")
            tap_for(1.0)
            wait_until(lambda: stats_of(config.gateway.database).depth == 0, 30, "backlog drained")
            wait_until(
                lambda: len(platform.unique_seqs()) >= stats_of(config.gateway.database).head_seq,
                30,
                "all events at the subscriber",
            )
            reconnects = running.gateway.uplink.link.reconnects
    finally:
        os.close(fifo)
        platform.close()

    assert backlog > 100, "taps kept being recorded while the broker was down"
    assert reconnects >= 1
    events = platform.events()
    first_seen: list[int] = []
    seen: set[int] = set()
    for event in events:
        if event["seq"] not in seen:
            seen.add(event["seq"])
            first_seen.append(event["seq"])
    head = stats_of(config.gateway.database).head_seq
    assert first_seen == list(range(1, head + 1)), "every seq once, in order"
    unique = {e["seq"]: e for e in events}
    decisions = [unique[s] for s in sorted(unique) if unique[s]["type"] == "access.decision"]
    cards = [int(e["credential"]["masked"][-4:], 16) for e in decisions]
    assert cards == [n & 0xFFFF for n in range(offered)], "every tap, in the order offered"
    births = [s for s in platform.states() if s["online"]]
    assert len(births) >= 2, "birth republished after the outage"
    assert any(b.get("backlog", 0) > 0 for b in births[1:]), "the new birth reports the backlog"
