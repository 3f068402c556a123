"""The ingest's stream on an MQTT broker (Mosquitto): a `$share` group with persistent sessions.

Every instance joins the shared subscription group `$share/{group}/rentgate/v1/+/events`
(and `.../state`); the broker hands each message to one instance of the group. Each
instance keeps a persistent session under a fixed client id (`{group}-{instance}`,
clean start off, a session expiry of minutes): while it is down, what the broker
assigned to it waits in its session, and is delivered when the same instance comes
back (systemd restarts it). Acknowledgement is manual: paho PUBACKs a message only when `settle`
says its rows are committed, so a crash before the commit means the broker delivers
it again.

MQTT 5 only: shared subscriptions and session expiry are MQTT 5 features, and
Mosquitto, EMQX and HiveMQ speak it. NATS and RabbitMQ have their own native queue
(nats_source.py, rabbit_source.py).

paho's network thread puts messages on a queue; `fetch` and `settle` are called from
the ingest's one thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Sequence
from typing import cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.platform.source import Delivery
from gateway.sync.link import BrokerSettings
from gateway.sync.wire import TOPIC_ROOT

SESSION_EXPIRY_S = 300
"""How long the broker keeps an absent instance's session and queue. Long enough for a
restart (systemd: seconds) or a maintenance window; not longer, because Mosquitto keeps
handing a `$share` group's messages round-robin to a member whose connection is down
(measured: half of them, with two members): they wait in the dead member's session
until it returns or the session expires, and meanwhile cost a replay each. What an
expired session held is not lost: the gateways keep everything unacknowledged."""
RECEIVE_MAXIMUM = 10_000
"""Unsettled messages the broker may send us at once (it applies its own limit too:
Mosquitto's `max_inflight_messages`); batches are cut from these."""


class MqttShareSource:
    """One member of a `$share` group, with a persistent session and manual PUBACKs."""

    def __init__(
        self,
        brokers: Sequence[BrokerSettings],
        *,
        group: str,
        instance: str,
        session_expiry_s: int = SESSION_EXPIRY_S,
    ) -> None:
        if not brokers:
            raise ValueError("at least one broker")
        self._brokers = list(brokers)
        self._group = group
        self._filters = [
            (f"$share/{group}/{TOPIC_ROOT}/+/events", 1),
            (f"$share/{group}/{TOPIC_ROOT}/+/state", 1),
        ]
        self._inbox: queue.Queue[Delivery] = queue.Queue()
        self._connected = threading.Event()
        self._generation = 0
        """Connections so far: a message is PUBACKed only on the connection that brought it (a
        packet id from an earlier one may name another message now)."""
        self._next = 0
        settings = self._brokers[0]
        self.client_id = f"{group}-{instance}"
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        if settings.tls is not None:
            self._client.tls_set_context(settings.tls.context())
        if settings.username is not None:
            self._client.username_pw_set(settings.username, settings.password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, int(settings.reconnect_max_s))
        self._session_expiry_s = session_expiry_s
        self._connect_next()
        self._client.loop_start()

    def _connect_next(self) -> None:
        """Connect to the next broker of the list (a cluster's nodes, in turn)."""
        settings = self._brokers[self._next % len(self._brokers)]
        self._next += 1
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._session_expiry_s
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        with contextlib.suppress(OSError, ValueError):  # loop_start's reconnect takes over
            self._client.connect_async(
                settings.host,
                settings.port,
                keepalive=settings.keepalive_s,
                clean_start=False,
                properties=properties,
            )

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: object,
        _flags: object,
        reason: object,
        _properties: object,
    ) -> None:
        if getattr(reason, "is_failure", False):
            return
        # Subscribe on every connect: a session the broker lost (restart without
        # persistence) has no subscription left, and subscribing again is harmless.
        client.subscribe(self._filters)
        self._generation += 1
        self._connected.set()

    def _on_disconnect(self, *_args: object) -> None:
        self._connected.clear()
        if len(self._brokers) > 1:
            settings = self._brokers[self._next % len(self._brokers)]
            self._next += 1
            with contextlib.suppress(RuntimeError):  # only while no connection is open
                self._client.host, self._client.port = settings.host, settings.port

    def _on_message(
        self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage
    ) -> None:
        token = (self._generation, message.mid, message.qos)
        self._inbox.put(Delivery(message.topic, bytes(message.payload), token))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        try:
            batch = [self._inbox.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while len(batch) < max_items:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def settle(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            generation, mid, qos = cast(tuple[int, int, int], delivery.token)
            if qos > 0 and generation == self._generation and self._connected.is_set():
                self._client.ack(mid, qos)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
