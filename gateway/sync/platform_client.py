"""The platform's side of the wire, for `rentgate platform`, tests and integrators.

Sends signed commands and waits for their replies; watches a gateway's topics.
It uses paho's own blocking loop: this is a tool for one person at a terminal
or one test, not part of the gateway's event loop. It speaks MQTT 5 or 3.1.1;
on "auto" it asks for 5 and takes 3.1.1 from a broker that refuses 5 (NATS,
RabbitMQ), where a command has no response topic: replies come on cmd-reply.
"""

from __future__ import annotations

import json
import queue
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.domain.signed_commands import CommandName
from gateway.domain.signing import SigningKey
from gateway.sync.link import MQTT_AUTO, MQTT_V5, MQTT_V311, BrokerSettings
from gateway.sync.platform_acks import AckTracker, ack_command, envelope_seqs, state_acked_seq
from gateway.sync.wire import TOPIC_ROOT, Topics


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    correlation_data: bytes | None = None


class PlatformClient:
    """A connected MQTT client that can publish commands and collect what comes back."""

    def __init__(self, settings: BrokerSettings, *, client_id: str | None = None) -> None:
        self._settings = settings
        self._client_id = client_id or f"platform-{uuid.uuid4().hex[:12]}"
        self._inbox: queue.Queue[Received] = queue.Queue()
        self._subscribed = threading.Event()
        self.protocol = MQTT_V311 if settings.protocol == MQTT_V311 else MQTT_V5
        """What the connection speaks ("5" or "3.1.1"); on "auto", known once connected."""
        self._client = self._new_client(self.protocol)

    def _new_client(self, protocol: str) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv5 if protocol == MQTT_V5 else paho.MQTTv311,
        )
        if self._settings.tls is not None:
            client.tls_set_context(self._settings.tls.context())
        if self._settings.username is not None:
            client.username_pw_set(self._settings.username, self._settings.password)
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def __enter__(self) -> PlatformClient:
        refused = self._connect()
        if refused is not None and self._settings.protocol == MQTT_AUTO and _no_v5(refused):
            self._client = self._new_client(MQTT_V311)
            self.protocol = MQTT_V311
            refused = self._connect()
        if refused is not None:
            raise ConnectionError(f"broker {self._settings.url} refused the connection: {refused}")
        return self

    def _connect(self) -> str | None:
        """Connect and start the loop; None once connected, else why not: the CONNACK's
        reason, or `CLOSED_AT_CONNECT` if the broker hung up without answering."""
        answer: list[str | None] = []
        answered = threading.Event()

        def on_connect(_c: object, _u: object, _f: object, code: Any, _p: object) -> None:
            if not answered.is_set():
                answer.append(str(code) if code.is_failure else None)
                answered.set()

        def on_disconnect(*_args: object) -> None:
            if not answered.is_set():
                answer.append(CLOSED_AT_CONNECT)
                answered.set()

        self._client.on_connect = on_connect
        self._client.on_disconnect = on_disconnect
        try:
            self._client.connect(self._settings.host, self._settings.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionError(f"cannot reach broker {self._settings.url}: {exc}") from exc
        self._client.loop_start()
        if not answered.wait(10):
            self.__exit__()
            raise ConnectionError(f"no CONNACK from {self._settings.url} within 10 s")
        if answer[0] is not None:
            self.__exit__()
        return answer[0]

    def __exit__(self, *_exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        properties = getattr(message, "properties", None)
        correlation = getattr(properties, "CorrelationData", None)
        self._inbox.put(Received(message.topic, bytes(message.payload), correlation))

    def _on_subscribe(self, *_args: object) -> None:
        self._subscribed.set()

    def subscribe(self, *filters: str) -> None:
        """Subscribe (QoS 1) and wait for the SUBACK, so nothing sent after is missed."""
        self._subscribed.clear()
        self._client.subscribe([(topic, 1) for topic in filters])
        if not self._subscribed.wait(10):
            raise ConnectionError("no SUBACK within 10 s")

    def publish(
        self, topic: str, payload: bytes, *, response_topic: str | None = None
    ) -> bytes | None:
        """Publish at QoS 1 and wait for the PUBACK; return the correlation data used.

        A response topic needs MQTT 5: asking for one on 3.1.1 is a `ValueError`."""
        properties = None
        correlation = None
        if response_topic is not None and self.protocol != MQTT_V5:
            raise ValueError("a response topic needs MQTT 5; this broker speaks 3.1.1")
        if response_topic is not None:
            correlation = uuid.uuid4().bytes
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = response_topic
            properties.CorrelationData = correlation
        info = self._client.publish(topic, payload, qos=1, properties=properties)
        info.wait_for_publish(10)
        return correlation

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def send(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 without waiting: for what is sent again anyway if lost (acks)."""
        self._client.publish(topic, payload, qos=1)

    def messages(self, timeout: float) -> Iterator[Received]:
        """What arrives within `timeout` seconds from now."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                yield self._inbox.get(timeout=left)
            except queue.Empty:
                return

    def command(
        self,
        gateway_id: str,
        name: str,
        signed: bytes,
        *,
        timeout: float = 30.0,
        response_topic: str | None = None,
    ) -> dict[str, Any] | None:
        """Send a signed command and wait for its reply (None if none came in `timeout`)."""
        command_id = json.loads(signed)["id"]
        reply_topic = f"{TOPIC_ROOT}/{gateway_id}/cmd-reply"
        self.subscribe(response_topic or reply_topic)
        correlation = self.publish(
            f"{TOPIC_ROOT}/{gateway_id}/cmd/{name}", signed, response_topic=response_topic
        )
        for message in self.messages(timeout):
            try:
                reply = json.loads(message.payload)
            except ValueError:
                continue
            if isinstance(reply, dict) and reply.get("id") == command_id:
                if correlation is not None and message.correlation_data != correlation:
                    continue
                return reply
        return None


CLOSED_AT_CONNECT = "connection closed before CONNACK"


def _no_v5(reason: str) -> bool:
    """Whether a refused connection says the broker may not take MQTT 5."""
    return reason in (CLOSED_AT_CONNECT, "Unsupported protocol version")


class Acker:
    """Acknowledges what `watch` has seen: per gateway, the highest contiguous seq, signed
    with the platform's key. Seeing is all this tool does with an event, so seen is stored."""

    def __init__(
        self, client: PlatformClient, key: SigningKey, now: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._key = key
        self._now = now
        self.tracker = AckTracker()
        self.sent = 0
        self._known: dict[str, int] = {}
        """What each gateway's state says it has had acknowledged."""
        self._sent: dict[str, int] = {}

    def seen(self, message: Received) -> int | None:
        """Take note of one message; returns the seq acked for its gateway, if it sent one."""
        if message.topic.endswith("/state"):
            state = state_acked_seq(message.payload)
            if state is None:
                return None
            gateway_id, acked = state
            self._known[gateway_id] = max(self._known.get(gateway_id, 0), acked)
            self.tracker.floor(gateway_id, acked)  # may join a run held above a gap
        elif message.topic.endswith("/events"):
            found = envelope_seqs(message.payload)
            if found is None:
                return None
            gateway_id, seqs = found
            self.tracker.add(gateway_id, seqs)
        else:
            return None
        through = self.tracker.through(gateway_id)
        if through <= max(self._known.get(gateway_id, 0), self._sent.get(gateway_id, 0)):
            return None
        signed = ack_command(self._key, gateway_id, through, int(self._now()))
        self._client.publish(Topics(gateway_id).command(CommandName.ACK.value), signed)
        self._sent[gateway_id] = through
        self.sent += 1
        return through


def watch(
    client: PlatformClient,
    gateway_id: str,
    emit: Callable[[str], None],
    *,
    seconds: float,
    acker: Acker | None = None,
) -> int:
    """Print what a gateway (or `+` for all) publishes, for `seconds`; return the count.
    With an `acker`, acknowledge the events seen as they come."""
    root = f"{TOPIC_ROOT}/{gateway_id}"
    client.subscribe(f"{root}/events", f"{root}/state", f"{root}/cmd-reply")
    count = 0
    for message in client.messages(seconds):
        count += 1
        emit(f"{message.topic} {message.payload.decode('utf-8', 'replace')}")
        if acker is not None:
            acker.seen(message)
    return count
