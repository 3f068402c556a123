"""Shared helpers for the tests: real brokers, real gateways, a platform-side subscriber."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import Config, load_config
from gateway.domain.credentials import CredentialKind, parse_credential
from gateway.domain.ids import IdNumber, check_character
from gateway.domain.people import CredentialGrant, Enrolment, Tenancy
from gateway.domain.sealed_box import OpeningKey
from gateway.ops.status import read_status_file
from gateway.runtime.gateway import Gateway
from gateway.runtime.parts import open_store
from gateway.store import allowlist, outbox, registry
from gateway.store.db import connect, transaction
from gateway.store.outbox import OutboxStats

SH = datetime.now().astimezone().tzinfo


T = TypeVar("T")


def make_id_number(serial: int, region: str = "341002", birth: str = "19900101") -> IdNumber:
    """A valid ID number, distinct per serial (0..999)."""
    first17 = f"{region}{birth}{serial % 1000:03d}"
    return IdNumber(first17 + check_character(first17))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stats_of(database: Path) -> OutboxStats:
    """Outbox head, delivery cursor and oldest unsent event, as `rentgate status` reads them."""
    conn = connect(database, readonly=True)
    try:
        return outbox.stats(conn)
    finally:
        conn.close()


def allowlist_version(database: Path) -> int:
    """The version of the platform's allowlist snapshot in force in the store."""
    conn = connect(database, readonly=True)
    try:
        return allowlist.state(conn).version
    finally:
        conn.close()


def wait_for_index(gateway: Gateway, timeout: float = 15) -> None:
    """Until the running gateway's access index reflects every registry change so far."""

    def caught_up() -> bool:
        conn = connect(gateway.config.gateway.database, readonly=True)
        try:
            version = registry.registry_version(conn)
        finally:
            conn.close()
        return bool(gateway.registry_version >= version)

    wait_until(caught_up, timeout, "the access index caught up with the registry")


def write_taps(fifo_path: Path, cards: list[str], timeout: float = 10) -> None:
    """Write card lines to the reader FIFO once the gateway has it open (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo_path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    try:
        os.write(fd, b"".join(card.encode() + b"\r\n" for card in cards))
    finally:
        os.close(fd)


def write_config(
    directory: Path,
    broker_url: str | list[str],
    *,
    gateway_id: str = "GW-TEST",
    extra_mqtt: str = "",
    credential: str = "card_uid",
    reader_path: Path | None = None,
    extra: str = "",
    sealing: bool = True,
) -> Path:
    """A gateway config with one line reader on a FIFO at the front door.

    With `sealing`, the platform's encryption key pair is made in `directory`
    (`platform_encryption_key` opens what the gateway seals) and configured as
    `[platform] encryption_key`, as every gateway taking captures must have.
    A list of broker URLs becomes `[mqtt] urls`, a cluster.
    """
    reader = reader_path or directory / "front.reader"
    if reader_path is None and not reader.exists():
        os.mkfifo(reader, 0o600)
    platform = ""
    if sealing:
        line = f'encryption_key = "{platform_encryption_key(directory).public_path}"\n'
        if "[platform]\n" in extra:
            extra = extra.replace("[platform]\n", "[platform]\n" + line, 1)
        else:
            platform = "[platform]\n" + line
    if isinstance(broker_url, list):
        brokers = "urls = [" + ", ".join(f'"{url}"' for url in broker_url) + "]"
    else:
        brokers = f'url = "{broker_url}"'
    path = directory / "gateway.toml"
    path.write_text(
        f"""
[gateway]
id = "{gateway_id}"
data_dir = "{directory / "data"}"
commit_window_ms = 2

[mqtt]
{brokers}
reconnect_max_s = 1
{extra_mqtt}

[api]
listen = "127.0.0.1:0"

{platform}
[[devices]]
kind = "line"
door = "front"
path = "{reader}"
credential = "{credential}"
{extra}
""",
        encoding="utf-8",
    )
    return path


@dataclass(frozen=True)
class PlatformEncryptionKey:
    """The platform's encryption key pair of a test directory (made once, then reused)."""

    opening: OpeningKey
    public_path: Path


def platform_encryption_key(directory: Path) -> PlatformEncryptionKey:
    """The platform's X25519 key pair kept in `directory`/platform-encryption."""
    folder = directory / "platform-encryption"
    existing = sorted(folder.glob("x-*.key")) if folder.exists() else []
    if existing:
        key = OpeningKey.load(existing[0])
        return PlatformEncryptionKey(key, existing[0].with_suffix(".pub"))
    key = OpeningKey.generate()
    _private, public = key.save(folder)
    return PlatformEncryptionKey(key, public)


