"""Fleet simulator: thousands of gateways on the real contract against a broker and a consumer.

Issue 14 item 4. Every simulated gateway behaves on the wire as a real one does
(docs/asyncapi.yaml, gateway/sync/wire.py): MQTT client id = gateway id, a
retained Last Will `online: false` on `rentgate/v1/{gw}/state`, a retained birth
there on every session and every `state_every_s`, a QoS 1 subscription to
`rentgate/v1/{gw}/cmd/+`, and `access.decision` events in batch envelopes at
QoS 1, seq contiguous from 1, at most `window` envelopes awaiting their PUBACK
and at most `batch_events` events per envelope. A gateway keeps every event
until the platform's signed `ack` covers it, publishes again from its ack cursor
when no ack came for `ack_resend_s` (the wait doubling, up to 8 times), and
publishes again from `from_seq` on a signed `replay` (answered on `cmd-reply`).

Thousands of gateways share one asyncio loop per worker process (`--processes`,
default the CPU count), each an asyncio protocol with the small MQTT 3.1.1 codec
of bench/mqtt_lite.py; they connect at `--connect-rate` per second in all.

Verifying the Ed25519 signature of every ack costs CPU that a real gateway has
(one ack at a time) but that a process holding thousands of them does not:
`--verify-acks sample` (the default) verifies every `--verify-every`-th ack
fully with the gateway's own `gateway.domain.signed_commands.verify` and checks
only the shape (cmd, gw, through_seq) of the others; `all` verifies every one,
`none` none. A `replay` is always verified. The output says which was used.

Phases, each with a deadline (nothing waits for ever):

1. connect: `--gateways` gateways (10,000) at `--connect-rate`; connections held,
   the time it took, RSS and CPU of every worker and of Mosquitto.
2. per consumer, steady load: `--rate` events/s (2,000) in all, Poisson arrivals
   on uniformly chosen gateways, for `--seconds`; tap-to-row latency p50/p99/max
   = from the event's creation ("tap") to the arrival of an `ack` covering its
   seq. The platform acks only after the commit that stored the event, so this
   bounds tap-to-row from above (it includes the ack's trip back).
3. per consumer, backlog drain: the consumer is stopped; the gateways record
   `--backlog` events in all without publishing (an uplink outage); the consumer
   is started again; then the gateways' uplinks come back: a birth, then the
   backlog from the ack cursor in envelopes of up to `--batch-events`, as the
   real uplink does after an outage. Events/s stored = events acked / time from
   the uplinks' return to the last ack (acked only after commit: a lower bound
   of rows stored).

Consumers (`--consumer reference|ingest|both`): `reference` is today's reference
consumer, bench/reference_consumer.py (SQLite, a transaction per envelope, MQTT 5
`$share`), run as a child process; `ingest` is `rentgate platform ingest` into a
private PostgreSQL (tests/support/postgres.py). With `both`, the ratio is printed.
Readiness of a consumer is checked on the wire: a probe gateway (`FL-probe`,
not counted in `--gateways`) publishes one event and waits for its ack.

    .venv/bin/python bench/fleet.py                      # 10,000 gateways, both consumers
    .venv/bin/python bench/fleet.py --gateways 500 --backlog 20000 --seconds 10
    .venv/bin/python bench/fleet.py --consumer reference --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import benchlib
import mqtt_lite as mq
from benchlib import ROOT, fmt_rate, percentile, verdict

TARGET_GATEWAYS = 10_000
TARGET_DRAIN_RATE = 20_000
TARGET_P99_S = 1.0
MB = 1024 * 1024
TZ = timezone(timedelta(hours=8))
PREFIX = "FL"
PROBE_ID = f"{PREFIX}-probe"

DOORS = ("front", "back", "garage", "bike")
DENY_REASONS = ("unknown", "expired", "wrong_door", "revoked", "not_yet_valid")


# ---------------------------------------------------------------- the simulated gateway


def uuid7(wall: float) -> str:
    value = (
        (int(wall * 1000) << 80)
        | (0x7 << 76)
        | (random.getrandbits(12) << 64)
        | (0b10 << 62)
        | random.getrandbits(62)
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def decision_text(seq: int, wall: float, mono: float) -> str:
    """One `access.decision` event (the seq first, as gateway/sync/wire.py splices it),
    with the fields of the contract's example."""
    door = DOORS[seq % len(DOORS)]
    card = f"04{random.getrandbits(32):08X}"
    ts = datetime.fromtimestamp(wall, TZ).isoformat(timespec="milliseconds")
    credential = (
        f'"credential":{{"kind":"card_uid","masked":"{card[:3]}***{card[-4:]}",'
        f'"hash":"{random.getrandbits(128):032x}"}}'
    )
    person = (
        f'"{random.getrandbits(32):08x}-{random.getrandbits(16):04x}-4{random.getrandbits(12):03x}'
        f'-{random.choice("89ab")}{random.getrandbits(12):03x}-{random.getrandbits(48):012x}"'
    )
    if random.random() < 0.9:
        tail = f'"result":"allow","reason":"granted",{credential},"person":{person}'
    else:
        reason = DENY_REASONS[seq % len(DENY_REASONS)]
        status = ',"credential_status":"lost"' if reason == "revoked" else ""
        if reason == "unknown":
            person = "null"
        tail = f'"result":"deny","reason":"{reason}",{credential},"person":{person}{status}'
    return (
        f'{{"seq":{seq},"id":"{uuid7(wall)}","type":"access.decision","ts":"{ts}",'
        f'"mono":{mono:.6f},"door":"{door}","reader":"{door}-line-0",{tail}}}'
    )


def iso_now() -> str:
    return datetime.now(TZ).isoformat(timespec="milliseconds")


