"""A small MQTT 3.1.1 codec for holding thousands of connections in one process.

`bench/fleet.py` simulates thousands of gateways per process on one asyncio loop;
paho (a client object, a socket and a thread's worth of state per connection) is far
too heavy for that. This module only turns packets into bytes and bytes into
packets; the fleet owns the sockets (asyncio protocols) and the session logic.

Covered (MQTT 3.1.1, OASIS standard, section 3): CONNECT with a Last Will and a
keep-alive, CONNACK, PUBLISH at QoS 0 and 1 in both directions, PUBACK,
SUBSCRIBE/SUBACK, PINGREQ/PINGRESP and DISCONNECT. QoS 2, UNSUBSCRIBE,
user names and passwords are left out: the fleet needs none of them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

MAX_REMAINING = 268_435_455
"""The largest remaining length the 4-byte varint can say (256 MB)."""

PINGREQ_BYTES = b"\xc0\x00"
PINGRESP_BYTES = b"\xd0\x00"
DISCONNECT_BYTES = b"\xe0\x00"


class ProtocolError(ValueError):
    """Bytes that are not MQTT 3.1.1 as this codec speaks it."""


def _remaining(length: int) -> bytes:
    if not 0 <= length <= MAX_REMAINING:
        raise ProtocolError(f"remaining length {length} out of range")
    out = bytearray()
    while True:
        digit, length = length & 0x7F, length >> 7
        out.append(digit | 0x80 if length else digit)
        if not length:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) > 0xFFFF:
        raise ProtocolError("a string field holds at most 65,535 bytes")
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _remaining(len(body)) + body


def connect(
    client_id: str,
    *,
    keepalive: int = 30,
    clean_session: bool = True,
    will_topic: str | None = None,
    will_payload: bytes = b"",
    will_qos: int = 0,
    will_retain: bool = False,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _string(client_id)
    if will_topic is not None:
        if will_qos not in (0, 1, 2):
            raise ProtocolError("will QoS is 0, 1 or 2")
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        payload += _string(will_topic) + _string(will_payload)
    header = _string("MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive)
    return _packet(CONNECT << 4, header + payload)


def connack(return_code: int = 0, *, session_present: bool = False) -> bytes:
    """The broker's side; for tests."""
    return _packet(CONNACK << 4, bytes((1 if session_present else 0, return_code)))


def publish(
    topic: str,
    payload: bytes,
    *,
    qos: int = 0,
    packet_id: int = 0,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    if qos not in (0, 1):
        raise ProtocolError("this codec publishes at QoS 0 or 1")
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    head = _string(topic)
    if qos:
        if not 0 < packet_id <= 0xFFFF:
            raise ProtocolError("a QoS 1 publish needs a packet id in 1..65535")
        head += struct.pack("!H", packet_id)
    return bytes((first,)) + _remaining(len(head) + len(payload)) + head + payload


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", packet_id)


def subscribe(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    if not filters:
        raise ProtocolError("SUBSCRIBE carries at least one filter")
    body = struct.pack("!H", packet_id) + b"".join(
        _string(topic) + bytes((qos,)) for topic, qos in filters
    )
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def suback(packet_id: int, codes: list[int]) -> bytes:
    """The broker's side; for tests."""
    return _packet(SUBACK << 4, struct.pack("!H", packet_id) + bytes(codes))


def pingreq() -> bytes:
    return PINGREQ_BYTES


def disconnect() -> bytes:
    return DISCONNECT_BYTES


@dataclass(frozen=True, slots=True)
class Packet:
    """One control packet: its type, the four flag bits of the fixed header, and the rest."""

    kind: int
    flags: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int
    retain: bool
    dup: bool


def parse_publish(packet: Packet) -> Publish:
    body = packet.body
    if len(body) < 2:
        raise ProtocolError("PUBLISH too short")
    (length,) = struct.unpack_from("!H", body)
    qos = (packet.flags >> 1) & 0x03
    end = 2 + length
    if qos > 1:
        raise ProtocolError("QoS 2 is not spoken here")
    packet_id = 0
    if qos:
        if len(body) < end + 2:
            raise ProtocolError("PUBLISH too short for its packet id")
        (packet_id,) = struct.unpack_from("!H", body, end)
        end += 2
    if len(body) < end:
        raise ProtocolError("PUBLISH topic runs past the packet")
    topic = body[2 : 2 + length].decode("utf-8")
    return Publish(
        topic, body[end:], qos, packet_id, bool(packet.flags & 1), bool(packet.flags & 8)
    )


def parse_connack(packet: Packet) -> tuple[bool, int]:
    """(session present, return code); 0 is accepted."""
    if len(packet.body) != 2:
        raise ProtocolError("CONNACK is 2 bytes")
    return bool(packet.body[0] & 1), packet.body[1]


def parse_packet_id(packet: Packet) -> int:
    """The packet id of a PUBACK (or of a SUBACK, before its return codes)."""
    if len(packet.body) < 2:
        raise ProtocolError("no packet id")
    return int(struct.unpack_from("!H", packet.body)[0])


def parse_suback(packet: Packet) -> tuple[int, list[int]]:
    return parse_packet_id(packet), list(packet.body[2:])


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    keepalive: int
    clean_session: bool
    will_topic: str | None
    will_payload: bytes
    will_qos: int
    will_retain: bool


def parse_connect(packet: Packet) -> Connect:
    """The broker's side of CONNECT; for tests."""
    body = packet.body
    (name_length,) = struct.unpack_from("!H", body)
    at = 2 + name_length
    if body[2:at] != b"MQTT" or body[at] != 4:
        raise ProtocolError("not MQTT 3.1.1")
    flags, keepalive = body[at + 1], struct.unpack_from("!H", body, at + 2)[0]
    at += 4

    def field() -> bytes:
        nonlocal at
        (length,) = struct.unpack_from("!H", body, at)
        value = body[at + 2 : at + 2 + length]
        at += 2 + length
        return value

    client_id = field().decode("utf-8")
    will_topic, will_payload = None, b""
    if flags & 0x04:
        will_topic = field().decode("utf-8")
        will_payload = field()
    return Connect(
        client_id,
        keepalive,
        bool(flags & 0x02),
        will_topic,
        will_payload,
        (flags >> 3) & 0x03,
        bool(flags & 0x20),
    )


class Decoder:
    """Cuts a byte stream into packets; `feed` what the socket gave, get the whole packets."""

    def __init__(self, max_packet: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._max = max_packet

    def feed(self, data: bytes) -> list[Packet]:
        buffer = self._buffer
        buffer += data
        packets: list[Packet] = []
        start = 0
        size = len(buffer)
        while size - start >= 2:
            first = buffer[start]
            length, shift, at, complete = 0, 0, start + 1, False
            for _ in range(4):
                if at >= size:
                    break
                digit = buffer[at]
                at += 1
                length |= (digit & 0x7F) << shift
                if not digit & 0x80:
                    complete = True
                    break
                shift += 7
            else:
                raise ProtocolError("remaining length longer than 4 bytes")
            if not complete:
                break  # the length itself is not complete yet
            if length > self._max:
                raise ProtocolError(f"packet of {length} bytes is over the limit")
            end = at + length
            if end > size:
                break
            packets.append(Packet(first >> 4, first & 0x0F, bytes(buffer[at:end])))
            start = end
        if start:
            del buffer[:start]
        return packets

    @property
    def pending(self) -> int:
        """Bytes held of a packet not yet complete."""
        return len(self._buffer)
