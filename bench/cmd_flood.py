"""Door decisions while junk floods the command topics, and a signed command sent mid-flood.

A real gateway (tests/support/gateway.py InProcessGateway, as bench/decision.py
runs it: store writer, MQTT uplink and downlink, a private Mosquitto on
127.0.0.1) with one line reader on a pty and 1,000 enrolled tenants. Taps are
written into the pty at 200/s, half known cards, half unknown, timed as in
bench/decision.py (read -> lock command for allowed taps, read -> indicate for
denied ones), in these runs:

- `quiet`: no flood (the baseline);
- `elsewhere`: N junk messages (default 100,000) on another gateway's command
  topics, which this gateway does not subscribe: what the broker's own load costs;
- `flood`: the same N junk messages on this gateway's `cmd/+` (garbage, wrong
  shapes, oversized, unknown commands, other addressees, and well-formed envelopes
  whose signature does not verify), with a properly signed `door.unlock` sent
  after the first half: the time from its publish to its lock command is printed;
- `delta`: 4 MB junk messages on `cmd/allowlist.delta` at 5/s for the whole run,
  well-formed enough to be parsed (as the worst junk is).

Percentiles are over the taps written while the flood was being sent (all taps
for `quiet`). The flooder is a process of its own (this script with `--flooder`),
publishing the junk at QoS 0 as fast as paho and the broker go, the signed command
at QoS 1.

    .venv/bin/python bench/cmd_flood.py
    .venv/bin/python bench/cmd_flood.py --junk 20000 --runs quiet,flood
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import paho.mqtt.client as paho
from benchlib import percentile
from decision import Device, Tap, time_taps
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import load_config
from gateway.devices.sim import SimLock
from gateway.domain.signed_commands import CommandName, sign
from gateway.domain.signing import SigningKey
from gateway.runtime.parts import open_store
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import InProcessGateway
from tests.support.junk import junk_command

GW = "GW-FLOOD"
MS = 1000.0
PLATFORM_UNLOCK_S = 7
"""The signed unlock's release time: no tap uses it, so its lock command is recognisable."""


def write_config(directory: Path, broker_url: str, reader: Path, public_key: Path) -> Path:
    path = directory / "gateway.toml"
    path.write_text(
        f"""[gateway]
id = "{GW}"
data_dir = "{directory / "data"}"
commit_window_ms = 2

[mqtt]
url = "{broker_url}"
reconnect_max_s = 1

[api]
listen = "127.0.0.1:0"

[platform]
keys = ["{public_key}"]

[[devices]]
kind = "line"
door = "front"
path = "{reader}"
credential = "card_uid"
""",
        encoding="utf-8",
    )
    return path


@dataclass
class Flood:
    """What the flooder did, on CLOCK_MONOTONIC (perf_counter, shared by every process)."""

    started: float = 0.0
    ended: float = 0.0
    sent: int = 0
    signed_at: float | None = None


def flood_main(args: argparse.Namespace) -> int:
    """The flooder, in a process of its own so that it competes with the gateway for the CPU
    (as a flooding client would) but not for the gateway's GIL."""
    flood = Flood()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-flooder", protocol=paho.MQTTv5
    )
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    signed = args.signed.read_bytes() if args.signed else None
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    flood.started = time.perf_counter()
    info = None
    if args.flooder == "delta":
        padding = b"y" * (4 * 1024 * 1024 - 200)
        big = b'{"v":1,"gw":"' + GW.encode() + b'","kid":"k-x","sig":"x","body":{"x":"'
        big += padding + b'"}}'
        deadline = flood.started + args.seconds
        while time.perf_counter() < deadline:
            info = client.publish(f"rentgate/v1/{GW}/cmd/allowlist.delta", big, qos=1)
            flood.sent += 1
            time.sleep(0.2)
    else:
        root = f"rentgate/v1/{GW if args.flooder == 'flood' else 'GW-ELSEWHERE'}/cmd"
        for serial in range(args.junk):
            if serial == args.junk // 2 and signed is not None:
                flood.signed_at = time.perf_counter()
                client.publish(f"rentgate/v1/{GW}/cmd/door.unlock", signed, qos=1)
            topic, payload = junk_command(serial, root, GW)
            info = client.publish(topic, payload, qos=0)
            flood.sent += 1
            while len(client._out_packet) > 2000:  # bounded memory: let paho's thread send
                time.sleep(0.0005)
    if info is not None:
        info.wait_for_publish(120)
    flood.ended = time.perf_counter()
    client.disconnect()
    client.loop_stop()
    print(json.dumps(vars(flood)), flush=True)
    return 0


