"""OSDP card read at the reader -> relay command at the reader; idle CPU with 4 readers.

The readers are real libosdp peripheral devices (gateway/devices/osdp/simulator.py)
on pseudo-terminals, in a child process of their own so that neither their
CPU time nor their share of the GIL counts against the panel. Both stamps of
a read are taken there, with time.perf_counter(): when the card is presented
to the PD (its event queued) and when the PD's application receives the
OUTPUT command. A read is presented only once the previous one's three
commands (OUTPUT, LED, BUZZER) have arrived, after a random pause of 20-120
ms, so reads fall at every phase of the 50 ms poll cycle.

The panel side runs in this process, secure channel on (EnforceSecure), with
an asyncio loop and a sink that allows every card the way the gateway's
DoorController does (lock.unlock, then reader.indicate: OUTPUT, LED, BUZZER):
- driven: `gateway.devices.osdp.reader.OsdpBus` (its own refresh thread);
- default: libosdp's `osdp.ControlPanel` with its own `start()` loop (refresh,
  then sleep 20 ms), events handed to asyncio with call_soon_threadsafe and
  commands submitted from there, as its documentation suggests.
Both in the same run; the ratio is default / driven.

Idle CPU: this process's user+system time over a window with 4 readers online
and nothing presented, for 4 readers on one RS-485 line and for 4 lines of
one reader each (driven), and for 4 readers on one line (default loop).

The switch interval is set to 0.5 ms for both, as `rentgate run` does.

    .venv/bin/python bench/osdp_latency.py
    .venv/bin/python bench/osdp_latency.py --reads 1000 --idle 20
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import benchlib
import osdp
from benchlib import median, percentile, verdict

from gateway.devices.osdp.keys import write_key
from gateway.devices.osdp.reader import OsdpBus, OsdpDeviceConfig, OsdpReader
from gateway.devices.osdp.simulator import OsdpSimBus, SimCommand, wiegand26
from gateway.devices.protocols import CardRead, DoorSignal
from gateway.devices.serial_port import open_line_device
from gateway.domain.credentials import RejectReason

KEY = bytes.fromhex("5fa1c3e7092b4d6f8192a3b4c5d6e7f8")
BAUD = 115200
UNLOCK_S = 3.0
TARGET_P50_MS, TARGET_P99_MS, TARGET_IDLE_PCT = 30.0, 60.0, 5.0


# --- the readers' process -----------------------------------------------------------------


def readers_process(conn: Connection, lines: list[list[int]]) -> None:
    """Simulated readers: one pty per line; presents reads on request, reports latencies."""
    buses = []
    for addresses in lines:
        bus = OsdpSimBus()
        for address in addresses:
            bus.add(address, KEY)
        bus.start()
        buses.append(bus)
    conn.send([str(bus.path) for bus in buses])
    rng = random.Random(7)
    while True:
        message = conn.recv()
        if message[0] == "stop":
            break
        _, line, address, count = message
        pd = buses[line].peripherals[address]
        latencies = []
        for serial in range(count):
            before = len(pd.commands)
            presented = pd.present_card(wiegand26(1, serial), 26)
            try:  # the release, then the LED and the buzzer: the line is quiet again
                commands = pd.wait_for(lambda c, n=before: len(c) >= n + 3, 5.0)
            except TimeoutError:
                latencies.append(float("nan"))
                continue
            output = next(x for x in commands[before:] if x.kind is SimCommand.OUTPUT)
            latencies.append((output.at - presented) * 1000)
            time.sleep(rng.uniform(0.02, 0.12))
        conn.send(latencies)
    for bus in buses:
        bus.close()


class Readers:
    """The readers' process, as the panel side drives it."""

    def __init__(self, lines: list[list[int]]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=readers_process, args=(child, lines))
        self._process.start()
        self.paths = [Path(p) for p in self._conn.recv()]

    async def reads(self, line: int, address: int, count: int) -> list[float]:
        self._conn.send(("reads", line, address, count))
        result: list[float] = await asyncio.to_thread(self._conn.recv)
        return result

    def close(self) -> None:
        self._conn.send(("stop",))
        self._process.join(10)


# --- the panel side -------------------------------------------------------------------------


class AllowAll:
    """The gateway's decision path in miniature: release, then feedback."""

    def __init__(self, readers: dict[str, OsdpReader]) -> None:
        self.readers = readers
        self.reads = 0

    def accepted(self, read: CardRead) -> None:
        self.reads += 1
        reader = self.readers[read.reader]
        reader.unlock(UNLOCK_S)
        reader.indicate(True)

    def rejected(self, reader: str, door: str, reason: RejectReason) -> None:
        pass

    def door_signal(self, device: str, door: str, signal: DoorSignal) -> None:
        pass

    def device_status(self, device: str, door: str, online: bool, detail: str | None) -> None:
        pass

    def saturated(self) -> bool:
        return False


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def idle_cpu(seconds: float) -> float:
    """Percent of one core this process used over `seconds` of doing nothing itself."""
    await asyncio.sleep(1.0)  # settle after coming online
    cpu, wall = cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds() - cpu) / (time.monotonic() - wall)


