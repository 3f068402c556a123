"""Broker identities and ACLs (issue 13, part 4): the shipped Mosquitto rules, for real.

The tester's finding: any broker client could publish commands and read other gateways'
commands (no identities, no ACL). Here a Mosquitto runs the shipped
`config/mosquitto/rentgate.conf` (TLS, `require_certificate`, `use_identity_as_username`)
and `rentgate.acl` on a free loopback port, with identities issued by
`rentgate platform provision` from a throwaway CA (tests/support/pki.py).
"""

from __future__ import annotations

import json
import queue
import shutil
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.cli import main
from gateway.domain.signed_commands import CommandName, sign
from gateway.sync.link import BrokerSettings, TlsSettings
from gateway.sync.local_broker import LocalBroker, free_port
from gateway.sync.platform_client import PlatformClient
from tests.support.gateway import InProcessGateway, load, wait_until, write_config, write_taps
from tests.support.pki import Pki, make_pki
from tests.support.platform import key_file

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "mosquitto"
GW_A, GW_B, PLATFORM = "GW-A", "GW-B", "platform-main"


@dataclass(frozen=True)
class Identities:
    pki: Pki
    directory: Path

    def cert(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"


def shipped_listener(directory: Path, port: int, pki: Pki) -> str:
    """The shipped rentgate.conf, its files copied to `directory`, listening on loopback."""
    for source, name in (
        (pki.ca, "ca.pem"),
        (pki.server_cert, "server.pem"),
        (pki.server_key, "server.key"),
        (SHIPPED / "rentgate.acl", "rentgate.acl"),
    ):
        shutil.copy(source, directory / name)
    text = (SHIPPED / "rentgate.conf").read_text(encoding="utf-8")
    assert "listener 8883\n" in text
    text = text.replace("/etc/mosquitto/rentgate/", f"{directory}/")
    return text.replace("listener 8883\n", f"listener {port} 127.0.0.1\n")


@pytest.fixture(scope="module")
def identities(tmp_path_factory: pytest.TempPathFactory) -> Identities:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    out = tmp_path_factory.mktemp("identities")
    ca = ["--ca-cert", str(pki.ca), "--ca-key", str(pki.ca_key), "--out", str(out)]
    for who in (["--gateway", GW_A], ["--gateway", GW_B], ["--platform", "main"]):
        assert main(["platform", "provision", *who, *ca]) == 0
    return Identities(pki, out)


@pytest.fixture(scope="module")
def acl_broker(
    identities: Identities, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalBroker]:
    workdir = tmp_path_factory.mktemp("mosquitto-acl")
    port = free_port()
    listener = shipped_listener(workdir, port, identities.pki)
    with LocalBroker(port, workdir=workdir, listener_config=listener) as running:
        yield running


class Client:
    """An MQTT 5 client over TLS with a client certificate, collecting what it receives."""

    def __init__(
        self, port: int, identities: Identities, name: str, client_id: str | None = None
    ) -> None:
        self.received: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.disconnected = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{name}", protocol=paho.MQTTv5
        )
        self._client.on_disconnect = lambda *_a: self.disconnected.set()
        self._client.tls_set(
            ca_certs=str(identities.pki.ca),
            certfile=str(identities.cert(name)),
            keyfile=str(identities.key(name)),
        )
        self._client.on_message = lambda _c, _u, message: self.received.put(message)
        connected, self._subscribed = threading.Event(), threading.Event()
        self._client.on_connect = lambda *_a: connected.set()
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        assert connected.wait(10), f"{name} could not connect"

    def subscribe(self, *filters: str) -> None:
        self._subscribed.clear()
        self._client.subscribe([(f, 1) for f in filters])
        assert self._subscribed.wait(10), "no SUBACK"

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(10)

    def until(self, topic: str, timeout: float = 10) -> list[str]:
        """Topics received up to and including the first message on `topic`."""
        seen: list[str] = []
        while True:
            message = self.received.get(timeout=timeout)
            seen.append(message.topic)
            if message.topic == topic:
                return seen

    def close(self) -> None:
        self._client.on_message = self._client.on_connect = self._client.on_subscribe = None
        self._client.on_disconnect = None
        _close(self._client)


