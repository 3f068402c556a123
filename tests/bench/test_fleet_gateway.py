"""A simulated gateway of bench/fleet.py keeps its events until a signed ack covers them and
sends again from a replay's seq, as a real gateway does (docs/asyncapi.yaml, delivery)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import mqtt_lite as mq
from gateway.domain.signed_commands import CommandName, sign
from gateway.domain.signing import SigningKey
from gateway.sync.platform_acks import ack_command

# bench scripts import their neighbours (benchlib, mqtt_lite) by name
sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
import fleet


class Wire(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = mq.Decoder()
        self.packets: list[mq.Packet] = []

    def write(self, data: Any) -> None:
        self.packets += self.sent.feed(bytes(data))

    def close(self) -> None:
        pass

    def publishes(self, suffix: str) -> list[mq.Publish]:
        found = [mq.parse_publish(p) for p in self.packets if p.kind == mq.PUBLISH]
        return [message for message in found if message.topic.endswith(suffix)]


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def gateway_on_wire(key: SigningKey, verify: str = "all") -> tuple[fleet.SimGateway, Wire]:
    _parent, child = multiprocessing.Pipe()
    settings = {
        "keepalive_s": 30,
        "state_every_s": 60.0,
        "ack_resend_s": 120.0,
        "window": 2,
        "batch_events": 3,
        "verify_acks": verify,
        "verify_every": 1,
    }
    config = {
        "index": 1,
        "port": 1,
        "settings": settings,
        "public_key": key.public.raw,
        "gateway_ids": ["GW-0001"],
    }
    worker = fleet.Worker(child, config)
    gateway = worker.gateways[0]
    wire = Wire()
    gateway.connection_made(wire)
    connect = mq.parse_connect(wire.packets[0])
    assert connect.client_id == "GW-0001"
    assert (connect.will_topic, connect.will_qos, connect.will_retain) == (
        "rentgate/v1/GW-0001/state",
        1,
        True,
    )
    assert json.loads(connect.will_payload)["online"] is False
    gateway.data_received(mq.connack(0))
    return gateway, wire


def command(gateway: fleet.SimGateway, name: str, payload: bytes, packet_id: int = 7) -> None:
    gateway.data_received(
        mq.publish(f"rentgate/v1/GW-0001/cmd/{name}", payload, qos=1, packet_id=packet_id)
    )


def puback_all(gateway: fleet.SimGateway) -> None:
    for packet_id in list(gateway.inflight):
        gateway.data_received(mq.puback(packet_id))


def test_events_wait_for_a_signed_ack_and_are_sent_within_the_window(key: SigningKey) -> None:
    gateway, wire = gateway_on_wire(key)
    birth = json.loads(wire.publishes("/state")[0].payload)
    assert (birth["online"], birth["head_seq"], birth["acked_seq"]) == (True, 0, 0)
    subscribe = next(p for p in wire.packets if p.kind == mq.SUBSCRIBE)
    assert b"rentgate/v1/GW-0001/cmd/+" in subscribe.body

    now = time.monotonic()
    gateway.worker.measure_from, gateway.worker.measure_to = now - 1, now + 60
    for _ in range(8):
        gateway.add_event(time.monotonic(), time.time())
    envelopes = [json.loads(m.payload) for m in wire.publishes("/events")]
    assert [[e["seq"] for e in env["events"]] for env in envelopes] == [[1], [2]]  # window 2
    puback_all(gateway)  # the window moves on PUBACKs: the rest goes out, batched by 3
    envelopes = [json.loads(m.payload) for m in wire.publishes("/events")]
    seqs = [[e["seq"] for e in env["events"]] for env in envelopes]
    assert seqs == [[1], [2], [3, 4, 5], [6, 7, 8]]

    command(gateway, "ack", ack_command(key, "GW-0001", 5, int(time.time())))
    assert (gateway.acked, [seq for seq, _, _ in gateway.events]) == (5, [6, 7, 8])
    assert len(gateway.worker.latencies) == 5
    assert gateway.worker.acks_verified == 1

    forged = ack_command(SigningKey.generate(), "GW-0001", 8, int(time.time()))
    command(gateway, "ack", forged)
    beyond = ack_command(key, "GW-0001", 9, int(time.time()))
    command(gateway, "ack", beyond)
    assert gateway.acked == 5
    assert (gateway.worker.acks_bad, gateway.worker.acks_refused) == (1, 1)


def test_a_replay_sends_again_from_its_seq_and_is_answered(key: SigningKey) -> None:
    gateway, wire = gateway_on_wire(key, verify="none")
    for _ in range(4):
        gateway.add_event(time.monotonic(), time.time())
        puback_all(gateway)
    command(gateway, "ack", ack_command(key, "GW-0001", 1, int(time.time())))
    before = len(wire.publishes("/events"))
    now = int(time.time())
    body = {"from_seq": 3}
    replay = sign(key, gateway_id="GW-0001", name=CommandName.REPLAY, body=body, now=now)
    command(gateway, "replay", replay)
    again = [json.loads(m.payload) for m in wire.publishes("/events")[before:]]
    assert [e["seq"] for env in again for e in env["events"]][:2] == [3, 4]
    (reply,) = [json.loads(m.payload) for m in wire.publishes("/cmd-reply")]
    assert (reply["ok"], reply["from_seq"], reply["head_seq"]) == (True, 3, 4)


def test_no_ack_for_the_resend_time_sends_again_from_the_cursor(key: SigningKey) -> None:
    gateway, wire = gateway_on_wire(key)
    for _ in range(2):
        gateway.add_event(time.monotonic(), time.time())
        puback_all(gateway)
    before = len(wire.publishes("/events"))
    gateway.tick(time.monotonic() + 121)
    again = [json.loads(m.payload) for m in wire.publishes("/events")[before:]]
    assert [e["seq"] for env in again for e in env["events"]] == [1, 2]
    assert gateway.worker.resends == 1
    assert gateway.resend_wait == 240.0  # doubling while no ack comes
