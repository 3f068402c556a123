"""The platform side in tests: a key, signed commands, a client that waits for replies, and a
consumer that acknowledges what it stores (`AckingPlatform`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.clock import Clock
from gateway.domain.command_bodies import snapshot_pages
from gateway.domain.signed_commands import CommandName, sign
from gateway.domain.signing import SigningKey
from gateway.sync.link import BrokerSettings
from gateway.sync.local_broker import LocalBroker
from gateway.sync.platform_acks import AckTracker, ack_command, envelope_seqs, state_acked_seq
from gateway.sync.platform_client import PlatformClient
from tests.support.gateway import make_id_number
from tests.support.nats import NatsBroker
from tests.support.rabbitmq import RabbitBroker


class Platform:
    """Signs commands for one gateway with the gateway's clock and sends them."""

    def __init__(
        self,
        broker: LocalBroker | NatsBroker | RabbitBroker,
        gateway_id: str,
        key: SigningKey,
        clock: Clock,
        *,
        protocol: str = "5",
    ) -> None:
        self.gateway_id = gateway_id
        self.key = key
        self.clock = clock
        settings = BrokerSettings.from_url(
            f"mqtt://127.0.0.1:{broker.port}", "platform-test", protocol=protocol
        )
        self.client = PlatformClient(settings).__enter__()

    def close(self) -> None:
        self.client.__exit__()

    def signed(
        self,
        name: str,
        body: Mapping[str, Any],
        *,
        key: SigningKey | None = None,
        ttl_s: int = 300,
        issued_at: int | None = None,
        command_id: str | None = None,
        gateway_id: str | None = None,
    ) -> bytes:
        return sign(
            key or self.key,
            gateway_id=gateway_id or self.gateway_id,
            name=CommandName(name),
            body=body,
            now=issued_at if issued_at is not None else int(self.clock.now().timestamp()),
            ttl_s=ttl_s,
            command_id=command_id,
        )

    def send(
        self, name: str, body: Mapping[str, Any], *, timeout: float = 30, **options: Any
    ) -> dict[str, Any]:
        return self.send_raw(name, self.signed(name, body, **options), timeout=timeout)

    def send_snapshot(
        self, version: int, people: list[dict[str, Any]], *, timeout: float = 60
    ) -> dict[str, Any]:
        """Send a snapshot page by page; return the last page's reply (or the first refusal)."""
        reply: dict[str, Any] = {}
        for body in snapshot_pages(version, people):
            reply = self.send("allowlist.snapshot", body, timeout=timeout)
            if not reply["ok"]:
                return reply
        return reply

    def send_raw(
        self, name: str, payload: bytes, *, response_topic: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """Send bytes as they are (forged, garbled, oversized…) and return the reply."""
        command_id = _id_of(payload)
        topic = f"rentgate/v1/{self.gateway_id}/cmd/{name}"
        reply_topic = response_topic or f"rentgate/v1/{self.gateway_id}/cmd-reply"
        self.client.subscribe(reply_topic)
        correlation = self.client.publish(topic, payload, response_topic=response_topic)
        for message in self.client.messages(timeout):
            reply = json.loads(message.payload)
            if message.topic != reply_topic or reply.get("id") != command_id:
                continue
            if correlation is not None and message.correlation_data != correlation:
                continue
            return dict(reply)
        raise AssertionError(f"no reply to {name} within {timeout} s")


def _id_of(payload: bytes) -> str | None:
    try:
        document = json.loads(payload)
    except ValueError:
        return None
    value = document.get("id") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def id_number_for(serial: int) -> str:
    """A distinct valid ID number for each serial up to a few million."""
    birth = date(1970, 1, 1) + timedelta(days=serial // 1000)
    return make_id_number(serial % 1000, birth=birth.strftime("%Y%m%d")).value


def person_entry(serial: int, cards: list[str], unit: str = "1") -> dict[str, Any]:
    """An allowlist entry: a person with card credentials and a tenancy for a year."""
    return {
        "person": f"P-{serial}",
        "id_number": id_number_for(serial),
        "name": f"租户{serial}",
        "credentials": [{"kind": "card_uid", "value": card} for card in cards],
        "tenancies": [
            {
                "unit": unit,
                "valid_from": "2026-01-01T00:00:00+08:00",
                "valid_to": "2027-12-31T00:00:00+08:00",
            }
        ],
    }


def key_file(directory: Path) -> tuple[SigningKey, Path]:
    key = SigningKey.generate()
    _private, public = key.save(directory)
    return key, public


class AckingPlatform:
    """A platform consumer that stores what a gateway sends and acknowledges it, like a real
    one: per gateway the highest contiguous seq stored, signed with the platform's key, after
    each envelope is "committed" (kept here). `stop()` takes it down (its store survives,
    as a platform's database would) and `start()` brings it back. With `persistent`, the
    broker keeps its session (and queues for it) while it is down; by default it is gone.
    """

    def __init__(
        self,
        port: int,
        gateway_id: str,
        key: SigningKey | None,
        *,
        client_id: str | None = None,
        persistent: bool = False,
        ack: bool = True,
    ) -> None:
        self.port = port
        self.gateway_id = gateway_id
        self.key = key
        self.acking = ack and key is not None
        self.tracker = AckTracker()
        self._envelopes: list[dict[str, Any]] = []
        self.acks_sent: list[int] = []
        self._client_id = client_id or f"acking-platform-{gateway_id}"
        self._persistent = persistent
        self._lock = threading.Lock()
        self._client: paho.Client | None = None
        self.start()

    def start(self) -> AckingPlatform:
        """Connect and subscribe (again after every reconnect); returns once subscribed."""
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=paho.MQTTv5
        )
        subscribed = threading.Event()
        root = f"rentgate/v1/{self.gateway_id}"
        client.on_connect = lambda c, *_a: c.subscribe(
            [(f"{root}/events", 1), (f"{root}/state", 1)]
        )
        client.on_subscribe = lambda *_a: subscribed.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(0.1, 0.5)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600 if self._persistent else 0
        client.connect(
            "127.0.0.1", self.port, clean_start=not self._persistent, properties=properties
        )
        client.loop_start()
        self._client = client
        if not subscribed.wait(10):
            raise AssertionError("the acking platform's subscription was not acknowledged")
        return self

    def stop(self) -> None:
        """The platform goes down (its consumer process stops); what it stored stays."""
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()
        client.on_message = client.on_connect = client.on_subscribe = None

    close = stop

    def _on_message(self, client: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        if message.topic.endswith("/state"):
            state = state_acked_seq(bytes(message.payload))
            if state is None or not self.acking:
                return
            gateway_id = state[0]
            self.tracker.floor(*state)  # may join a run held above a gap
        else:
            found = envelope_seqs(bytes(message.payload))
            if found is None:
                return
            with self._lock:
                self._envelopes.append(json.loads(message.payload))
            gateway_id, seqs = found
            self.tracker.add(gateway_id, seqs)
        through = self.tracker.through(gateway_id)
        with self._lock:
            if not self.acking or self.key is None or through <= max(self.acks_sent, default=0):
                return
            self.acks_sent.append(through)
        signed = ack_command(self.key, gateway_id, through, int(time.time()))
        client.publish(f"rentgate/v1/{gateway_id}/cmd/ack", signed, qos=1)

    def envelopes(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._envelopes)

    def events(self) -> list[dict[str, Any]]:
        return [event for envelope in self.envelopes() for event in envelope["events"]]

    def decisions(self) -> list[dict[str, Any]]:
        return [event for event in self.events() if event["type"] == "access.decision"]

    def unique_seqs(self) -> set[int]:
        return {event["seq"] for event in self.events()}

    def received(self, seq: int) -> int:
        """How many times `seq` arrived."""
        return sum(1 for event in self.events() if event["seq"] == seq)

    def acked_through(self) -> int:
        return self.tracker.through(self.gateway_id)
