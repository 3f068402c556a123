"""A broker that takes publishes but never PUBACKs them: nothing is marked delivered.

The stand-in broker is a plain socket: it answers CONNECT with a CONNACK in the
client's protocol version, PINGREQ with PINGRESP, grants every SUBSCRIBE at
QoS 1 (the gateway subscribes to its command topics), and keeps every PUBLISH.
It never acknowledges an event envelope. Afterwards a new gateway on the same data
directory, pointed at a real Mosquitto, delivers every event: the unacknowledged
session lost nothing.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    access_decisions,
    enrol_cards,
    load,
    stats_of,
    wait_until,
    write_config,
    write_taps,
)

CARD = "04A1B2C3D4"
TAPS = [CARD, "04DEADBEEF", CARD, CARD, "04DEADBEEF", CARD]
RESULTS = ["allow", "deny", "allow", "allow", "deny", "allow"]
PROTOCOL_LEVEL = {"5": 5, "3.1.1": 4}

CONNECT, PUBLISH, SUBSCRIBE, PINGREQ, DISCONNECT = 1, 3, 8, 12, 14


# ------------------------------------------------------------------- stand-in


@dataclass(frozen=True)
class Publish:
    topic: str
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None
    payload: bytes


def _suback(body: bytes, *, v5: bool) -> bytes:
    """A SUBACK granting QoS 1 to every topic filter of a SUBSCRIBE body."""
    packet_id, position = body[0:2], 2
    if v5:
        length, shift = 0, 0
        while True:  # the properties' variable-length size, then skip them
            byte = body[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        position += length
    filters = 0
    while position < len(body):
        position += 2 + int.from_bytes(body[position : position + 2], "big") + 1
        filters += 1
    payload = packet_id + (b"\x00" if v5 else b"") + b"\x01" * filters
    return bytes([0x90, len(payload)]) + payload


class ConnectionClosedError(Exception):
    """The client went away, or the stand-in is stopping."""


def _varint(data: bytes, start: int) -> tuple[int, int]:
    """An MQTT variable byte integer at `start`: (value, bytes used)."""
    value, shift = 0, 0
    for used in range(4):
        byte = data[start + used]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, used + 1
        shift += 7
    raise ValueError("malformed variable byte integer")


class StandInBroker:
    """Just enough of an MQTT broker on 127.0.0.1 to hold a session that is never acked.

    `ack_topics`: QoS 1 publishes on these topics get a PUBACK; all others never do.
    """

    def __init__(self, ack_topics: frozenset[str] = frozenset()) -> None:
        self._ack_topics = ack_topics
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._publishes: list[Publish] = []
        self.protocol_levels: list[int] = []
        self.pings = 0
        self.subscriptions = 0
        self.pubacks_sent = 0
        self.goodbyes: list[str] = []
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="stand-in", daemon=True)
        self._accepter.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def publishes(self, topic: str | None = None) -> list[Publish]:
        with self._lock:
            return [p for p in self._publishes if topic is None or p.topic == topic]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _recv_exact(self, conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            if self._stop.is_set():
                raise ConnectionClosedError
            try:
                chunk = conn.recv(size - len(data))
            except TimeoutError:
                continue
            except OSError as exc:
                raise ConnectionClosedError from exc
            if not chunk:
                raise ConnectionClosedError
            data += chunk
        return data

    def _read_packet(self, conn: socket.socket) -> tuple[int, int, bytes]:
        first = self._recv_exact(conn, 1)[0]
        length, shift = 0, 0
        for _ in range(4):
            byte = self._recv_exact(conn, 1)[0]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        else:
            raise ValueError("malformed remaining length")
        return first >> 4, first & 0x0F, self._recv_exact(conn, length)

    def _serve(self, conn: socket.socket) -> None:
        level = 0
        conn.settimeout(0.1)
        with conn:
            try:
                while True:
                    kind, flags, body = self._read_packet(conn)
                    if kind == CONNECT:
                        name_length = int.from_bytes(body[0:2], "big")
                        level = body[2 + name_length]
                        with self._lock:
                            self.protocol_levels.append(level)
                        # CONNACK: session present 0, success; MQTT 5 adds an empty property set.
                        conn.sendall(b"\x20\x03\x00\x00\x00" if level == 5 else b"\x20\x02\x00\x00")
                    elif kind == PUBLISH:
                        publish = self._parse_publish(flags, body, v5=level == 5)
                        with self._lock:
                            self._publishes.append(publish)
                        if publish.packet_id is not None and publish.topic in self._ack_topics:
                            conn.sendall(b"\x40\x02" + publish.packet_id.to_bytes(2, "big"))
                            with self._lock:
                                self.pubacks_sent += 1
                    elif kind == SUBSCRIBE:
                        conn.sendall(_suback(body, v5=level == 5))
                        with self._lock:
                            self.subscriptions += 1
                    elif kind == PINGREQ:
                        conn.sendall(b"\xd0\x00")
                        with self._lock:
                            self.pings += 1
                    elif kind == DISCONNECT:
                        reason = body[0] if body else 0
                        with self._lock:
                            self.goodbyes.append(f"DISCONNECT 0x{reason:02x}")
                        return
                    else:
                        with self._lock:
                            self.errors.append(f"unexpected packet type {kind}")
            except ConnectionClosedError:
                if not self._stop.is_set():
                    with self._lock:
                        self.goodbyes.append("dropped")
                return
            except (ValueError, IndexError, OSError) as exc:
                with self._lock:
                    self.errors.append(repr(exc))

    @staticmethod
    def _parse_publish(flags: int, body: bytes, *, v5: bool) -> Publish:
        qos = (flags >> 1) & 0x03
        topic_length = int.from_bytes(body[0:2], "big")
        topic = body[2 : 2 + topic_length].decode("utf-8")
        position = 2 + topic_length
        packet_id = None
        if qos:
            packet_id = int.from_bytes(body[position : position + 2], "big")
            position += 2
        if v5:
            properties, used = _varint(body, position)
            position += used + properties
        return Publish(
            topic, qos, bool(flags & 0x01), bool(flags & 0x08), packet_id, body[position:]
        )

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accepter.join(5)
        for thread in self._threads:
            thread.join(5)


# ------------------------------------------------------------------- helpers


def events_in(publishes: list[Publish]) -> list[dict[str, Any]]:
    return [event for p in publishes for event in json.loads(p.payload)["events"]]


def redeliver_everything(
    config_path: Path, broker: LocalBroker, gateway_id: str, head_before: int
) -> list[dict[str, Any]]:
    """Run a new gateway (same config and data, URL overridden) against a real broker.

    Returns the events the platform received, once every one of them is delivered.
    """
    config = load_config(config_path, environ={"RENTGATE_MQTT__URL": broker.url})
    assert config.mqtt.url == broker.url
    platform = Subscriber(broker.port, f"rentgate/v1/{gateway_id}/#", f"{gateway_id}-platform")
    try:
        with InProcessGateway(config):

            def all_delivered() -> bool:
                stats = stats_of(config.gateway.database)
                seqs = platform.unique_seqs()
                return (
                    stats.head_seq >= head_before
                    and stats.delivered_seq == stats.head_seq
                    and seqs == set(range(1, stats.head_seq + 1))
                )

            wait_until(all_delivered, 20, "every event delivered by the new gateway")
        return platform.events()
    finally:
        platform.close()


def assert_same_events_resent(
    resent: list[dict[str, Any]], unacked: list[dict[str, Any]], head_before: int
) -> None:
    seqs = [event["seq"] for event in resent]
    assert seqs == list(range(1, len(seqs) + 1)), "in order, contiguous, nothing twice"
    assert len(seqs) >= head_before
    by_seq = {event["seq"]: event for event in unacked}
    for event in resent[:head_before]:
        if event["seq"] in by_seq:
            assert event == by_seq[event["seq"]], "the same event, byte for byte, under its seq"
    assert [d["result"] for d in access_decisions(resent)] == RESULTS


# --------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("protocol", "ack_state"),
    [("5", False), ("3.1.1", False), ("5", True)],
    ids=["mqtt5-never-acks", "mqtt311-never-acks", "mqtt5-acks-state-only"],
)
def test_published_but_never_acked_events_stay_undelivered(
    tmp_path: Path, own_broker: LocalBroker, protocol: str, ack_state: bool
) -> None:
    """Every envelope reaches the broker, no PUBACK ever comes: the cursor stays at 0.

    With `ack_state` the stand-in acknowledges the retained state messages (birth,
    goodbye) but still nothing on the events topic, so the gateway leaves cleanly;
    otherwise its goodbye goes unacknowledged too and it leaves with its Will.
    """
    suffix = {"5": "5", "3.1.1": "311"}[protocol] + ("-ACKS" if ack_state else "")
    gateway_id = f"GW-NOACK-{suffix}"
    events_topic = f"rentgate/v1/{gateway_id}/events"
    state_topic = f"rentgate/v1/{gateway_id}/state"
    stand_in = StandInBroker(ack_topics=frozenset({state_topic} if ack_state else ()))
    try:
        config_path = write_config(
            tmp_path,
            stand_in.url,
            gateway_id=gateway_id,
            # 7 s, not 5: a keepalive ping answered just as the 5 s goodbye gives up
            # would sit unread when the socket closes, and the kernel's RST would
            # throw away the DISCONNECT the stand-in is about to read.
            extra_mqtt=f'protocol = "{protocol}"\nkeepalive_s = 7',
        )
        config = load(config_path)
        enrol_cards(config, [CARD])
        with InProcessGateway(config) as running:
            uplink = running.gateway.uplink
            assert uplink is not None
            write_taps(tmp_path / "front.reader", TAPS)
            wait_until(
                lambda: (
                    len(access_decisions(events_in(stand_in.publishes(events_topic)))) >= len(TAPS)
                ),
                20,
                "every tap published to the stand-in",
            )
            # A bit more, across a keepalive: the session stays up (PINGREQ answered),
            # nothing is acknowledged, nothing moves, nothing is sent twice.
            wait_until(lambda: stand_in.pings >= 1, 15, "a PINGREQ answered")
            stats = stats_of(config.gateway.database)
            link_connected = uplink.link.connected
            reconnects = uplink.link.reconnects
            acked = (uplink.stats.envelopes_acked, uplink.stats.events_acked)
            cursor_in_memory = uplink.stats.delivered_seq
            published = uplink.stats.envelopes_published
        after_stop = stats_of(config.gateway.database)
        event_publishes = stand_in.publishes(events_topic)
        state_publishes = stand_in.publishes(state_topic)
        protocol_levels = list(stand_in.protocol_levels)
        goodbyes = list(stand_in.goodbyes)
        pubacks_sent = stand_in.pubacks_sent
        errors = list(stand_in.errors)
    finally:
        stand_in.close()

    assert errors == []
    assert protocol_levels == [PROTOCOL_LEVEL[protocol]], "one session, in the configured version"
    assert link_connected
    assert reconnects == 0
    unacked = events_in(event_publishes)
    seqs = [event["seq"] for event in unacked]
    assert seqs == list(range(1, len(seqs) + 1)), "each event sent once, in order"
    assert [d["result"] for d in access_decisions(unacked)] == RESULTS
    assert published == len(event_publishes)
    for publish in event_publishes:
        assert publish.qos == 1
        assert publish.packet_id
        assert not publish.retain
        assert not publish.dup, "nothing was re-sent within the session"
    assert len({p.packet_id for p in event_publishes}) == len(event_publishes)

    assert stats.delivered_seq == 0, "nothing is delivered without a PUBACK"
    assert stats.head_seq == len(seqs), "every event in the outbox was published"
    assert acked == (0, 0)
    assert cursor_in_memory == 0
    assert after_stop.delivered_seq == 0
    assert after_stop.head_seq == stats.head_seq

    birth, goodbye = state_publishes[0], state_publishes[-1]
    assert len(state_publishes) == 2
    assert birth.retain
    assert birth.qos == 1
    assert json.loads(birth.payload)["online"] is True
    assert json.loads(birth.payload)["backlog"] >= 0
    assert json.loads(goodbye.payload)["online"] is False
    if ack_state:
        assert pubacks_sent == 2
        assert goodbyes == ["DISCONNECT 0x00"], "acknowledged goodbye: a clean disconnect"
    elif protocol == "5":
        assert pubacks_sent == 0
        assert goodbyes == ["DISCONNECT 0x04"], "unacknowledged goodbye: disconnect with Will"
    else:
        assert pubacks_sent == 0
        assert goodbyes == ["dropped"], "MQTT 3.1.1 has no 0x04: the socket is dropped"

    resent = redeliver_everything(config_path, own_broker, gateway_id, stats.head_seq)
    assert_same_events_resent(resent, unacked, stats.head_seq)


def test_a_broker_that_stops_acknowledging_gets_a_new_session(tmp_path: Path) -> None:
    """No PUBACK within ack_timeout_s: the session is ended and the envelope sent again."""
    gateway_id = "GW-NOACK-TIMEOUT"
    events_topic = f"rentgate/v1/{gateway_id}/events"
    stand_in = StandInBroker()
    try:
        config = load(
            write_config(
                tmp_path, stand_in.url, gateway_id=gateway_id, extra_mqtt="ack_timeout_s = 1"
            )
        )
        enrol_cards(config, [CARD])
        with InProcessGateway(config) as running:
            uplink = running.gateway.uplink
            assert uplink is not None
            write_taps(tmp_path / "front.reader", TAPS)
            wait_until(lambda: len(stand_in.protocol_levels) >= 3, 30, "two new sessions")
            wait_until(
                lambda: (
                    len(access_decisions(events_in(stand_in.publishes(events_topic))))
                    >= 2 * len(TAPS)
                ),
                20,
                "the taps sent again in a later session",
            )
            reconnects = uplink.link.reconnects
        after = stats_of(config.gateway.database)
        resent = events_in(stand_in.publishes(events_topic))
    finally:
        stand_in.close()
    assert reconnects >= 2
    assert after.delivered_seq == 0, "still nothing acknowledged, still nothing delivered"
    first_ids = {event["seq"]: event["id"] for event in resent}
    assert all(first_ids[event["seq"]] == event["id"] for event in resent), "same event per seq"
    assert sorted(first_ids) == list(range(1, after.head_seq + 1))