class SimGateway(asyncio.Protocol):
    """One gateway: its MQTT session, its unacknowledged events and its uplink cursor."""

    def __init__(self, worker: Worker, gateway_id: str, *, resend_s: float | None = None) -> None:
        self.worker = worker
        self.id = gateway_id
        self.events_topic = f"rentgate/v1/{gateway_id}/events"
        self.state_topic = f"rentgate/v1/{gateway_id}/state"
        self.cmd_prefix = f"rentgate/v1/{gateway_id}/cmd/"
        self.reply_topic = f"rentgate/v1/{gateway_id}/cmd-reply"
        self.envelope_head = f'{{"v":1,"gw":"{gateway_id}","events":['
        self.transport: asyncio.Transport | None = None
        self.decoder = mq.Decoder()
        self.connected = False  # CONNACK accepted, not lost since
        self.subscribed = False
        self.closing = False
        self.ever_connected = False
        self.session_ts = ""
        self.head = 0
        self.acked = 0
        self.next_send = 1
        self.puback_through = 0
        self.events: list[tuple[int, float, str]] = []  # seq acked+1.. : (seq, tap, json)
        self.inflight: dict[int, int] = {}  # packet id -> last seq (0: a state message)
        self.envelopes_inflight = 0
        self.packet_id = 0
        self.held = False
        self.last_tx = 0.0
        self.next_state = 0.0
        self.base_resend = resend_s if resend_s is not None else worker.settings["ack_resend_s"]
        self.resend_wait = self.base_resend
        self.waiting_since = 0.0
        self.on_acked: Callable[[], None] | None = None

    # ---- the session

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: self, self.worker.host, self.worker.port)
        except OSError:
            self.worker.connect_failures += 1
            self.worker.schedule_reconnect(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.decoder = mq.Decoder()
        self.session_ts = iso_now()
        will = self.state(online=False)
        self.write(
            mq.connect(
                self.id,
                keepalive=int(self.worker.settings["keepalive_s"]),
                will_topic=self.state_topic,
                will_payload=will,
                will_qos=1,
                will_retain=True,
            )
        )

    def connection_lost(self, _exc: Exception | None) -> None:
        was = self.connected
        self.transport = None
        self.connected = self.subscribed = False
        self.inflight.clear()
        self.envelopes_inflight = 0
        if was:
            self.worker.held -= 1
        if not self.closing:
            self.worker.lost += 1
            self.worker.schedule_reconnect(self)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.last_tx = time.monotonic()

    def next_packet_id(self) -> int:
        while True:
            self.packet_id = self.packet_id % 0xFFFF + 1
            if self.packet_id not in self.inflight:
                return self.packet_id

    def state(self, *, online: bool) -> bytes:
        from gateway.sync.wire import GatewayState

        return GatewayState(
            self.id,
            online=online,
            ts=self.session_ts if not online else iso_now(),
            backlog=self.head - max(self.puback_through, self.acked),
            head_seq=self.head,
            acked_seq=self.acked,
            software="rentgate-fleet-sim",
            state_every_s=self.worker.settings["state_every_s"],
        ).encode()

    def publish_state(self, *, online: bool = True) -> None:
        packet_id = self.next_packet_id()
        self.inflight[packet_id] = 0
        payload = self.state(online=online)
        self.write(mq.publish(self.state_topic, payload, qos=1, packet_id=packet_id, retain=True))
        self.next_state = time.monotonic() + self.worker.settings["state_every_s"]
        self.worker.states += 1

    # ---- receiving

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.decoder.feed(data)
        except mq.ProtocolError:
            self.worker.protocol_errors += 1
            if self.transport is not None:
                self.transport.close()
            return
        for packet in packets:
            kind = packet.kind
            if kind == mq.PUBACK:
                self.on_puback(mq.parse_packet_id(packet))
            elif kind == mq.PUBLISH:
                self.on_publish(mq.parse_publish(packet))
            elif kind == mq.CONNACK:
                self.on_connack(packet)
            elif kind == mq.SUBACK:
                _, codes = mq.parse_suback(packet)
                self.subscribed = all(code < 0x80 for code in codes)
                if not self.subscribed:
                    self.worker.protocol_errors += 1
            elif kind != mq.PINGRESP:
                self.worker.protocol_errors += 1

    def on_connack(self, packet: mq.Packet) -> None:
        _, code = mq.parse_connack(packet)
        if code != 0:
            self.worker.refused += 1
            if self.transport is not None:
                self.transport.close()
            return
        self.connected = True
        self.worker.held += 1
        if self.ever_connected:
            self.worker.reconnected += 1
        self.ever_connected = True
        self.write(mq.subscribe(self.next_packet_id(), [(f"{self.cmd_prefix}+", 1)]))
        self.publish_state()
        # a new session sends again what was not PUBACKed in the last one
        self.next_send = max(self.acked, self.puback_through) + 1
        self.pump()

    def on_puback(self, packet_id: int) -> None:
        last = self.inflight.pop(packet_id, None)
        if last is None or last == 0:
            return
        self.envelopes_inflight -= 1
        self.puback_through = max(self.puback_through, last)
        self.pump()

    def on_publish(self, message: mq.Publish) -> None:
        if message.qos == 1:
            self.write(mq.puback(message.packet_id))
        name = message.topic[len(self.cmd_prefix) :]
        if not message.topic.startswith(self.cmd_prefix):
            self.worker.other_commands += 1
        elif name == "ack":
            self.on_ack(message.payload)
        elif name == "replay":
            self.on_replay(message.payload)
        else:
            self.worker.other_commands += 1

    def on_ack(self, payload: bytes) -> None:
        worker = self.worker
        worker.acks += 1
        mode = worker.settings["verify_acks"]
        if mode == "all" or (
            mode == "sample" and worker.acks % worker.settings["verify_every"] == 0
        ):
            body = worker.verified_body(payload, "ack", self.id)
            if body is None:
                return
        else:
            try:
                document = json.loads(payload)
                if document["cmd"] != "ack" or document["gw"] != self.id:
                    raise ValueError("not an ack for this gateway")
                body = document["body"]
            except (ValueError, KeyError, TypeError):
                worker.acks_bad += 1
                return
        through = body.get("through_seq") if isinstance(body, dict) else None
        if type(through) is not int or through < 0:
            worker.acks_bad += 1
            return
        if through > self.head:
            worker.acks_refused += 1  # beyond the newest event: refused and counted
            return
        if through <= self.acked:
            worker.acks_noop += 1
            return
        count = through - self.acked
        now = time.monotonic()
        low, high, samples = worker.measure_from, worker.measure_to, worker.latencies
        for _seq, tap, _text in self.events[:count]:
            if low <= tap <= high:
                samples.append(now - tap)
        del self.events[:count]
        self.acked = through
        worker.events_acked += count
        self.next_send = max(self.next_send, through + 1)
        self.resend_wait = self.base_resend
        self.waiting_since = now
        if self.on_acked is not None:
            self.on_acked()

    def on_replay(self, payload: bytes) -> None:
        worker = self.worker
        body = worker.verified_body(payload, "replay", self.id, always=True)
        if body is None:
            return
        command = json.loads(payload)
        from_seq = body.get("from_seq")
        reply: dict[str, Any] = {
            "v": 1,
            "gw": self.id,
            "id": command.get("id"),
            "cmd": "replay",
            "ts": iso_now(),
        }
        if type(from_seq) is not int or from_seq < 1 or from_seq > self.head + 1:
            reply.update(ok=False, reason="invalid", detail=f"from_seq beyond {self.head + 1}")
        else:
            start = max(from_seq, self.acked + 1)
            reply.update(ok=True, from_seq=start, head_seq=self.head)
            self.next_send = start
            worker.replays += 1
        packet_id = self.next_packet_id()
        self.inflight[packet_id] = 0
        encoded = json.dumps(reply, separators=(",", ":")).encode()
        self.write(mq.publish(self.reply_topic, encoded, qos=1, packet_id=packet_id))
        self.pump()

    # ---- sending

    def add_event(self, tap: float, wall: float) -> None:
        self.head += 1
        self.events.append((self.head, tap, decision_text(self.head, wall, tap)))
        self.worker.events_created += 1
        self.pump()

    def pump(self) -> None:
        """Publish envelopes from the send cursor while the window has room."""
        if not self.connected or self.held or self.transport is None:
            return
        settings = self.worker.settings
        window, batch, max_chars = settings["window"], settings["batch_events"], 256 * 1024
        while self.envelopes_inflight < window and self.next_send <= self.head:
            if self.next_send == self.acked + 1 or self.waiting_since == 0.0:
                self.waiting_since = time.monotonic()
            start = self.next_send - self.acked - 1
            texts: list[str] = []
            chars = 0
            for _seq, _tap, text in self.events[start : start + batch]:
                if texts and chars + len(text) > max_chars:
                    break
                texts.append(text)
                chars += len(text)
            last = self.next_send + len(texts) - 1
            payload = (self.envelope_head + ",".join(texts) + "]}").encode()
            packet_id = self.next_packet_id()
            self.inflight[packet_id] = last
            self.envelopes_inflight += 1
            self.write(mq.publish(self.events_topic, payload, qos=1, packet_id=packet_id))
            self.worker.envelopes += 1
            self.worker.events_published += len(texts)
            self.next_send = last + 1

    def tick(self, now: float) -> None:
        """Once a second: keep-alive, the periodic birth, and resending for want of acks."""
        if not self.connected:
            return
        settings = self.worker.settings
        if now >= self.next_state:
            self.publish_state()
        if (
            self.events
            and not self.held
            and self.envelopes_inflight == 0
            and self.next_send > self.acked + 1
            and now - self.waiting_since >= self.resend_wait
        ):
            self.worker.resends += 1
            self.next_send = self.acked + 1
            self.resend_wait = min(self.resend_wait * 2, self.base_resend * 256)
            self.waiting_since = now
            self.publish_state()  # a real gateway's birth goes out again with each resend
            self.pump()
        if now - self.last_tx >= settings["keepalive_s"] * 0.75:
            self.write(mq.PINGREQ_BYTES)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            if self.connected:
                self.publish_state(online=False)
                self.write(mq.DISCONNECT_BYTES)
            self.transport.close()


class Worker:
    """One process's share of the fleet, on one asyncio loop, driven by the parent over a pipe."""

    def __init__(self, conn: Connection, config: dict[str, Any]) -> None:
        from gateway.domain.signing import VerifyKey

        self.conn = conn
        self.index: int = config["index"]
        self.host, self.port = "127.0.0.1", config["port"]
        self.settings: dict[str, Any] = config["settings"]
        key = VerifyKey(config["public_key"])
        self.keys = {key.kid: key}
        self.gateways = [SimGateway(self, gw) for gw in config["gateway_ids"]]
        self.probe = SimGateway(self, PROBE_ID, resend_s=1.0) if self.index == 0 else None
        self.held = 0
        self.connect_failures = self.refused = self.lost = self.reconnected = 0
        self.protocol_errors = self.other_commands = self.states = 0
        self.events_created = self.events_published = self.envelopes = self.events_acked = 0
        self.acks = self.acks_verified = self.acks_bad = self.acks_refused = self.acks_noop = 0
        self.resends = self.replays = 0
        self.steady_created = 0
        self.measure_from, self.measure_to = float("inf"), float("inf")
        self.latencies: list[float] = []
        self.done = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()

    def verified_body(
        self, payload: bytes, name: str, gateway_id: str, *, always: bool = False
    ) -> dict[str, Any] | None:
        from gateway.domain.signed_commands import CommandRejected, verify

        try:
            command = verify(
                payload,
                topic_name=name,
                gateway_id=gateway_id,
                keys=self.keys,
                now=int(time.time()),
            )
        except CommandRejected:
            self.acks_bad += 1
            return None
        if not always:
            self.acks_verified += 1
        return command.body

    def schedule_reconnect(self, gateway: SimGateway) -> None:
        if self.done.is_set():
            return
        loop = asyncio.get_running_loop()
        loop.call_later(1 + 4 * random.random(), self.spawn, gateway.open)

    def spawn(self, factory: Callable[[], Any]) -> None:
        task = asyncio.get_running_loop().create_task(factory())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def everyone(self) -> list[SimGateway]:
        return self.gateways + ([self.probe] if self.probe is not None else [])

    # ---- commands from the parent

    def on_command(self) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.done.set()  # the parent is gone
            return
        name = message["cmd"]
        if name == "connect":
            self.spawn(lambda: self.connect_all(message["rate"]))
            self.reply(ok=True)
        elif name == "stats":
            self.reply(**self.stats(take=message.get("take", False)))
        elif name == "steady":
            self.spawn(lambda: self.steady(message["rate"], message["seconds"]))
            self.reply(ok=True)
        elif name == "hold":
            self.spawn(lambda: self.hold(message["events"]))
        elif name == "release":
            self.reply(pending=self.release())
        elif name == "births":
            for gateway in self.everyone():
                if gateway.connected:
                    gateway.publish_state()
            self.reply(ok=True)
        elif name == "probe":
            self.spawn(lambda: self.run_probe(message["timeout"]))
        elif name == "close":
            self.spawn(self.close)
        else:
            self.reply(error=f"unknown command {name}")

    def reply(self, **fields: Any) -> None:
        self.conn.send(fields)

    def stats(self, *, take: bool) -> dict[str, Any]:
        pending = sum(len(gateway.events) for gateway in self.gateways)
        result = {
            "held": self.held - (1 if self.probe is not None and self.probe.connected else 0),
            "subscribed": sum(1 for gateway in self.gateways if gateway.subscribed),
            "connect_failures": self.connect_failures,
            "refused": self.refused,
            "lost": self.lost,
            "reconnected": self.reconnected,
            "protocol_errors": self.protocol_errors,
            "other_commands": self.other_commands,
            "states": self.states,
            "events_created": self.events_created,
            "events_published": self.events_published,
            "envelopes": self.envelopes,
            "events_acked": self.events_acked,
            "acks": self.acks,
            "acks_verified": self.acks_verified,
            "acks_bad": self.acks_bad,
            "acks_refused": self.acks_refused,
            "acks_noop": self.acks_noop,
            "resends": self.resends,
            "replays": self.replays,
            "pending": pending,
            "steady_created": self.steady_created,
            "steady_acked": len(self.latencies),
        }
        if take:
            result["latencies"] = self.latencies
            self.latencies = []
        return result

    async def connect_all(self, rate: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index, gateway in enumerate(self.everyone()):
            delay = start + index / rate - loop.time()
            if delay > 0.002:
                await asyncio.sleep(delay)
            self.spawn(gateway.open)

    async def steady(self, rate: float, seconds: float) -> None:
        """Poisson arrivals at `rate` on uniformly chosen connected gateways."""
        start = time.monotonic()
        self.measure_from, self.measure_to = start, start + seconds
        self.latencies = []
        self.steady_created = 0
        end = start + seconds
        due = start
        gateways = self.gateways
        while True:
            now = time.monotonic()
            if now >= end:
                break
            wall = time.time()
            while due <= now:
                gateway = gateways[random.randrange(len(gateways))]
                if gateway.connected:
                    gateway.add_event(now, wall)
                    self.steady_created += 1
                due += random.expovariate(rate)
            await asyncio.sleep(min(max(due - now, 0.0), 0.005))
        self.measure_to = end

    async def hold(self, count: int) -> None:
        """An uplink outage: `count` events recorded over the gateways, none published."""
        for gateway in self.gateways:
            gateway.held = True
        for index in range(count):
            gateway = self.gateways[index % len(self.gateways)]
            now = time.monotonic()
            gateway.add_event(now, time.time())
            if index % 2000 == 1999:
                await asyncio.sleep(0)
        self.reply(pending=sum(len(gateway.events) for gateway in self.gateways))

    def release(self) -> int:
        """The uplinks come back: a birth, then everything from the ack cursor."""
        pending = 0
        for gateway in self.gateways:
            gateway.held = False
            pending += len(gateway.events)
            if gateway.connected:
                gateway.next_send = gateway.acked + 1
                gateway.publish_state()
                gateway.pump()
        return pending

    async def run_probe(self, timeout: float) -> None:
        probe = self.probe
        if probe is None:
            self.reply(ok=False, seconds=0.0, detail="no probe gateway in this worker")
            return
        started = time.monotonic()
        acked = asyncio.Event()
        probe.on_acked = acked.set
        while not probe.connected and time.monotonic() - started < timeout:
            await asyncio.sleep(0.05)
        if probe.connected:
            probe.publish_state()
        target = probe.head + 1
        probe.add_event(time.monotonic(), time.time())
        while probe.acked < target and time.monotonic() - started < timeout:
            probe.resend_wait = probe.base_resend  # no doubling: the consumer is starting
            acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acked.wait(), 0.5)
        probe.on_acked = None
        self.reply(ok=probe.acked >= target, seconds=time.monotonic() - started)

    async def close(self) -> None:
        self.done.set()
        for gateway in self.everyone():
            gateway.close()
        await asyncio.sleep(0.5)
        self.reply(ok=True)

    async def ticker(self) -> None:
        while not self.done.is_set():
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for gateway in self.everyone():
                gateway.tick(now)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self.on_command)
        ticker = loop.create_task(self.ticker())
        await self.done.wait()
        await asyncio.sleep(1.0)  # let close() reply
        ticker.cancel()
        loop.remove_reader(self.conn.fileno())