async def driven(
    paths: list[Path], lines: list[list[int]], keys: Path, work: Callable[[], Any]
) -> Any:
    buses = []
    for line, (path, addresses) in enumerate(zip(paths, lines, strict=True)):
        configs = []
        for address in addresses:
            key_file = keys / f"line{line}-pd{address}.key"
            write_key(key_file, KEY)
            configs.append(OsdpDeviceConfig(f"r{line}-{address}", "front", address, key_file))
        buses.append(OsdpBus(path, BAUD, configs))
    readers = {reader.name: reader for bus in buses for reader in bus.readers}
    sink = AllowAll(readers)
    tasks = [asyncio.create_task(r.run(sink, lambda: None)) for r in readers.values()]
    try:
        await until(lambda: all(r.online for r in readers.values()), 20, "the readers online")
        return await work()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class PtyChannel:
    """The channel a libosdp user writes for a serial port."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.id = 1

    def read(self, max_bytes: int) -> bytes:
        try:
            return os.read(self.fd, max_bytes)
        except BlockingIOError:
            return b""

    def write(self, buf: bytes) -> int:
        return os.write(self.fd, buf)

    def flush(self) -> None:
        pass


async def default_loop(path: Path, addresses: list[int], work: Callable[[], Any]) -> Any:
    """libosdp's ControlPanel as documented: its own refresh thread, events to asyncio."""
    loop = asyncio.get_running_loop()
    fd = open_line_device(path, BAUD)
    channel = PtyChannel(fd)
    infos = [
        osdp.PDInfo(a, channel, scbk=KEY, flags=[osdp.LibFlag.EnforceSecure]) for a in addresses
    ]
    cp: Any = None

    def decide(address: int, event: dict[str, Any]) -> None:
        if event.get("event") != osdp.Event.CardRead:
            return
        out = {"command": osdp.Command.Output, "output_no": 0, "control_code": 5, "timer_count": 30}
        led = {
            "command": osdp.Command.LED, "reader": 0, "led_number": 0, "temporary": True,
            "control_code": 2, "on_color": osdp.CommandLEDColor.Green, "on_count": 15,
            "off_color": osdp.CommandLEDColor.Black, "off_count": 0, "timer_count": 15,
        }  # fmt: skip
        buzzer = {"command": osdp.Command.Buzzer, "reader": 0, "control_code": 2,
                  "on_count": 2, "off_count": 0, "rep_count": 1}  # fmt: skip
        for command in (out, led, buzzer):
            cp.submit_command(address, command)

    def on_event(pd: int, event: dict[str, Any]) -> int:
        loop.call_soon_threadsafe(decide, addresses[pd], event)
        return 0

    cp = osdp.ControlPanel(infos, log_level=osdp.LogLevel.Critical, event_handler=on_event)
    cp.start()
    try:
        await until(lambda: cp.get_num_online() == len(addresses), 20, "the readers online")
        return await work()
    finally:
        cp.stop()
        os.close(fd)


def summary(name: str, values: list[float]) -> dict[str, float]:
    lost = sum(1 for v in values if v != v)
    good = [v for v in values if v == v]
    stats = {
        "p50": median(good),
        "p95": percentile(good, 0.95),
        "p99": percentile(good, 0.99),
        "max": max(good),
        "lost": lost,
    }
    print(
        f"  {name:<34} n={len(good):<4} p50 {stats['p50']:6.1f} ms  p95 {stats['p95']:6.1f} ms  "
        f"p99 {stats['p99']:6.1f} ms  max {stats['max']:6.1f} ms  without a command: {lost}"
    )
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--idle", type=float, default=10.0, help="idle window, seconds")
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)
    print("OSDP: card read at the reader -> relay command at the reader")
    print(f"  {benchlib.machine()}")
    version = importlib.metadata.version("libosdp")
    print(f"  libosdp {version}, {BAUD} baud pty, secure channel on, switch interval 0.5 ms")
    one, four, quad = [[1]], [[1, 2, 3, 4]], [[1], [1], [1], [1]]
    with tempfile.TemporaryDirectory(prefix="osdp-bench-") as tmp:
        keys = Path(tmp)
        readers = Readers(one + one + four + quad + four)
        p = readers.paths
        try:
            fast = asyncio.run(driven([p[0]], one, keys, lambda: readers.reads(0, 1, args.reads)))
            slow = asyncio.run(default_loop(p[1], [1], lambda: readers.reads(1, 1, args.reads)))

            async def shared_line() -> tuple[list[float], float]:
                return await readers.reads(2, 1, args.reads), await idle_cpu(args.idle)

            crowded, shared = asyncio.run(driven([p[2]], four, keys, shared_line))
            print(f"\nlatency over {args.reads} reads:")
            f = summary("driven, one reader on its line", fast)
            s = summary("default, one reader on its line", slow)
            c = summary("driven, reader 1 of 4 on one line", crowded)
            print(
                f"  default / driven: p50 x{s['p50'] / f['p50']:.2f}, "
                f"p95 x{s['p95'] / f['p95']:.2f}, p99 x{s['p99'] / f['p99']:.2f}"
            )
            for name, stats in (("one reader", f), ("4 on a line", c)):
                print(
                    f"  {name}: target p50 <= {TARGET_P50_MS:.0f} ms "
                    f"{verdict(stats['p50'] <= TARGET_P50_MS)}, p99 <= {TARGET_P99_MS:.0f} ms "
                    f"{verdict(stats['p99'] <= TARGET_P99_MS)}, every read released "
                    f"{verdict(stats['lost'] == 0)}"
                )
            apart = asyncio.run(driven(p[3:7], quad, keys, lambda: idle_cpu(args.idle)))
            baseline = asyncio.run(default_loop(p[7], [1, 2, 3, 4], lambda: idle_cpu(args.idle)))
            print(f"\nidle CPU of this process over {args.idle:.0f} s, 4 readers online:")
            print(f"  driven, 4 readers on one line:   {shared:5.2f} % of one core")
            print(f"  driven, 4 lines of one reader:   {apart:5.2f} % of one core")
            print(f"  default loop, 4 on one line:     {baseline:5.2f} % of one core")
            worst = max(shared, apart)
            print(f"  target <= {TARGET_IDLE_PCT:.0f} %: {verdict(worst <= TARGET_IDLE_PCT)}")
        finally:
            readers.close()


if __name__ == "__main__":
    main()