def _close(client: paho.Client) -> None:
    """Disconnect, stop, and close paho's wake-up socket pair now (as `MqttLink` does), not
    whenever the garbage collector gets to a client caught in a cycle."""
    client.disconnect()
    client.loop_stop()
    close_wakeup_pair = getattr(client, "_reset_sockets", None)
    if close_wakeup_pair is not None:
        close_wakeup_pair(sockpair_only=True)


def connect_outcome(port: int, ca: Path, cert: Path | None = None, key: Path | None = None) -> str:
    """What the broker says to a TLS client with this certificate (or none)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-anon", protocol=paho.MQTTv5)
    client.tls_set(
        ca_certs=str(ca), certfile=str(cert) if cert else None, keyfile=str(key) if key else None
    )
    outcome: queue.Queue[str] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, code, _p: outcome.put(f"connack {code}")
    client.on_disconnect = lambda _c, _u, _f, code, _p: outcome.put(f"disconnected {code}")
    try:
        client.connect("127.0.0.1", port)
        client.loop_start()
        return outcome.get(timeout=10)
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {exc}"
    except queue.Empty:
        return "no answer"
    finally:
        client.on_connect = client.on_disconnect = None
        _close(client)


def test_a_client_without_a_certificate_from_the_ca_cannot_connect(
    acl_broker: LocalBroker, identities: Identities
) -> None:
    pki = identities.pki
    assert connect_outcome(acl_broker.port, pki.ca) != "connack Success"
    assert (
        connect_outcome(acl_broker.port, pki.ca, pki.other_client_cert, pki.other_client_key)
        != "connack Success"
    )
    issued = connect_outcome(acl_broker.port, pki.ca, identities.cert(GW_A), identities.key(GW_A))
    assert issued == "connack Success"  # the control: the same broker, an issued certificate


def test_a_gateway_cannot_publish_as_another_or_read_its_commands(
    acl_broker: LocalBroker, identities: Identities
) -> None:
    port = acl_broker.port
    platform = Client(port, identities, PLATFORM)
    gw_a, gw_b = Client(port, identities, GW_A), Client(port, identities, GW_B)
    try:
        platform.subscribe("rentgate/v1/#")
        gw_b.subscribe(f"rentgate/v1/{GW_B}/cmd/#")
        gw_a.subscribe(f"rentgate/v1/{GW_A}/cmd/#", f"rentgate/v1/{GW_B}/cmd/#", "rentgate/v1/#")
        # GW-A speaks as GW-B, and sends GW-B a command; then says one thing as itself.
        for topic in ("events", "state", "cmd-reply", "cmd/door.unlock"):
            gw_a.publish(f"rentgate/v1/{GW_B}/{topic}", b'{"forged":true}')
        gw_a.publish(f"rentgate/v1/{GW_A}/events", b'{"marker":true}')
        heard = platform.until(f"rentgate/v1/{GW_A}/events")
        assert [t for t in heard if GW_B in t] == []
        # The platform sends GW-B a command, then GW-A one: GW-B gets its own and nothing
        # forged before it; GW-A gets its own and nothing of GW-B's before it.
        platform.publish(f"rentgate/v1/{GW_B}/cmd/resync", b"{}")
        platform.publish(f"rentgate/v1/{GW_A}/cmd/resync", b"{}")
        assert gw_b.until(f"rentgate/v1/{GW_B}/cmd/resync") == [f"rentgate/v1/{GW_B}/cmd/resync"]
        assert gw_a.until(f"rentgate/v1/{GW_A}/cmd/resync") == [f"rentgate/v1/{GW_A}/cmd/resync"]
        # And a gateway may not send commands even to itself: only the platform may.
        gw_a.publish(f"rentgate/v1/{GW_A}/cmd/door.unlock", b'{"forged":true}')
        gw_a.publish(f"rentgate/v1/{GW_A}/events", b'{"marker":2}')
        heard = platform.until(f"rentgate/v1/{GW_A}/events")
        assert [t for t in heard if t.endswith("/door.unlock")] == []
    finally:
        for client in (platform, gw_a, gw_b):
            client.close()


def test_a_gateway_cannot_take_over_another_gateways_session_by_its_client_id(
    acl_broker: LocalBroker, identities: Identities
) -> None:
    """Mosquitto ends a session when another connects with the same client id; the client
    id is the certificate's CN (use_username_as_clientid), so GW-A asking for "GW-B" gets
    "GW-A" and GW-B stays connected."""
    port = acl_broker.port
    gw_b = Client(port, identities, GW_B, client_id=GW_B)
    platform = Client(port, identities, PLATFORM)
    try:
        gw_b.subscribe(f"rentgate/v1/{GW_B}/cmd/#")
        intruder = Client(port, identities, GW_A, client_id=GW_B)
        intruder.close()
        platform.publish(f"rentgate/v1/{GW_B}/cmd/resync", b"{}")
        assert gw_b.until(f"rentgate/v1/{GW_B}/cmd/resync") == [f"rentgate/v1/{GW_B}/cmd/resync"]
        assert not gw_b.disconnected.is_set()
    finally:
        gw_b.close()
        platform.close()


def test_a_gateway_with_its_issued_certificate_sends_events_and_takes_a_signed_command(
    acl_broker: LocalBroker, identities: Identities, tmp_path: Path
) -> None:
    key, public = key_file(tmp_path / "platform-key")
    tls = (
        f'ca = "{identities.pki.ca}"\n'
        f'cert = "{identities.cert(GW_A)}"\nkey = "{identities.key(GW_A)}"'
    )
    path = write_config(
        tmp_path,
        f"mqtts://127.0.0.1:{acl_broker.port}",
        gateway_id=GW_A,
        extra_mqtt=tls,
        extra=f'[platform]\nkeys = ["{public}"]\n',
    )
    settings = BrokerSettings.from_url(
        f"mqtts://127.0.0.1:{acl_broker.port}",
        "platform-main",
        tls=TlsSettings(identities.pki.ca, identities.cert(PLATFORM), identities.key(PLATFORM)),
    )
    with InProcessGateway(load(path)) as running, PlatformClient(settings) as platform:
        running.wait_connected()
        platform.subscribe(f"rentgate/v1/{GW_A}/events", f"rentgate/v1/{GW_A}/state")
        write_taps(tmp_path / "front.reader", ["04DEADBEEF"])
        events: list[dict[str, object]] = []
        states: list[dict[str, object]] = []
        for message in platform.messages(20):
            document = json.loads(message.payload)
            (events if message.topic.endswith("/events") else states).extend(
                document.get("events", [document]) if "events" in document else [document]
            )
            if any(e.get("type") == "access.decision" for e in events) and states:
                break
        assert [e["result"] for e in events if e.get("type") == "access.decision"] == ["deny"]
        assert states[-1]["online"] is True  # its retained birth on its own state topic
        now = int(running.gateway.clock.now().timestamp())
        signed = sign(
            key,
            gateway_id=GW_A,
            name=CommandName.DOOR_UNLOCK,
            body={"door": "front", "seconds": 2},
            now=now,
            ttl_s=30,
        )
        reply = platform.command(GW_A, "door.unlock", signed, timeout=20)
        assert reply is not None
        assert reply["ok"] is True
        lock = running.gateway.parts.devices.locks["front"]
        wait_until(lambda: [c.seconds for c in lock.commands] == [2.0], 10, "the door released")