def enrol_cards(config: Config, cards: list[str], unit: str = "1") -> None:
    """Enrol one tenant per card, with a tenancy valid for a year around now."""
    keys = open_store(config)
    now = datetime.now(SH)
    conn = connect(config.gateway.database)
    try:
        with transaction(conn):
            for serial, card in enumerate(cards):
                enrolment = Enrolment(
                    make_id_number(serial),
                    f"Tenant {serial}",
                    (CredentialGrant(parse_credential(CredentialKind.CARD_UID, card)),),
                    Tenancy(unit, now - timedelta(days=1), now + timedelta(days=365)),
                )
                registry.enrol(conn, keys, enrolment, now)
    finally:
        conn.close()


def access_decisions(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `access.decision` events among `events`, in their order."""
    return [event for event in events if event["type"] == "access.decision"]


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """The platform's side: a real MQTT subscriber that keeps everything it receives."""

    def __init__(
        self,
        port: int,
        topic: str = "rentgate/v1/#",
        client_id: str = "test-platform",
        *,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        protocol: paho.MQTTProtocolVersion = paho.MQTTv5,
    ) -> None:
        """`protocol` paho.MQTTv311 for a broker that speaks only 3.1.1 (NATS, RabbitMQ)."""
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        if tls_ca is not None:
            self._client.tls_set(
                ca_certs=str(tls_ca),
                certfile=str(tls_cert) if tls_cert else None,
                keyfile=str(tls_key) if tls_key else None,
            )
        self._client.on_message = self._on_message
        connected = threading.Event()
        self._client.on_connect = lambda *_a: connected.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not connected.wait(10):
            self._client.loop_stop()
            raise AssertionError("subscriber could not connect")
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.subscribe(topic, qos=1)
        if not subscribed.wait(10):
            raise AssertionError("subscription not acknowledged")

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, bytes(message.payload), message.retain))

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def envelopes(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.snapshot() if m.topic.endswith("/events")]

    def events(self) -> list[dict[str, Any]]:
        return [event for envelope in self.envelopes() for event in envelope["events"]]

    def states(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.snapshot() if m.topic.endswith("/state")]

    def decisions(self) -> list[dict[str, Any]]:
        """The `access.decision` events received so far, in the order they arrived."""
        return access_decisions(self.events())

    def unique_seqs(self) -> set[int]:
        return {event["seq"] for event in self.events()}

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
        # Our bound-method callbacks make a cycle with the client; break it so paho's
        # __del__ closes its wake-up socket pair now rather than in a later GC pass.
        self._client.on_message = self._client.on_connect = self._client.on_subscribe = None


class PersistentSubscriber(Subscriber):
    """A platform consumer with a persistent session, so the broker queues for it."""

    def __init__(self, port: int, topic: str, client_id: str = "persistent-platform") -> None:
        self.messages = []
        self._lock = threading.Lock()
        self._topic = topic
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
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


class InProcessGateway:
    """A real `Gateway` on its own event loop thread, stopped like SIGTERM would."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        self.gateway = Gateway(config, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="test-gateway", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.gateway.run(self._stop))
        except BaseException as exc:
            self._error = exc
        finally:
            self._loop.close()

    def start(self) -> InProcessGateway:
        self._thread.start()
        wait_until(self.gateway.ready.is_set, 10, "gateway ready")
        return self

    def stop(self, timeout: float = 30) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
        if self._error is not None:
            raise self._error

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the gateway's event loop thread, where its parts live."""
        self._loop.call_soon_threadsafe(callback)

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the gateway's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)

    def wait_connected(self, timeout: float = 15) -> None:
        """Until the uplink has a session with the broker."""
        gateway = self.gateway
        wait_until(
            lambda: gateway.uplink is not None and gateway.uplink.session is not None,
            timeout,
            "gateway connected",
        )

    def api_client(self, timeout: float = 10) -> httpx.Client:
        """An HTTPS client for the gateway's own API (its own certificate trusted), once the
        API listens; the caller closes it."""
        gateway = self.gateway
        wait_until(lambda: gateway.api_server.url is not None, timeout, "the API listening")
        trust = ssl.create_default_context(cafile=str(gateway.api_certificate))
        return httpx.Client(base_url=str(gateway.api_server.url), verify=trust, timeout=timeout)

    def __enter__(self) -> InProcessGateway:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class GatewayProcess:
    """`rentgate run` in a child process, for kill -9 and signal tests."""

    def __init__(self, config_path: Path, log_path: Path, *, web: str = "child") -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.web = web
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["run", "--config", str(self.config_path), "--web", self.web]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *command],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def wait_running(self, status_file: Path, timeout: float = 20) -> None:
        """Until this process says in its status file that it runs (its signal handlers are
        set by then: a SIGTERM sent earlier, during start-up, kills it instead)."""
        assert self.process is not None
        pid = self.process.pid

        def running() -> bool:
            status = read_status_file(status_file)
            return status is not None and status.running and status.pid == pid

        wait_until(running, timeout, "the gateway process running")

    def terminate(self, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout)


def load(config_path: Path) -> Config:
    return load_config(config_path, environ={})