class Flooder:
    """The flooder process, seen from the benchmark."""

    def __init__(
        self,
        port: int,
        scenario: str,
        args: argparse.Namespace,
        signed: Path | None,
        *,
        nice: int = 0,
    ) -> None:
        command = [
            *(["nice", "-n", str(nice)] if nice else []),
            sys.executable,
            __file__,
            "--flooder",
            scenario,
            "--port",
            str(port),
            "--junk",
            str(args.junk),
            "--seconds",
            str(args.delta_seconds),
        ]
        if signed is not None:
            command += ["--signed", str(signed)]
        self._command = command
        self._process: subprocess.Popen[bytes] | None = None

    def prepare(self) -> None:
        """Start the process (imports, connection) and wait until it is ready to flood."""
        self._process = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the flooder did not start")

    def start(self) -> None:
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(b"go\n")
        self._process.stdin.flush()

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def result(self) -> Flood:
        assert self._process is not None
        assert self._process.stdout is not None
        out = self._process.stdout.read()
        self._process.wait(300)
        return Flood(**json.loads(out.decode().strip().splitlines()[-1]))


@dataclass
class Result:
    scenario: str
    taps: list[Tap] = field(default_factory=list)
    flood: Flood | None = None
    applied_after_ms: float | None = None
    judged: dict[str, Any] = field(default_factory=dict)

    def window(self) -> list[Tap]:
        if self.flood is None:
            return self.taps
        return [t for t in self.taps if self.flood.started <= t.written_at <= self.flood.ended]

    def decision_ms(self) -> list[float]:
        ends = [(t.read_at, t.lock_at or t.indicated_at) for t in self.window()]
        return [(end - start) * MS for start, end in ends]


