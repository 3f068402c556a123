"""The fleet benchmark's MQTT 3.1.1 codec (bench/mqtt_lite.py): encodings checked against
the standard's examples and round trips, and a real Mosquitto that must understand it."""

from __future__ import annotations

import socket
import time

import pytest

from bench import mqtt_lite as mq
from gateway.sync.local_broker import LocalBroker


def decode_all(data: bytes) -> list[mq.Packet]:
    return mq.Decoder().feed(data)


@pytest.mark.parametrize(
    ("length", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length_matches_the_standards_table(length: int, encoded: bytes) -> None:
    assert mq._remaining(length) == encoded


def test_remaining_length_beyond_four_bytes_is_refused() -> None:
    with pytest.raises(mq.ProtocolError):
        mq._remaining(268_435_456)
    with pytest.raises(mq.ProtocolError):
        mq.Decoder().feed(b"\x30\xff\xff\xff\xff\x01")


def test_connect_with_a_will_round_trips() -> None:
    data = mq.connect(
        "GW-0001",
        keepalive=30,
        will_topic="rentgate/v1/GW-0001/state",
        will_payload=b'{"online":false}',
        will_qos=1,
        will_retain=True,
    )
    (packet,) = decode_all(data)
    assert packet.kind == mq.CONNECT
    parsed = mq.parse_connect(packet)
    assert parsed == mq.Connect(
        "GW-0001", 30, True, "rentgate/v1/GW-0001/state", b'{"online":false}', 1, True
    )
    # flags: clean session, will, will QoS 1, will retain
    assert data[2 + 2 + 4 + 1] == 0x02 | 0x04 | 0x08 | 0x20


def test_publish_round_trips_at_qos_0_and_1_with_a_big_payload() -> None:
    payload = b"x" * 300_000  # a three-byte remaining length
    for qos, packet_id in ((0, 0), (1, 513)):
        (packet,) = decode_all(
            mq.publish("a/b", payload, qos=qos, packet_id=packet_id, retain=True)
        )
        message = mq.parse_publish(packet)
        assert message == mq.Publish("a/b", payload, qos, packet_id, True, False)
    with pytest.raises(mq.ProtocolError):
        mq.publish("a/b", b"", qos=1, packet_id=0)


def test_the_decoder_takes_packets_cut_anywhere() -> None:
    stream = (
        mq.connack(0)
        + mq.suback(7, [1])
        + mq.publish("rentgate/v1/GW-1/cmd/ack", b"{}" * 100, qos=1, packet_id=9)
        + mq.puback(9)
        + mq.PINGRESP_BYTES
    )
    for cut in range(1, 12):
        decoder = mq.Decoder()
        packets: list[mq.Packet] = []
        for start in range(0, len(stream), cut):
            packets += decoder.feed(stream[start : start + cut])
        assert [packet.kind for packet in packets] == [
            mq.CONNACK,
            mq.SUBACK,
            mq.PUBLISH,
            mq.PUBACK,
            mq.PINGRESP,
        ]
        assert decoder.pending == 0
        assert mq.parse_connack(packets[0]) == (False, 0)
        assert mq.parse_suback(packets[1]) == (7, [1])
        assert mq.parse_packet_id(packets[3]) == 9


class Client:
    """A blocking test client over the codec."""

    def __init__(self, port: int, client_id: str, **will: object) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.decoder = mq.Decoder()
        self.queue: list[mq.Packet] = []
        self.sock.sendall(mq.connect(client_id, keepalive=10, **will))  # type: ignore[arg-type]
        connack = self.expect(mq.CONNACK)
        assert mq.parse_connack(connack) == (False, 0)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def expect(self, kind: int) -> mq.Packet:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for index, packet in enumerate(self.queue):
                if packet.kind == kind:
                    return self.queue.pop(index)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the broker")
            self.queue += self.decoder.feed(data)
        raise TimeoutError(f"no packet of type {kind}")


def test_mosquitto_speaks_with_the_codec(broker: LocalBroker) -> None:
    watcher = Client(broker.port, "test-lite-watcher")
    watcher.send(mq.subscribe(1, [("lite/#", 1)]))
    assert mq.parse_suback(watcher.expect(mq.SUBACK)) == (1, [1])

    gateway = Client(
        broker.port,
        "test-lite-gw",
        will_topic="lite/state",
        will_payload=b"offline",
        will_qos=1,
        will_retain=True,
    )
    gateway.send(mq.publish("lite/events", b"one", qos=1, packet_id=42))
    assert mq.parse_packet_id(gateway.expect(mq.PUBACK)) == 42
    gateway.send(mq.publish("lite/events", b"two", qos=0))

    first = mq.parse_publish(watcher.expect(mq.PUBLISH))
    assert (first.topic, first.payload, first.qos) == ("lite/events", b"one", 1)
    watcher.send(mq.puback(first.packet_id))
    second = mq.parse_publish(watcher.expect(mq.PUBLISH))
    assert (second.payload, second.qos) == (b"two", 0)

    gateway.send(mq.pingreq())
    gateway.expect(mq.PINGRESP)

    # gone without a DISCONNECT: the broker publishes the will, retained
    gateway.sock.close()
    will = mq.parse_publish(watcher.expect(mq.PUBLISH))
    assert (will.topic, will.payload) == ("lite/state", b"offline")
    watcher.send(mq.puback(will.packet_id))

    late = Client(broker.port, "test-lite-late")
    late.send(mq.subscribe(2, [("lite/state", 1)]))
    late.expect(mq.SUBACK)
    retained = mq.parse_publish(late.expect(mq.PUBLISH))
    assert (retained.payload, retained.retain) == (b"offline", True)

    # a clean DISCONNECT: no will
    quiet = Client(
        broker.port, "test-lite-quiet", will_topic="lite/quiet", will_payload=b"x", will_qos=1
    )
    quiet.send(mq.disconnect())
    quiet.sock.close()
    watcher.send(mq.publish("lite/marker", b"m", qos=0))
    marker = mq.parse_publish(watcher.expect(mq.PUBLISH))
    assert marker.topic == "lite/marker"
    for client in (watcher, late):
        client.send(mq.disconnect())
        client.sock.close()
