"""Access decision latency: credential read by the gateway -> lock command issued.

A real gateway (tests/support/gateway.py InProcessGateway: the `Gateway` class on its
own event loop thread, store writer and MQTT uplink running, a real Mosquitto
on 127.0.0.1 up) with one line reader at the front door on a pty (default) or
a FIFO. For each size (1,000 and 100,000 enrolled credentials by default) the
tenants are enrolled through `gateway.store.registry.enrol` in one
transaction, then a few thousand taps are written into the device, paced
(200/s by default), half known cards and half unknown ones, shuffled.

Measured per tap, all with time.perf_counter() in this one process:
- read -> lock: `CardRead.read_at` (stamped by the line reader when it framed
  the value) to `SimLock` `LockCommand.issued_at`, for allowed taps (target);
- read -> decision for denied taps: read_at to the reader's `indicate()` call;
- write -> lock: the benchmark's os.write() of the line to the lock command
  (includes the kernel's pty/FIFO hop and the event loop waking up);
- time in `DoorController.accepted` (decision + building and queueing the
  access.decision event): how long the loop is held per tap.

`DoorController.accepted` and the reader's `indicate` are wrapped on the
instance to collect read_at and the indicate time; the wrapper costs one
Python call inside the read -> lock interval (well under a microsecond).

    .venv/bin/python bench/decision.py
    .venv/bin/python bench/decision.py --sizes 1000,1000000 --taps 5000 --device fifo
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import benchlib
from benchlib import fmt_rate, median, percentile, verdict

from gateway.config import load_config
from gateway.devices.protocols import CardRead
from gateway.devices.sim import SimLock
from gateway.domain.credentials import CredentialStatus
from gateway.runtime.gateway import Gateway
from gateway.runtime.parts import open_store
from gateway.store import registry
from gateway.store.db import connect, transaction
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import InProcessGateway

TARGET_P50_MS = 0.5
TARGET_P99_MS = 2.0
MS = 1000.0


@dataclass
class Tap:
    written_at: float = 0.0
    read_at: float = 0.0
    lock_at: float | None = None
    indicated_at: float = 0.0
    returned_at: float = 0.0


@dataclass
class RunResult:
    size: int
    taps: list[Tap] = field(default_factory=list)

    def _ms(self, pairs: list[tuple[float, float]]) -> list[float]:
        return [(end - start) * MS for start, end in pairs]

    @property
    def read_to_lock(self) -> list[float]:
        return self._ms([(t.read_at, t.lock_at) for t in self.taps if t.lock_at is not None])

    @property
    def read_to_deny(self) -> list[float]:
        return self._ms([(t.read_at, t.indicated_at) for t in self.taps if t.lock_at is None])

    @property
    def write_to_lock(self) -> list[float]:
        return self._ms([(t.written_at, t.lock_at) for t in self.taps if t.lock_at is not None])

    @property
    def in_accepted(self) -> list[float]:
        return self._ms([(t.read_at, t.returned_at) for t in self.taps])


def write_config(directory: Path, broker_url: str, reader: Path) -> Path:
    path = directory / "gateway.toml"
    path.write_text(
        f"""[gateway]
id = "GW-DECIDE"
data_dir = "{directory / "data"}"
commit_window_ms = 2

[mqtt]
url = "{broker_url}"
reconnect_max_s = 1

[[devices]]
kind = "line"
door = "front"
path = "{reader}"
credential = "card_uid"
""",
        encoding="utf-8",
    )
    return path


class Device:
    """The benchmark's end of the reader's line device: a pty master or a FIFO."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self._master: int | None = None
        self._slave: int | None = None
        self._fifo_fd: int | None = None
        if kind == "pty":
            self._master, self._slave = os.openpty()
            self.path = Path(os.ttyname(self._slave))
        else:
            self.path = directory / "front.reader"
            os.mkfifo(self.path, 0o600)

    def open_for_writing(self) -> None:
        if self.kind == "fifo":
            # The gateway holds the FIFO open read-write, so this does not block for long.
            self._fifo_fd = os.open(self.path, os.O_WRONLY)

    @property
    def fd(self) -> int:
        fd = self._master if self.kind == "pty" else self._fifo_fd
        assert fd is not None
        return fd

    def close(self) -> None:
        for fd in (self._fifo_fd, self._slave, self._master):
            if fd is not None:
                os.close(fd)
        self._fifo_fd = self._slave = self._master = None