def worker_main(conn: Connection, config: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us with "close"
    random.seed(config["index"] * 7919 + os.getpid())
    worker = Worker(conn, config)
    asyncio.run(worker.run())


# ---------------------------------------------------------------- the parent


class Fleet:
    """The worker processes, spoken to over their pipes."""

    def __init__(self, port: int, public_key: bytes, settings: dict[str, Any], args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        ids = [f"{PREFIX}-{number:05d}" for number in range(1, args.gateways + 1)]
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        for index in range(args.processes):
            parent_end, child_end = context.Pipe()
            config = {
                "index": index,
                "port": port,
                "settings": settings,
                "public_key": public_key,
                "gateway_ids": ids[index :: args.processes],
            }
            process = context.Process(
                target=worker_main, args=(child_end, config), name=f"fleet-{index}", daemon=True
            )
            process.start()
            child_end.close()
            self.pipes.append(parent_end)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def ask(self, message: dict[str, Any], timeout: float, only: int | None = None) -> list[Any]:
        pipes = self.pipes if only is None else [self.pipes[only]]
        for pipe in pipes:
            pipe.send(message)
        answers = []
        deadline = time.monotonic() + timeout
        for pipe in pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"a worker did not answer {message['cmd']} in {timeout} s")
            answers.append(pipe.recv())
        return answers

    def stats(self, *, take: bool = False) -> dict[str, Any]:
        total: dict[str, Any] = {"latencies": []}
        for answer in self.ask({"cmd": "stats", "take": take}, 30):
            for key, value in answer.items():
                if key == "latencies":
                    total["latencies"].extend(value)
                else:
                    total[key] = total.get(key, 0) + value
        return total

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ask({"cmd": "close"}, 30)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()


class CpuMeter:
    """CPU% (of one core) and RSS of named processes over an interval; postgres counts its
    children too."""

    def __init__(self, named: dict[str, int | None], with_children: tuple[str, ...] = ()) -> None:
        import psutil

        self._psutil = psutil
        self.named = {name: pid for name, pid in named.items() if pid is not None}
        self.with_children = with_children
        self.start_wall = time.monotonic()
        self.start = {name: self._cpu(name) for name in self.named}

    def _procs(self, name: str) -> list[Any]:
        psutil = self._psutil
        try:
            process = psutil.Process(self.named[name])
            if name in self.with_children:
                return [process, *process.children(recursive=True)]
        except psutil.Error:
            return []
        return [process]

    def _cpu(self, name: str) -> dict[int, float]:
        seconds = {}
        for process in self._procs(name):
            with contextlib.suppress(self._psutil.Error):
                times = process.cpu_times()
                seconds[process.pid] = times.user + times.system
        return seconds

    def _rss(self, name: str) -> int:
        total = 0
        for process in self._procs(name):
            with contextlib.suppress(self._psutil.Error):
                total += process.memory_info().rss
        return total

    def report(self) -> dict[str, dict[str, float]]:
        wall = time.monotonic() - self.start_wall
        result = {}
        for name in self.named:
            now, before = self._cpu(name), self.start[name]
            used = sum(value - before.get(pid, 0.0) for pid, value in now.items())
            result[name] = {
                "cpu_percent": round(100 * used / wall, 1) if wall > 0 else 0.0,
                "rss_mb": round(self._rss(name) / MB, 1),
            }
        return result


def cpu_line(report: dict[str, dict[str, float]]) -> str:
    return "; ".join(
        f"{name} {values['cpu_percent']:.0f}% CPU, {values['rss_mb']:.0f} MB"
        for name, values in report.items()
    )


def raise_nofile(wanted: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft, hard
    try:
        limit = int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        limit = hard
    target = min(max(wanted, soft), limit)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class ConsumerProcess:
    """The consumer under test, a child process: started, then stopped with SIGTERM."""

    def __init__(self, kind: str, argv: list[str], log: Path, *, ready_line: bool) -> None:
        self.kind = kind
        self.log_path = log
        self._log = log.open("ab")
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._signalled = False
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, cwd=ROOT
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not ready_line:
            self._ready.set()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            self._log.write(raw)
            self._log.flush()
            if line == "ready":
                self._ready.set()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(0.2):
                return True
            if self.process.poll() is not None:
                return False
        return False

    @property
    def pid(self) -> int:
        return self.process.pid

    def terminate(self) -> None:
        if self.process.poll() is None and not self._signalled:
            self._signalled = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int | None:
        self.terminate()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        self._log.close()
        return self.process.returncode

    def tail(self, count: int = 3) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return " | ".join(text[-count:])


def say(text: str) -> None:
    print(text, flush=True)


def latency_summary(samples: list[float], created: int) -> dict[str, Any]:
    """Percentiles over every event created in the window; events never acked count as
    longer than any measured (so a p99 is 'over N s' when more than 1% are missing)."""
    missing = max(0, created - len(samples))
    result: dict[str, Any] = {"created": created, "acked": len(samples), "unacked": missing}
    if not created:
        return result
    ordered = sorted(samples) + [float("inf")] * missing
    for name, fraction in (("p50_s", 0.5), ("p90_s", 0.9), ("p99_s", 0.99), ("max_s", 1.0)):
        value = percentile(ordered, fraction)
        result[name] = None if value == float("inf") else round(value, 4)
    result["max_measured_s"] = round(max(samples), 4) if samples else None
    return result


def fmt_latency(value: float | None, ceiling: float | None) -> str:
    if value is None:
        return f"> {ceiling:.2f} s (not acked)" if ceiling is not None else "not acked"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="rentgate-fleet-", dir=args.dir))
        self.summary: dict[str, Any] = {"consumers": {}}
        self.consumers: list[ConsumerProcess] = []
        self.pg: Any = None
        self.dsn: str | None = None
        self._pg_conn: Any = None
        self.metrics_ports: list[int] = []
        self.started_kinds: set[str] = set()

    # ---- set-up

    def setup(self) -> None:
        from gateway.domain.signing import SigningKey
        from gateway.sync.local_broker import LocalBroker

        args = self.args
        nofile = raise_nofile(args.gateways * 2 + 4096)
        key = SigningKey.generate()
        self.key_file, _public = key.save(self.workdir)
        self.broker = LocalBroker(workdir=self.workdir, extra_config="max_connections -1")
        self.broker.start()
        settings = {
            "keepalive_s": args.keepalive,
            "state_every_s": args.state_every,
            "ack_resend_s": args.ack_resend,
            "window": args.window,
            "batch_events": args.batch_events,
            "verify_acks": args.verify_acks,
            "verify_every": args.verify_every,
        }
        self.fleet = Fleet(self.broker.port, key.public.raw, settings, args)
        verify = {
            "all": "every ack verified (Ed25519, gateway.domain.signed_commands.verify)",
            "sample": f"1 ack in {args.verify_every} verified fully, the others checked for"
            " shape only",
            "none": "acks not verified (shape checked only)",
        }[args.verify_acks]
        say(f"machine: {benchlib.machine()}")
        say(
            f"fleet: {args.gateways:,} gateways in {args.processes} processes, broker"
            f" {self.broker.url} (mosquitto pid {self.broker.pid}), RLIMIT_NOFILE {nofile[0]:,};"
            f" {verify}"
        )
        if nofile[0] < args.gateways + 1024:
            say(
                f"warning: RLIMIT_NOFILE is {nofile[0]:,} and could not be raised (the hard limit,"
                " without CAP_SYS_RESOURCE): Mosquitto holds one descriptor per gateway and"
                " will refuse connections beyond it"
            )
        self.summary.update(
            nofile=nofile[0],
            gateways=args.gateways,
            processes=args.processes,
            verify_acks=args.verify_acks,
            verify_every=args.verify_every if args.verify_acks == "sample" else None,
            machine=benchlib.machine(),
        )

    def processes(self) -> dict[str, int | None]:
        named: dict[str, int | None] = {
            f"worker {index}": pid for index, pid in enumerate(self.fleet.pids)
        }
        named["mosquitto"] = self.broker.pid
        for index, consumer in enumerate(self.consumers):
            number = f" {index}" if len(self.consumers) > 1 else ""
            named[f"consumer ({consumer.kind}{number})"] = consumer.pid
        if self.pg is not None and self.pg._process is not None:
            named["postgres (all)"] = self.pg._process.pid
        named["bench parent"] = os.getpid()
        return named

    def meter(self) -> CpuMeter:
        return CpuMeter(self.processes(), with_children=("postgres (all)",))

    # ---- phase 1

    def connect(self) -> None:
        args = self.args
        meter = self.meter()
        started = time.monotonic()
        self.fleet.ask({"cmd": "connect", "rate": args.connect_rate / args.processes}, 30)
        deadline = started + args.gateways / args.connect_rate * 2 + 30
        stats = self.fleet.stats()
        while time.monotonic() < deadline:
            stats = self.fleet.stats()
            if stats["subscribed"] >= args.gateways:
                break
            time.sleep(0.25)
        took = time.monotonic() - started
        time.sleep(1.0)  # let the births settle before measuring CPU and RSS
        cpu = meter.report()
        stats = self.fleet.stats()
        say(
            f"[connect] {stats['held']:,} of {args.gateways:,} gateways held"
            f" ({stats['subscribed']:,} subscribed) in {took:.1f} s at {args.connect_rate:,}/s;"
            f" {stats['connect_failures']} connect failures, {stats['refused']} refused,"
            f" {stats['lost']} lost"
        )
        say(f"[connect] {cpu_line(cpu)}")
        self.summary["connect"] = {
            "held": stats["held"],
            "subscribed": stats["subscribed"],
            "seconds": round(took, 2),
            "connect_failures": stats["connect_failures"],
            "lost": stats["lost"],
            "processes": cpu,
            "target_held": TARGET_GATEWAYS,
        }

    # ---- consumers

    def start_consumer(self, kind: str) -> None:
        args = self.args
        if kind not in self.started_kinds:
            # fresh births, as every state_every_s: a consumer starting with an empty store
            # learns each gateway's acked_seq from its retained state
            self.fleet.ask({"cmd": "births"}, 30)
            self.started_kinds.add(kind)
        log = self.workdir / f"consumer-{kind}.log"
        if kind == "reference":
            argv = [
                sys.executable,
                str(ROOT / "bench" / "reference_consumer.py"),
                "--broker",
                self.broker.url,
                "--group",
                "fleet",
                "--db",
                str(self.workdir / "reference.sqlite"),
                "--seconds",
                "86400",
                "--ack-key",
                str(self.key_file),
            ]
            self.consumers = [ConsumerProcess(kind, argv, log, ready_line=True)]
        else:
            assert self.dsn is not None
            rentgate = Path(sys.executable).with_name("rentgate")
            self.consumers = []
            for index, port in enumerate(self.metrics_ports):
                argv = [
                    *(shlex.split(args.ingest_command) or [str(rentgate), "platform", "ingest"]),
                    "--broker",
                    self.broker.url,
                    "--dsn",
                    self.dsn,
                    "--key",
                    str(self.key_file),
                    "--group",
                    "fleet",
                    "--instance",
                    f"bench-{index}",
                    "--metrics",
                    f"127.0.0.1:{port}",
                    *args.ingest_arg,
                ]
                log = self.workdir / f"consumer-{kind}-{index}.log"
                self.consumers.append(ConsumerProcess(kind, argv, log, ready_line=False))
        for consumer in self.consumers:
            if not consumer.wait_ready(30):
                raise RuntimeError(f"the {kind} consumer did not start: {consumer.tail()}")
        (answer,) = self.fleet.ask({"cmd": "probe", "timeout": 60}, 70, only=0)
        if not answer["ok"]:
            raise RuntimeError(
                f"the {kind} consumer did not ack the probe within 60 s: {self.consumers[0].tail()}"
            )

    def rows(self, kind: str) -> int | None:
        """Events in the consumer's store now (None if it cannot be read at the moment)."""
        try:
            if kind == "reference":
                path = self.workdir / "reference.sqlite"
                with contextlib.closing(
                    sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
                ) as conn:
                    return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
            import psycopg

            if self._pg_conn is None:
                assert self.dsn is not None
                self._pg_conn = psycopg.connect(self.dsn, autocommit=True)
            row = self._pg_conn.execute("SELECT count(*) FROM events").fetchone()
            return int(row[0]) if row else None
        except Exception:  # a busy or missing store: no sample this time
            return None

    def tap_to_row(self, since: float, until: float) -> dict[str, Any]:
        """The ingest's table has `stored_at`: tap-to-row itself, per event created between
        the two wall-clock times (`ts` is the tap, to the millisecond)."""
        if self.rows("ingest") is None:
            return {}
        query = """
            SELECT count(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY d),
                   percentile_disc(0.99) WITHIN GROUP (ORDER BY d), max(d)
            FROM (SELECT extract(epoch FROM stored_at - ts)::float8 AS d FROM events
                  WHERE ts >= to_timestamp(%s) AND ts < to_timestamp(%s)
                    AND gw <> %s) AS x
        """
        try:
            row = self._pg_conn.execute(query, (since, until, PROBE_ID)).fetchone()
        except Exception:  # the figure is a bonus: no figure rather than no run
            return {}
        if not row or not row[0]:
            return {}
        return {"rows": int(row[0]), "p50_s": row[1], "p99_s": row[2], "max_s": row[3]}

    def stop_consumer(self) -> str:
        consumers, self.consumers = self.consumers, []
        said = []
        for consumer in consumers:
            consumer.terminate()  # all at once, then wait for each
        for consumer in consumers:
            consumer.stop()
            said.append(consumer.lines[-1] if consumer.lines else consumer.tail(1))
        return " | ".join(said)

    def run_consumer(self, kind: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        self.summary["consumers"][kind] = result
        if kind == "ingest" and self.pg is None:
            self.start_postgres()
        self.start_consumer(kind)
        try:
            result["steady"] = self.steady(kind)
        finally:
            self.stop_consumer()
        result["drain"] = self.drain(kind)
        return result

    def start_postgres(self) -> None:
        from tests.support.postgres import PostgresCluster, find_postgres_bin

        bindir = find_postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian's postgresql)")
        self.pg = PostgresCluster(bindir)
        self.pg.start()
        self.dsn = self.pg.create_database()
        from gateway.sync.local_broker import free_port

        self.metrics_ports = [free_port() for _ in range(self.args.ingest_instances)]

    def ingest_metrics(self) -> dict[str, float]:
        """The ingest's own counters (its Prometheus endpoint); empty for the reference."""
        if not self.consumers or self.consumers[0].kind != "ingest":
            return {}
        import urllib.request

        wanted = {
            "rentgate_ingest_batches_total": "batches",
            "rentgate_ingest_batch_seconds_sum": "batch_seconds",
            "rentgate_ingest_envelopes_total": "envelopes",
            "rentgate_ingest_states_total": "states",
            "rentgate_ingest_acks_total": "acks",
            "rentgate_ingest_replays_total": "replays",
        }
        found: dict[str, float] = {}
        for port in self.metrics_ports:
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                return {}
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name in wanted:
                    found[wanted[name]] = found.get(wanted[name], 0.0) + float(value)
                elif name.startswith("rentgate_ingest_events_total"):
                    found["events"] = found.get("events", 0.0) + float(value)
        return found

    def ingest_line(self, kind: str, before: dict[str, float], seconds: float) -> dict[str, float]:
        after = self.ingest_metrics()
        if not after or not before:
            return {}
        delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
        batches = delta.get("batches", 0.0)
        if batches:
            say(
                f"[{kind}] ingest's own counters: {batches:,.0f} transactions,"
                f" {delta.get('envelopes', 0):,.0f} envelopes + {delta.get('states', 0):,.0f}"
                f" states, {delta.get('events', 0):,.0f} events taken,"
                f" {delta.get('acks', 0):,.0f} acks made; mean"
                f" {(delta.get('envelopes', 0) + delta.get('states', 0)) / batches:,.0f}"
                f" messages and {1000 * delta.get('batch_seconds', 0) / batches:.1f} ms per"
                f" transaction (its batch_seconds); those add up to"
                f" {100 * delta.get('batch_seconds', 0) / seconds:.0f}% of the {seconds:.0f} s"
                f"{' (summed over the instances)' if len(self.metrics_ports) > 1 else ''}"
            )
        return delta

    # ---- phase 2

    def steady(self, kind: str) -> dict[str, Any]:
        args = self.args
        fleet = self.fleet
        before = fleet.stats(take=True)
        counters = self.ingest_metrics()
        rows_before = self.rows(kind)
        meter = self.meter()
        started = time.monotonic()
        wall_started = time.time()
        fleet.ask(
            {"cmd": "steady", "rate": args.rate / args.processes, "seconds": args.seconds}, 30
        )
        end = started + args.seconds
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        cpu = meter.report()
        wall_ended = time.time()
        rows_at_end = self.rows(kind)
        stats = fleet.stats()
        tail_end = time.monotonic() + args.tail
        while time.monotonic() < tail_end and stats["steady_acked"] < stats["steady_created"]:
            time.sleep(0.25)
            stats = fleet.stats()
        waited = time.monotonic() - end
        stats = fleet.stats(take=True)
        latencies: list[float] = stats["latencies"]
        summary = latency_summary(latencies, stats["steady_created"])
        summary["offered_per_s"] = round(stats["steady_created"] / args.seconds, 1)
        summary["acked_per_s"] = round(len(latencies) / args.seconds, 1)
        summary["acked_within_s"] = round(args.seconds + waited, 1)
        summary["processes"] = cpu
        summary["acks"] = stats["acks"] - before["acks"]
        summary["acks_verified"] = stats["acks_verified"] - before["acks_verified"]
        summary["acks_bad"] = stats["acks_bad"] - before["acks_bad"]
        summary["resends"] = stats["resends"] - before["resends"]
        summary["lost_connections"] = stats["lost"] - before["lost"]
        summary["held"] = stats["held"]
        rows_after = self.rows(kind)
        if rows_before is not None and rows_at_end is not None and rows_after is not None:
            summary["rows_during_load"] = rows_at_end - rows_before
            summary["rows_by_tail_end"] = rows_after - rows_before
        if kind == "ingest":
            summary["tap_to_row"] = self.tap_to_row(wall_started, wall_ended)
        ceiling = args.seconds + waited
        say(
            f"[steady {kind}] {summary['created']:,} events at {summary['offered_per_s']:,.0f}/s"
            f" offered over {args.seconds:.0f} s; {summary['acked']:,} acked"
            f" ({summary['unacked']:,} not acked {waited:.1f} s after the end)"
        )
        say(
            f"[steady {kind}] tap-to-ack p50 {fmt_latency(summary.get('p50_s'), ceiling)},"
            f" p99 {fmt_latency(summary.get('p99_s'), ceiling)},"
            f" max {fmt_latency(summary.get('max_s'), ceiling)}"
            f" (target p99 <= {TARGET_P99_S:.0f} s:"
            f" {verdict(summary.get('p99_s') is not None and summary['p99_s'] <= TARGET_P99_S)});"
            f" {summary['acks']:,} acks, {summary['acks_verified']:,} verified,"
            f" {summary['acks_bad']} bad; {summary['resends']} resends"
        )
        if "rows_during_load" in summary:
            say(
                f"[steady {kind}] rows in the store: +{summary['rows_during_load']:,} by the end"
                f" of the load, +{summary['rows_by_tail_end']:,} {waited:.1f} s later"
            )
        row = summary.get("tap_to_row")
        if row:
            say(
                f"[steady {kind}] tap-to-row from the database (stored_at - ts, ts to the ms):"
                f" {row['rows']:,} rows, p50 {fmt_latency(row['p50_s'], None)},"
                f" p99 {fmt_latency(row['p99_s'], None)}, max {fmt_latency(row['max_s'], None)}"
            )
        say(f"[steady {kind}] {cpu_line(cpu)}")
        summary["ingest_counters"] = self.ingest_line(f"steady {kind}", counters, ceiling)
        return summary

    # ---- phase 3

    def drain(self, kind: str) -> dict[str, Any]:
        args = self.args
        fleet = self.fleet
        per_worker = [args.backlog // args.processes] * args.processes
        per_worker[0] += args.backlog - sum(per_worker)
        for index, count in enumerate(per_worker):
            fleet.pipes[index].send({"cmd": "hold", "events": count})
        for pipe in fleet.pipes:
            if not pipe.poll(120):
                raise TimeoutError("a worker did not build its backlog in 120 s")
            pipe.recv()
        self.start_consumer(kind)
        result: dict[str, Any] = {}
        try:
            before = fleet.stats()
            counters = self.ingest_metrics()
            rows_before = self.rows(kind)
            meter = self.meter()
            started = time.monotonic()
            pending = sum(answer["pending"] for answer in fleet.ask({"cmd": "release"}, 30))
            deadline = started + args.drain_deadline
            series: list[tuple[float, int]] = []
            last_progress, acked = started, 0
            rows_series: list[tuple[float, int]] = []
            next_rows = started
            while time.monotonic() < deadline:
                time.sleep(0.25)
                stats = fleet.stats()
                now = time.monotonic()
                moved = stats["events_acked"] - before["events_acked"]
                if moved > acked:
                    last_progress = now
                acked = moved
                series.append((round(now - started, 2), acked))
                if now >= next_rows:
                    next_rows = now + 1.0
                    count = self.rows(kind)
                    if count is not None:
                        rows_series.append((round(time.monotonic() - started, 2), count))
                if acked >= pending:
                    break
            cpu = meter.report()
            final_rows = self.rows(kind)
            if final_rows is not None:
                rows_series.append((round(time.monotonic() - started, 2), final_rows))
            took = last_progress - started
            rate = acked / took if took > 0 else 0.0
            first = next((t for t, count in series if count > 0), None)
            halfway = next((t for t, count in series if count >= pending / 2), None)
            result = {
                "backlog": pending,
                "acked": acked,
                "seconds": round(took, 2),
                "events_per_s": round(rate, 1),
                "first_ack_s": first,
                "half_acked_s": halfway,
                "complete": acked >= pending,
                "envelopes": stats["envelopes"] - before["envelopes"],
                "acks": stats["acks"] - before["acks"],
                "resends": stats["resends"] - before["resends"],
                "lost_connections": stats["lost"] - before["lost"],
                "held": stats["held"],
                "processes": cpu,
                "series": series[:: max(1, len(series) // 40)],
                "rows_before": rows_before,
                "rows_after": final_rows,
                "rows_series": rows_series,
            }
            if rows_before is not None and final_rows is not None and rows_series:
                grew = [t for t, count in rows_series if count < final_rows]
                rows_took = rows_series[len(grew)][0] if len(grew) < len(rows_series) else None
                result["rows_added"] = final_rows - rows_before
                result["rows_seconds"] = rows_took
                if rows_took:
                    result["rows_per_s"] = round((final_rows - rows_before) / rows_took, 1)
            result["ingest_counters"] = self.ingest_line(
                f"drain {kind}", counters, time.monotonic() - started
            )
        finally:
            result["consumer_said"] = self.stop_consumer()
        say(
            f"[drain {kind}] {result['acked']:,} of {pending:,} backlog events acked in"
            f" {result['seconds']:.1f} s = {fmt_rate(result['events_per_s'])} events/s stored"
            f" (first ack after {first} s, half after {halfway} s;"
            f" {'complete' if result['complete'] else 'DEADLINE'}"
            f"; {result['envelopes']:,} envelopes, {result['acks']:,} acks)"
        )
        if result.get("rows_per_s"):
            say(
                f"[drain {kind}] rows in the store: +{result['rows_added']:,} (repeats of events"
                f" stored before are not rows) by {result['rows_seconds']:.1f} s"
                f" (sampled every second) = {fmt_rate(result['rows_per_s'])} rows/s"
            )
        say(f"[drain {kind}] {cpu_line(result['processes'])}")
        say(f"[drain {kind}] consumer: {result['consumer_said']}")
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_consumer()
        if self._pg_conn is not None:
            with contextlib.suppress(Exception):
                self._pg_conn.close()
        with contextlib.suppress(Exception):
            self.fleet.close()
        with contextlib.suppress(Exception):
            self.broker.close()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.stop()
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            say(f"kept {self.workdir}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=TARGET_GATEWAYS)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--connect-rate", type=float, default=1000.0, help="connections/s in all")
    parser.add_argument("--rate", type=float, default=2000.0, help="steady events/s in all")
    parser.add_argument("--seconds", type=float, default=30.0, help="steady load duration")
    parser.add_argument(
        "--tail", type=float, default=60.0, help="at most this long for the last acks after it"
    )
    parser.add_argument("--backlog", type=int, default=200_000, help="events in the drain")
    parser.add_argument("--drain-deadline", type=float, default=150.0)
    parser.add_argument(
        "--consumer", choices=("reference", "ingest", "both"), default="both", help="under test"
    )
    parser.add_argument(
        "--ingest-command",
        default="",
        help="instead of `rentgate platform ingest` (e.g. another build); the options follow",
    )
    parser.add_argument(
        "--ingest-instances",
        type=int,
        default=1,
        help="ingest processes in the $share group (one PostgreSQL)",
    )
    parser.add_argument(
        "--ingest-arg", action="append", default=[], help="one more argument for the ingest"
    )
    parser.add_argument("--verify-acks", choices=("all", "sample", "none"), default="sample")
    parser.add_argument("--verify-every", type=int, default=100, help="with --verify-acks sample")
    parser.add_argument("--keepalive", type=int, default=30)
    parser.add_argument("--state-every", type=float, default=60.0)
    parser.add_argument("--ack-resend", type=float, default=120.0, help="as [mqtt] ack_resend_s")
    parser.add_argument("--window", type=int, default=16, help="as [mqtt] inflight_window")
    parser.add_argument("--batch-events", type=int, default=500, help="as [mqtt] batch_events")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary folder goes")
    parser.add_argument("--keep", action="store_true", help="keep the folder (logs, databases)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    args = parser.parse_args()

    bench = Bench(args)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    failed: str | None = None
    try:
        bench.setup()
        bench.connect()
        kinds = ["reference", "ingest"] if args.consumer == "both" else [args.consumer]
        for kind in kinds:
            try:
                bench.run_consumer(kind)
            except (RuntimeError, TimeoutError, OSError) as exc:
                failed = f"{kind}: {exc}"
                say(f"[{kind}] FAILED: {exc}")
                bench.summary["consumers"].setdefault(kind, {})["error"] = str(exc)
    finally:
        bench.close()
        signal.signal(signal.SIGTERM, previous)
    report(bench.summary, args)
    if args.json:
        print(json.dumps(bench.summary, separators=(",", ":")))
    return 1 if failed else 0


def report(summary: dict[str, Any], args: argparse.Namespace) -> None:
    connect = summary.get("connect", {})
    say("")
    say("summary")
    say(
        f"  gateways held: {connect.get('held', 0):,} of {args.gateways:,} in"
        f" {connect.get('seconds', 0):.1f} s (target {TARGET_GATEWAYS:,}:"
        f" {verdict(connect.get('held', 0) >= TARGET_GATEWAYS)})"
    )
    rates = {}
    for kind, result in summary["consumers"].items():
        if "error" in result:
            say(f"  {kind}: failed: {result['error']}")
            continue
        steady, drain = result["steady"], result["drain"]
        # Stored = rows in the store over time; acks may be paced (the ingest: one per
        # gateway per 30 s), so the acked rate only bounds it from below.
        rates[kind] = drain.get("rows_per_s") or drain["events_per_s"]
        say(
            f"  {kind}: steady {steady['offered_per_s']:,.0f}/s: tap-to-ack p50"
            f" {fmt_latency(steady.get('p50_s'), steady['acked_within_s'])},"
            f" p99 {fmt_latency(steady.get('p99_s'), steady['acked_within_s'])};"
            f" drain stored {fmt_rate(rates[kind])} events/s, acked"
            f" {fmt_rate(drain['events_per_s'])}/s ({drain['acked']:,} of {drain['backlog']:,})"
        )
    if "ingest" in rates:
        say(
            f"  ingest drain target >= {TARGET_DRAIN_RATE:,}/s:"
            f" {verdict(rates['ingest'] >= TARGET_DRAIN_RATE)}"
        )
        row = summary["consumers"]["ingest"]["steady"].get("tap_to_row") or {}
        if row.get("p99_s") is not None:
            say(
                f"  ingest tap-to-row p99 {fmt_latency(row['p99_s'], None)} at the steady rate"
                f" (target <= 1 s: {verdict(row['p99_s'] <= 1.0)})"
            )
    if "ingest" in rates and rates.get("reference"):
        ratio = rates["ingest"] / rates["reference"]
        summary["drain_ratio"] = round(ratio, 2)
        say(f"  ingest / reference drain: {ratio:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
