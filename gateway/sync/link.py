"""The MQTT link: one paho client per session, reconnect with full-jitter backoff.

A fresh paho client for every connection attempt means no message can hide in
a queue of a dead session: what was not PUBACKed in a session is simply sent
again from the outbox in the next one. paho's network loop runs in its own
thread; everything it reports crosses to the event loop with
`call_soon_threadsafe`, so the rest of the gateway only sees asyncio. The one
exception is a subscription's messages, which its receiver judges in paho's
thread first (see `Subscriptions`).

TLS (`mqtts://`) always verifies the server certificate and host name, and
there is no fallback to plaintext: a failed handshake is a failed attempt.

A broker cluster is a list of nodes, tried in order. The link stays on a node
that works; when a connection attempt fails or a session is lost it moves to the
next node, so a dead node costs one attempt, not a whole backoff of retries.
With protocol "auto" each node is asked for MQTT 5 first; a node that refuses
it (CONNACK "unsupported protocol version", or the connection closed at
CONNECT) is asked again at once in 3.1.1, and if that works the node is known
to speak 3.1.1 only for the rest of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import RentgateError

log = logging.getLogger(__name__)

MQTT_V5 = "5"
MQTT_V311 = "3.1.1"
MQTT_AUTO = "auto"
_UNSUPPORTED_PROTOCOL = 0x84
"""CONNACK reason "unsupported protocol version" (paho maps 3.1.1's return code 1 to it)."""


class LinkLostError(RentgateError):
    """The session ended before the broker answered."""


class ProtocolRefusedError(LinkLostError):
    """The broker refused an MQTT 5 CONNECT: it may speak 3.1.1 only."""


@dataclass(frozen=True)
class TlsSettings:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            context.load_cert_chain(
                str(self.cert_file), str(self.key_file) if self.key_file else None
            )
        return context


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    client_id: str
    tls: TlsSettings | None = None
    protocol: str = MQTT_V5
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = None
    reconnect_max_s: float = 30.0
    connect_timeout_s: float = 10.0

    @property
    def url(self) -> str:
        """The broker's URL, as status and metrics name it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls is not None else 'mqtt'}://{host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, client_id: str, **options: object) -> BrokerSettings:
        """`mqtt://host:port` or `mqtts://host:port`; TLS only and always for mqtts."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("broker URL must be mqtt://host[:port] or mqtts://host[:port]")
        secure = parts.scheme == "mqtts"
        tls = options.pop("tls", None)
        if secure and tls is None:
            tls = TlsSettings()
        if not secure and tls is not None:
            raise ValueError("TLS files given for a plaintext mqtt:// URL; use mqtts://")
        port = parts.port or (8883 if secure else 1883)
        return cls(parts.hostname, port, client_id, tls, **options)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes


@dataclass(frozen=True)
class Incoming:
    """A message the broker delivered on a subscription, with its MQTT 5 request properties."""

    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None


@dataclass(frozen=True)
class Subscriptions:
    """Topic filters subscribed at QoS 1 in every session, and who receives their messages.

    `received` is called in paho's network thread, for every message: it must be
    thread-safe and cheap, and cross to the event loop itself (`call_soon_threadsafe`)
    with what deserves it. Judging there keeps a flood off the loop that decides doors.
    """

    filters: tuple[str, ...]
    received: Callable[[Incoming], None]


class Session:
    """One connected MQTT session. Publishes resolve on PUBACK, or fail when it ends."""

    def __init__(self, client: paho.Client, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop
        self._pending: dict[int, asyncio.Future[ReasonCode | int]] = {}
        self._early: dict[int, ReasonCode | int] = {}
        self.closed = asyncio.Event()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> asyncio.Future[ReasonCode | int]:
        """Send a message; the future resolves with the PUBACK's reason code."""
        future: asyncio.Future[ReasonCode | int] = self._loop.create_future()
        if self.closed.is_set():
            future.set_exception(LinkLostError("session is closed"))
            return future
        properties = None
        if correlation_data is not None and self._client.protocol == paho.MQTTv5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation_data
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_QUEUE_SIZE):
            future.set_exception(LinkLostError(f"publish refused: {paho.error_string(info.rc)}"))
            return future
        if qos == 0:
            future.set_result(0)
        elif info.mid in self._early:  # the ack crossed threads before we got here
            future.set_result(self._early.pop(info.mid))
        else:
            self._pending[info.mid] = future
        return future

    def acked(self, mid: int, code: ReasonCode | int) -> None:
        future = self._pending.pop(mid, None)
        if future is None:
            self._early[mid] = code
        elif not future.done():
            future.set_result(code)

    def lost(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(LinkLostError(reason))
        self._pending.clear()

    def disconnect(self, *, with_will: bool = False) -> None:
        """End the session. Cleanly, the broker drops the Will; `with_will` asks it to
        publish the Will (MQTT 5 reason 0x04; on 3.1.1 the socket is simply dropped)."""
        if not with_will:
            self._client.disconnect()
        elif self._client.protocol == paho.MQTTv5:
            self._client.disconnect(
                ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
            )
        else:
            sock = self._client.socket()
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    @property
    def in_flight(self) -> int:
        return len(self._pending)


def backoff_delay(attempt: int, cap: float) -> float:
    """Full jitter: uniform over [0, min(cap, 0.5 * 2**attempt)]."""
    return random.uniform(0, min(cap, 0.5 * 2 ** min(attempt, 16)))  # noqa: S311


class MqttLink:
    """Keeps a session to one of the brokers, handing each new one to the caller."""

    def __init__(
        self,
        brokers: Sequence[BrokerSettings],
        will: Callable[[], Will],
        *,
        inflight_window: int = 16,
        subscriptions: Subscriptions | None = None,
    ) -> None:
        if not brokers:
            raise ValueError("an MQTT link needs at least one broker")
        self._brokers = tuple(brokers)
        self._will = will
        self._window = inflight_window
        self._subscriptions = subscriptions
        self._current = 0
        self._v311_only: set[int] = set()
        """Nodes on protocol "auto" that refused MQTT 5 and took 3.1.1 (for this process)."""
        self.connected = False
        self.reconnects = 0
        self.failovers = 0
        """Moves from one node to the next (after a failed attempt or a lost session)."""
        self.last_error: str | None = None
        self.broker_url: str | None = None
        """The node of the current session (or of the last one, while reconnecting)."""
        self.protocol: str | None = None
        """The MQTT version the current (or last) session speaks: "5" or "3.1.1"."""

    async def sessions(self) -> AsyncGenerator[Session, None]:
        """Yield each new session; the caller uses it until `closed` is set."""
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            broker = self._brokers[self._current]
            try:
                client, session, protocol = await self._connect_node(loop, self._current)
            except (OSError, ssl.SSLError, LinkLostError, TimeoutError) as exc:
                self.last_error = f"{broker.url}: {type(exc).__name__}: {exc}"
                log.warning("broker %s unreachable: %s", broker.url, f"{type(exc).__name__}: {exc}")
                self._next_node()
            else:
                attempt = 0
                self.connected = True
                self.broker_url, self.protocol = broker.url, protocol
                try:
                    yield session
                    await session.closed.wait()
                finally:
                    self.connected = False
                    session.lost("session ended")
                    await self._stop_surely(client)
                self.reconnects += 1
                self._next_node()
            delay = backoff_delay(attempt, broker.reconnect_max_s)
            attempt += 1
            await asyncio.sleep(delay)

    def _next_node(self) -> None:
        if len(self._brokers) > 1:
            self._current = (self._current + 1) % len(self._brokers)
            self.failovers += 1

    async def _connect_node(
        self, loop: asyncio.AbstractEventLoop, index: int
    ) -> tuple[paho.Client, Session, str]:
        """Connect to one node in its protocol; on "auto", 5, else 3.1.1 if 5 is refused."""
        broker = self._brokers[index]
        if broker.protocol != MQTT_AUTO:
            return (*await self._connect(loop, broker, broker.protocol), broker.protocol)
        if index not in self._v311_only:
            try:
                return (*await self._connect(loop, broker, MQTT_V5), MQTT_V5)
            except ProtocolRefusedError as exc:
                log.info("broker %s refused MQTT 5 (%s); trying 3.1.1", broker.url, exc)
        connected = await self._connect(loop, broker, MQTT_V311)
        if index not in self._v311_only:
            self._v311_only.add(index)
            log.warning(
                "broker %s speaks MQTT 3.1.1 only: using 3.1.1 there from now on (no PUBACK"
                " reason codes, no response topics: replies go to cmd-reply)",
                broker.url,
            )
        return (*connected, MQTT_V311)

    async def _stop_surely(self, client: paho.Client) -> None:
        """Stop a client off the loop, and finish doing so even if we are being cancelled.

        Cancellation (the gateway stopping) usually arrives right here: without the
        shield the stop would be abandoned and paho's thread and sockets left behind.
        """
        stopping = asyncio.ensure_future(asyncio.to_thread(self._stop, client))
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError:
            await stopping
            raise

    @staticmethod
    def _stop(client: paho.Client) -> None:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
        # The callbacks close over the client and its session: break that cycle. paho
        # closes its wake-up socket pair only in __del__, and a client still caught in
        # a cycle (an exception's traceback can hold it) would keep the pair open until
        # the cyclic collector runs; close it now, the thread that used it has ended.
        client.on_connect = client.on_disconnect = client.on_publish = None
        client.on_message = None
        close_wakeup_pair = getattr(client, "_reset_sockets", None)
        if close_wakeup_pair is not None:
            close_wakeup_pair(sockpair_only=True)

    def _new_client(self, settings: BrokerSettings, protocol: str) -> paho.Client:
        v5 = protocol == MQTT_V5
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else True,
        )
        client.max_inflight_messages_set(max(self._window + 4, 20))
        client.max_queued_messages_set(0)
        client.connect_timeout = settings.connect_timeout_s
        if settings.tls is not None:
            client.tls_set_context(settings.tls.context())
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        will = self._will()
        client.will_set(will.topic, will.payload, qos=1, retain=True)
        return client

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, settings: BrokerSettings, protocol: str
    ) -> tuple[paho.Client, Session]:
        client = self._new_client(settings, protocol)
        session = Session(client, loop)
        connack: asyncio.Future[tuple[bool, ReasonCode]] = loop.create_future()

        subscriptions = self._subscriptions

        def on_connect(
            _c: paho.Client, _u: object, _f: object, code: ReasonCode, _p: object
        ) -> None:
            if subscriptions is not None and not code.is_failure:
                client.subscribe([(topic, 1) for topic in subscriptions.filters])
            loop.call_soon_threadsafe(_settle, connack, (True, code))

        def on_message(_c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
            if subscriptions is None:
                return
            properties = getattr(message, "properties", None)
            incoming = Incoming(
                message.topic,
                bytes(message.payload),
                getattr(properties, "ResponseTopic", None),
                getattr(properties, "CorrelationData", None),
            )
            try:
                subscriptions.received(incoming)
            except Exception:  # an escaping error would end paho's thread, and the session
                log.exception("message on %s not handled", message.topic[:120])

        def on_disconnect(
            _c: paho.Client, _u: object, _f: object, code: ReasonCode, _p: object
        ) -> None:
            client.loop_stop()  # no reconnect inside paho: the next session is a new client
            loop.call_soon_threadsafe(session.lost, f"disconnected: {code}")
            loop.call_soon_threadsafe(_settle, connack, (False, code))

        def on_publish(_c: paho.Client, _u: object, mid: int, code: ReasonCode, _p: object) -> None:
            loop.call_soon_threadsafe(session.acked, mid, code)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        try:
            await asyncio.to_thread(
                client.connect, settings.host, settings.port, settings.keepalive_s
            )
        except BaseException:
            client.on_connect = client.on_disconnect = client.on_publish = None
            client.on_message = None
            raise
        client.loop_start()
        try:
            try:
                answered, code = await asyncio.wait_for(connack, settings.connect_timeout_s)
            except TimeoutError:
                raise TimeoutError(f"no CONNACK within {settings.connect_timeout_s} s") from None
            refused_v5 = protocol == MQTT_V5 and (
                not answered or code.value == _UNSUPPORTED_PROTOCOL
            )
            if not answered:
                error = (ProtocolRefusedError if refused_v5 else LinkLostError)(
                    f"connection closed before CONNACK ({code}); a TLS client certificate"
                    " the broker rejects ends the connection this way"
                )
                raise error
            if refused_v5:
                raise ProtocolRefusedError(f"broker refused the connection: {code}")
            if code.is_failure or session.closed.is_set():
                raise LinkLostError(f"broker refused the connection: {code}")
        except BaseException:
            # Also when cancelled mid-connect (the gateway stopping): never leave a
            # paho thread and its sockets behind.
            await self._stop_surely(client)
            raise
        log.info("connected to broker %s (MQTT %s)", settings.url, protocol)
        return client, session


def _settle(
    future: asyncio.Future[tuple[bool, ReasonCode]], outcome: tuple[bool, ReasonCode]
) -> None:
    if not future.done():
        future.set_result(outcome)