def one_run(
    scenario: str,
    directory: Path,
    broker: LocalBroker,
    key: SigningKey,
    public: Path,
    args: argparse.Namespace,
    plan: list[str],
) -> Result:
    device = Device("pty", directory)
    config = load_config(write_config(directory, broker.url, device.path, public), environ={})
    running = InProcessGateway(config, web="none")  # the core alone, as in production
    gateway = running.gateway
    lock = gateway.parts.devices.locks["front"]
    assert isinstance(lock, SimLock), "the bench's door has a simulated lock"
    timed = time_taps(gateway, len(plan))
    taps, position = timed.taps, timed.position
    result = Result(scenario)
    flooder: Flooder | None = None
    running.start()
    try:
        running.wait_connected()
        time.sleep(0.5)  # the reader has opened the pty, the subscription is in place
        signed = None
        if scenario == "flood":
            now = int(gateway.clock.now().timestamp())
            body = {"door": "front", "seconds": PLATFORM_UNLOCK_S}
            signed = directory / "signed-unlock.json"
            signed.write_bytes(
                sign(key, gateway_id=GW, name=CommandName.DOOR_UNLOCK, body=body, now=now, ttl_s=60)
            )
        if scenario != "quiet":
            flooder = Flooder(broker.port, scenario, args, signed)
            flooder.prepare()
        interval, next_at = 1.0 / args.rate, time.perf_counter()
        for index, card in enumerate(plan):
            if index == args.warmup and flooder is not None:
                flooder.start()
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            taps[index].written_at = time.perf_counter()
            os.write(device.fd, card.encode() + b"\r\n")
            next_at += interval
            if flooder is not None and index > args.warmup and not flooder.is_alive():
                break  # the flood is over: the taps after it measure nothing new
        done_by = time.monotonic() + 60
        while position[0] < index + 1 and time.monotonic() < done_by:
            time.sleep(0.01)
        result.taps = taps[args.warmup : position[0]]
        if flooder is not None:
            result.flood = flooder.result()
        if scenario == "flood" and result.flood and result.flood.signed_at is not None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                unlocks = [c for c in lock.commands if c.seconds == PLATFORM_UNLOCK_S]
                if unlocks:
                    result.applied_after_ms = (unlocks[0].issued_at - result.flood.signed_at) * MS
                    break
                time.sleep(0.01)
        stats = getattr(gateway.parts.downlink, "stats", None)
        counts = stats() if callable(stats) else stats
        result.judged = dict(vars(counts)) if counts is not None else {}
    finally:
        running.stop()
        device.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junk", type=int, default=100_000, help="junk messages per flood")
    parser.add_argument("--taps", type=int, default=6000, help="taps at most per run")
    parser.add_argument("--rate", type=float, default=200.0, help="taps per second")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--delta-seconds", type=float, default=10.0, help="length of `delta`")
    parser.add_argument("--runs", default="quiet,elsewhere,flood,delta")
    parser.add_argument(
        "--broker-queue",
        type=int,
        default=None,
        help="Mosquitto max_queued_messages (default: LocalBroker's 100000; Mosquitto's own 1000)",
    )
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--flooder", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--signed", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flooder:
        return flood_main(args)
    logging.basicConfig(level=logging.WARNING, format="  log: %(name)s: %(message)s")
    logging.getLogger("gateway.api").setLevel(logging.ERROR)  # first-run setup notices
    workdir = Path(tempfile.mkdtemp(prefix="rentgate-flood-", dir=args.dir))
    print(f"machine: {benchlib.machine()}")
    results: list[Result] = []
    try:
        key = SigningKey.generate()
        _private, public = key.save(workdir / "platform")
        (workdir / "mosquitto").mkdir()
        queue = f"max_queued_messages {args.broker_queue}" if args.broker_queue else ""
        with LocalBroker(workdir=workdir / "mosquitto", extra_config=queue) as broker:
            probe = Device("fifo", workdir)
            probe.close()
            config = load_config(write_config(workdir, broker.url, probe.path, public), environ={})
            benchlib.enrol_many(config.gateway.database, open_store(config), 1000)
            rng = random.Random(13)
            for scenario in args.runs.split(","):
                known = [benchlib.card_uid(rng.randrange(1000)) for _ in range(args.taps // 2)]
                unknown = [benchlib.unknown_card_uid(n) for n in range(args.taps // 2)]
                plan = known + unknown
                rng.shuffle(plan)
                taps = args.taps
                if scenario == "quiet":
                    taps = min(taps, int(args.delta_seconds * args.rate))
                plan = [benchlib.unknown_card_uid(10**7 + n) for n in range(args.warmup)] + plan
                plan = plan[: args.warmup + taps]
                result = one_run(scenario, workdir, broker, key, public, args, plan)
                results.append(result)
                report(result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(result: Result) -> None:
    values = result.decision_ms()
    line = f"{result.scenario:>9}: {len(values):5d} taps"
    if values:
        line += (
            f", decision p50 {percentile(values, 0.5):.3f} ms p99 {percentile(values, 0.99):.3f} ms"
        )
    flood = result.flood
    if flood is not None:
        seconds = flood.ended - flood.started
        line += f"; {flood.sent:,} junk in {seconds:.1f} s ({flood.sent / seconds:,.0f}/s)"
    if result.scenario == "flood":
        applied = result.applied_after_ms
        line += "; signed unlock " + (
            f"applied {applied:.0f} ms after its publish" if applied is not None else "NOT applied"
        )
    print(line, flush=True)
    if result.judged and result.scenario != "quiet":
        print(f"           gateway counts: {result.judged}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