class Reloader:
    """Changes the registry every `every_s` s, as a landlord or an allowlist update would.

    Each change reports one enrolled card lost (or unblocks it again) through
    `registry.set_credential_status`; the gateway applies such changes in place.
    With `full_rebuild` the change log is also emptied, so the gateway cannot
    follow it and must rebuild its whole index in a worker thread while the taps
    are decided next to it.
    """

    def __init__(self, database: Path, every_s: float, *, full_rebuild: bool = False) -> None:
        self.bumps = 0
        self._database = database
        self._every = every_s
        self._full_rebuild = full_rebuild
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if every_s > 0:
            self._thread = threading.Thread(target=self._run, name="reloader", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            conn = connect(self._database)
            try:
                with transaction(conn):
                    (credential_id,) = conn.execute(
                        "SELECT id FROM credentials ORDER BY id LIMIT 1"
                    ).fetchone()
                    status = (
                        CredentialStatus.LOST if self.bumps % 2 == 0 else CredentialStatus.ACTIVE
                    )
                    registry.set_credential_status(
                        conn, credential_id, status, datetime.now().astimezone()
                    )
                    if self._full_rebuild:
                        conn.execute("DELETE FROM registry_changes")
            finally:
                conn.close()
            self.bumps += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


@dataclass
class TimedTaps:
    """Each tap's times as the gateway decides them, in order; `position[0]` taps decided."""

    taps: list[Tap]
    position: list[int]


def time_taps(gateway: Gateway, count: int) -> TimedTaps:
    """Time the next `count` taps at the gateway's one reader: read, the lock command (an
    allowed tap) or the reader's indication (a denied one), and the decision's return."""
    lock = gateway.parts.devices.locks["front"]
    assert isinstance(lock, SimLock), "the bench's door has a simulated lock"
    (reader,) = gateway.parts.devices.readers.values()
    doors = gateway.doors
    timed = TimedTaps([Tap() for _ in range(count)], [0])
    taps, position = timed.taps, timed.position
    original_accepted, original_indicate = doors.accepted, reader.indicate

    def indicate(allowed: bool) -> None:
        taps[position[0]].indicated_at = time.perf_counter()
        original_indicate(allowed)

    def accepted(read: CardRead) -> None:
        tap = taps[position[0]]
        tap.read_at = read.read_at
        before = lock.commands[-1] if lock.commands else None
        original_accepted(read)
        tap.returned_at = time.perf_counter()
        after = lock.commands[-1] if lock.commands else None
        if after is not before and after is not None:
            tap.lock_at = after.issued_at
        position[0] += 1

    reader.indicate = indicate  # type: ignore[method-assign]
    doors.accepted = accepted  # type: ignore[method-assign]
    return timed


def one_run(
    config_path: Path, device: Device, plan: list[str], known: set[str], args: argparse.Namespace
) -> tuple[RunResult, float]:
    config = load_config(config_path, environ={})
    built = time.perf_counter()
    running = InProcessGateway(config, web="none")  # the door core alone, as in production
    index_s = time.perf_counter() - built
    gateway = running.gateway
    (reader,) = gateway.parts.devices.readers.values()
    timed = time_taps(gateway, len(plan))
    taps, position = timed.taps, timed.position

    running.start()
    reloads = Reloader(config.gateway.database, args.reload_every, full_rebuild=args.full_rebuild)
    try:
        device.open_for_writing()
        deadline = time.monotonic() + 10
        while (
            not gateway.doors.reader_health.get(reader.name).online and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        time.sleep(0.3)  # let the reader open the device (pty raw mode) before the first tap
        interval = 1.0 / args.rate
        next_at = time.perf_counter()
        fd = device.fd
        for index, card in enumerate(plan):
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            line = card.encode() + b"\r\n"
            taps[index].written_at = time.perf_counter()
            os.write(fd, line)
            next_at += interval
        deadline = time.monotonic() + 30
        while position[0] < len(plan) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        reloads.stop()
        running.stop()
        device.close()
    if args.reload_every:
        print(f"  (registry version bumped {reloads.bumps} times during the run)")
    done = position[0]
    if done != len(plan):
        raise RuntimeError(f"only {done} of {len(plan)} taps reached the decision path")
    allowed = sum(1 for card, tap in zip(plan, taps, strict=True) if tap.lock_at is not None)
    expected = sum(1 for card in plan if card in known)
    if allowed != expected:
        raise RuntimeError(f"{allowed} taps opened the lock, {expected} known cards were tapped")
    warm = args.warmup
    return RunResult(0, taps[warm:]), index_s


def _stats(values: list[float]) -> str:
    return f"p50 {percentile(values, 0.5):.3f} ms, p99 {percentile(values, 0.99):.3f} ms"


def measure_size(
    size: int, broker: LocalBroker, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    directory = workdir / f"size-{size}"
    directory.mkdir()
    probe = Device("fifo", directory)  # the config needs a path; pty paths change per run
    probe.close()
    config_path = write_config(directory, broker.url, probe.path)
    config = load_config(config_path, environ={})
    keys = open_store(config)
    enrol_s = benchlib.enrol_many(config.gateway.database, keys, size)
    print(f"{size:,} credentials enrolled in {enrol_s:.1f} s ({fmt_rate(size / enrol_s)}/s)")
    rng = random.Random(size)
    runs: list[RunResult] = []
    index_times: list[float] = []
    for repeat in range(args.repeats):
        known_cards = [benchlib.card_uid(rng.randrange(size)) for _ in range(args.taps // 2)]
        unknown = [benchlib.unknown_card_uid(rng.randrange(10**8)) for _ in range(args.taps // 2)]
        plan = known_cards + unknown
        rng.shuffle(plan)
        plan = [benchlib.unknown_card_uid(n) for n in range(args.warmup)] + plan
        if args.device == "pty":
            device = Device("pty", directory)
        else:
            shutil.rmtree(directory / "front.reader", ignore_errors=True)
            if (directory / "front.reader").exists():
                (directory / "front.reader").unlink()
            device = Device("fifo", directory)
        config_path = write_config(directory, broker.url, device.path)
        result, index_s = one_run(config_path, device, plan, set(known_cards), args)
        result.size = size
        runs.append(result)
        index_times.append(index_s)
        print(
            f"  run {repeat + 1}: read->lock {_stats(result.read_to_lock)}; "
            f"deny {_stats(result.read_to_deny)}; write->lock {_stats(result.write_to_lock)}; "
            f"in accepted() {_stats(result.in_accepted)}; gateway built in {index_s:.2f} s",
            flush=True,
        )
    shutil.rmtree(directory, ignore_errors=True)
    return {"size": size, "runs": runs, "enrol_s": enrol_s, "index_s": median(index_times)}


def _median_of(runs: list[RunResult], attr: str, fraction: float) -> float:
    return median([percentile(getattr(run, attr), fraction) for run in runs])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000", help="enrolled credentials, comma list")
    parser.add_argument("--taps", type=int, default=3000, help="measured taps per run")
    parser.add_argument("--rate", type=float, default=200.0, help="taps per second")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured taps first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("pty", "fifo"), default="pty")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        default=None,
        help="sys.setswitchinterval for this process (gateway included); default: Python's 5 ms",
    )
    parser.add_argument(
        "--reload-every",
        type=float,
        default=0.0,
        help="change the registry every S seconds (a card reported lost, then unblocked)",
    )
    parser.add_argument(
        "--full-rebuild",
        action="store_true",
        help="with --reload-every: empty the change log too, forcing whole-index rebuilds",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    logging.basicConfig(level=logging.ERROR)  # the gateway's own warnings (stop, reconnect)
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)

    workdir = Path(tempfile.mkdtemp(prefix="rentgate-decision-", dir=args.dir))
    print(f"machine: {benchlib.machine()}")
    print(
        f"{args.taps:,} taps per run ({args.taps // 2:,} known, {args.taps // 2:,} unknown) "
        f"at {args.rate:.0f}/s on a {args.device}, {args.repeats} runs per size"
        + (f", registry changed every {args.reload_every} s" if args.reload_every else "")
        + (" (change log emptied: full rebuilds)" if args.full_rebuild else "")
        + f", GIL switch interval {sys.getswitchinterval() * 1000:g} ms"
    )
    results = []
    try:
        (workdir / "mosquitto").mkdir()
        with LocalBroker(workdir=workdir / "mosquitto") as broker:
            results = [measure_size(size, broker, workdir, args) for size in sizes]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print("median over runs of each run's percentile (ms):")
    header = f"{'credentials':>12} | {'read->lock p50':>14} {'p99':>7} | {'deny p50':>8} {'p99':>7}"
    header += f" | {'write->lock p50':>15} {'p99':>7} | {'accepted() p50':>14} {'p99':>7}"
    print(header)
    verdicts = []
    for entry in results:
        runs = entry["runs"]
        p50 = _median_of(runs, "read_to_lock", 0.5)
        p99 = _median_of(runs, "read_to_lock", 0.99)
        verdicts.append((entry["size"], p50, p99))
        print(
            f"{entry['size']:>12,} | {p50:>14.3f} {p99:>7.3f} | "
            f"{_median_of(runs, 'read_to_deny', 0.5):>8.3f} "
            f"{_median_of(runs, 'read_to_deny', 0.99):>7.3f} | "
            f"{_median_of(runs, 'write_to_lock', 0.5):>15.3f} "
            f"{_median_of(runs, 'write_to_lock', 0.99):>7.3f} | "
            f"{_median_of(runs, 'in_accepted', 0.5):>14.3f} "
            f"{_median_of(runs, 'in_accepted', 0.99):>7.3f}"
        )
    for entry in results:
        print(
            f"{entry['size']:,} credentials: enrolment {entry['enrol_s']:.1f} s, "
            f"gateway construction (index load) {entry['index_s']:.2f} s"
        )
    print()
    print("targets (read -> lock command):")
    for size, p50, p99 in verdicts:
        print(
            f"  {size:>9,} credentials: p50 {p50:.3f} ms <= {TARGET_P50_MS} "
            f"{verdict(p50 <= TARGET_P50_MS)}, p99 {p99:.3f} ms <= {TARGET_P99_MS} "
            f"{verdict(p99 <= TARGET_P99_MS)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
