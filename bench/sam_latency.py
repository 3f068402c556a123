"""ID-card SAM reader: read reply written -> sink.accepted latency, and idle CPU with 4 readers.

Latency: one `SamCardReader` on a pty, the simulator (gateway/devices/sam/simulator.py)
in a thread of this process. For each of N generated people (resident cards,
`J` permits; `I` cards are refused at the door and skipped): present the card,
wait for the read, remove it, wait until the reader has seen the field empty.
Measured per card: from the simulator's time.perf_counter() taken just before the
write() that put the last byte of the 1295-byte read reply into the pty (so it
includes that system call: the reader cannot have had the bytes earlier), to
time.perf_counter() when the sink's accepted() is called. That covers the
kernel's pty hop, the event loop waking, frame decoding, text block parsing and
ID number validation. A pty has no wire time: a real reader at 115200 baud
needs ~112 ms to send those 1295 bytes, and its SAM ~0.5-1 s to read the chip.
Also printed: card placed -> accepted, which is dominated by the poll interval.

Idle CPU: 4 simulators in a child process (`python -m gateway.devices.sam.simulator
--count 4`), 4 readers on one event loop in this process, default poll
interval, no card; this process's CPU time (user + system) over --idle seconds
of wall time. The child's CPU is printed separately (it is not the gateway).

    .venv/bin/python bench/sam_latency.py
    .venv/bin/python bench/sam_latency.py --cards 500 --idle 30
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import benchlib
from benchlib import median, percentile, verdict

from gateway.devices.protocols import CardRead, DoorSignal
from gateway.devices.sam.reader import DEFAULT_POLL_S, SamCardReader
from gateway.devices.sam.simulator import SamSimulator, make_people
from gateway.domain.credentials import RejectReason
from gateway.domain.idcard import CardKind

TARGET_IDLE_CPU = 5.0
MS = 1000.0


class TimingSink:
    """Stamps each accepted read; anything else is a failure of the run."""

    def __init__(self) -> None:
        self.accepted_at: list[float] = []
        self.read = asyncio.Event()

    def accepted(self, read: CardRead) -> None:
        self.accepted_at.append(time.perf_counter())
        if read.card is None:
            raise RuntimeError("a SAM read without the card's fields")
        self.read.set()

    def rejected(self, reader: str, door: str, reason: RejectReason) -> None:
        raise RuntimeError(f"{reader} at {door}: rejected {reason}")

    def door_signal(self, device: str, door: str, signal: DoorSignal) -> None:
        pass

    def device_status(self, device: str, door: str, online: bool, detail: str | None) -> None:
        pass

    def saturated(self) -> bool:
        return False


async def reach(count: Callable[[], int], target: int, timeout: float = 10.0) -> None:
    """Wait until `count()` is at least `target` (bounded)."""
    deadline = time.monotonic() + timeout
    while count() < target:
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        await asyncio.sleep(0.005)


async def latency_run(cards: int, warmup: int, poll: float) -> tuple[list[float], list[float]]:
    people = [p for p in make_people(cards + warmup + 50, seed=11) if p.kind != CardKind.FOREIGNER]
    people = people[: cards + warmup]
    sink = TimingSink()
    decode: list[float] = []
    placed: list[float] = []
    with SamSimulator() as sim:
        reader = SamCardReader("bench", "front", sim.path, poll_interval=poll)
        task = asyncio.create_task(reader.run(sink, lambda: None))
        try:
            for index, person in enumerate(people):
                sink.read.clear()
                put_at = time.perf_counter()
                sim.present(person)
                await asyncio.wait_for(sink.read.wait(), 10)
                await reach(lambda: len(sim.read_written), index + 1)
                if index >= warmup:
                    decode.append(sink.accepted_at[-1] - sim.read_written[-1])
                    placed.append(sink.accepted_at[-1] - put_at)
                empty = sim.replies["find_no_card"]
                sim.remove()
                await reach(lambda: sim.replies["find_no_card"], empty + 2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if reader.errors:
            raise RuntimeError(f"reader errors during the run: {dict(reader.errors)}")
    return decode, placed


async def idle_run(paths: list[Path], seconds: float) -> float:
    sink = TimingSink()
    readers = [SamCardReader(f"idle-{i}", "front", path) for i, path in enumerate(paths)]
    tasks = [asyncio.create_task(r.run(sink, lambda: None)) for r in readers]
    try:
        await asyncio.sleep(1.0)  # settle: ports open, first polls answered
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if any(r.errors for r in readers):
        raise RuntimeError(f"reader errors while idle: {[dict(r.errors) for r in readers]}")
    return 100.0 * cpu / wall


def idle_cpu(count: int, seconds: float) -> tuple[float, float, float]:
    """(gateway-side % of one core, simulator process % of one core, polls per second)."""
    import psutil

    child = subprocess.Popen(
        [sys.executable, "-m", "gateway.devices.sam.simulator", "--count", str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=benchlib.ROOT,
    )
    try:
        assert child.stdout is not None
        paths = [Path(child.stdout.readline().strip()) for _ in range(count)]
        sim_process = psutil.Process(child.pid)
        sim0 = sim_process.cpu_times()
        started = time.perf_counter()
        ours = asyncio.run(idle_run(paths, seconds))
        sim1 = sim_process.cpu_times()
        elapsed = time.perf_counter() - started
        sim_cpu = (sim1.user + sim1.system - sim0.user - sim0.system) / elapsed * 100.0
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(10)
    return ours, sim_cpu, count / DEFAULT_POLL_S


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=300, help="measured card reads")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--poll", type=float, default=0.02, help="poll interval while measuring")
    parser.add_argument("--readers", type=int, default=4, help="readers for the idle CPU run")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    args = parser.parse_args()

    print(f"machine: {benchlib.machine()}")
    decode, placed = asyncio.run(latency_run(args.cards, args.warmup, args.poll))
    print(f"\nread reply fully written -> sink.accepted, {len(decode)} cards (ms):")
    print(
        f"  p50 {percentile(decode, 0.5) * MS:.3f}   p99 {percentile(decode, 0.99) * MS:.3f}"
        f"   max {max(decode) * MS:.3f}"
    )
    print(
        f"card placed -> accepted with a {args.poll * MS:.0f} ms poll (ms): "
        f"median {median(placed) * MS:.1f}   p99 {percentile(placed, 0.99) * MS:.1f}"
    )

    ours, sim_cpu, polls = idle_cpu(args.readers, args.idle)
    print(f"\nidle, {args.readers} readers, no card, {polls:.0f} find polls/s, {args.idle:.0f} s:")
    print(f"  gateway side {ours:.2f} % of one core   (simulators' process: {sim_cpu:.2f} %)")
    print(f"  target <= {TARGET_IDLE_CPU:.0f} %: {verdict(ours <= TARGET_IDLE_CPU)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
