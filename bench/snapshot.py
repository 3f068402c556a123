"""Applying a 100,000-entry allowlist snapshot: time, peak memory, and decisions meanwhile.

Part 1 (a `rentgate run` child process, a real Mosquitto on 127.0.0.1): the
platform side signs a snapshot of N people (one card and one tenancy each) and
publishes it page by page (1,000 people a page), each page after the reply to
the one before; measured are first publish -> the last page's cmd-reply (the
new version in force and recorded), and the
gateway's peak RSS (VmHWM) before and after. Twice: into an empty gateway, then
replacing that snapshot with a new one.

Part 2 (the gateway in this process, tests/support/gateway.py InProcessGateway, one
line reader on a FIFO): card read -> lock command latency for taps paced at
`--rate`/s, first with nothing else going on (baseline), then while a snapshot
of N people is being applied; printed side by side with the ratio.

    .venv/bin/python bench/snapshot.py
    .venv/bin/python bench/snapshot.py --people 20000 --rate 100
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import benchlib
from benchlib import median, percentile, verdict

from gateway.clock import SystemClock
from gateway.devices.protocols import CardRead
from gateway.domain.command_bodies import snapshot_pages
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import InProcessGateway, Subscriber, load, wait_until, write_config
from tests.support.platform import Platform, key_file, person_entry

TARGET_S = 5.0
GW = "GW-SNAPBENCH"


def signed_pages(platform: Platform, version: int, people: int, prefix: str) -> list[bytes]:
    entries = [person_entry(i, [f"{prefix}{i:06X}"]) for i in range(people)]
    return [
        platform.signed("allowlist.snapshot", body) for body in snapshot_pages(version, entries)
    ]


def send_pages(platform: Platform, pages: list[bytes]) -> dict[str, object]:
    reply: dict[str, object] = {}
    for page in pages:
        reply = platform.send_raw("allowlist.snapshot", page, timeout=600)
    return reply


def peak_rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def part_one(people: int, workdir: Path, broker: LocalBroker) -> list[float]:
    key, public = key_file(workdir / "platform")
    config = write_config(
        workdir,
        f"mqtt://127.0.0.1:{broker.port}",
        gateway_id=GW,
        extra=f'[platform]\nkeys = ["{public}"]\n',
    )
    log = (workdir / "gateway.log").open("ab")
    child = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=log,
    )
    subscriber = Subscriber(broker.port, f"rentgate/v1/{GW}/state", client_id="bench-snap")
    platform = Platform(broker, GW, key, SystemClock())
    times = []
    try:
        wait_until(lambda: any(s["online"] for s in subscriber.states()), 30, "gateway online")
        rss, hwm = peak_rss_mb(child.pid)
        print(f"  gateway idle: RSS {rss:.0f} MB, peak {hwm:.0f} MB")
        for version, prefix in ((1, "A"), (2, "B")):
            pages = signed_pages(platform, version, people, prefix)
            started = time.perf_counter()
            reply = send_pages(platform, pages)
            elapsed = time.perf_counter() - started
            times.append(elapsed)
            rss, hwm = peak_rss_mb(child.pid)
            size = sum(map(len, pages)) / 1e6
            print(
                f"  snapshot v{version} ({people:,} people, {len(pages)} pages, {size:.1f} MB"
                f" signed): applied in {elapsed:.2f} s (ok={reply['ok']},"
                f" version {reply.get('allowlist_version')}); RSS {rss:.0f} MB,"
                f" peak {hwm:.0f} MB"
            )
    finally:
        platform.close()
        subscriber.close()
        child.terminate()
        child.wait(60)
        log.close()
    return times


def part_two(people: int, rate: float, workdir: Path, broker: LocalBroker) -> None:
    key, public = key_file(workdir / "platform")
    config = write_config(
        workdir,
        f"mqtt://127.0.0.1:{broker.port}",
        gateway_id=GW + "-2",
        extra=f'[platform]\nkeys = ["{public}"]\n',
    )
    running = InProcessGateway(load(config)).start()
    gateway = running.gateway
    platform = Platform(broker, GW + "-2", key, gateway.clock)
    reads: dict[int, float] = {}
    accepted = gateway.doors.accepted

    def timed(read: CardRead) -> None:
        reads[len(reads)] = read.read_at
        accepted(read)

    gateway.doors.accepted = timed  # type: ignore[method-assign]
    try:
        wait_until(
            lambda: gateway.uplink is not None and gateway.uplink.session is not None,
            30,
            "connected",
        )
        assert send_pages(platform, signed_pages(platform, 1, 2000, "A"))["ok"]
        wait_until(lambda: len(gateway.doors.index) == 2000, 60, "first index")
        fifo = os.open(workdir / "front.reader", os.O_WRONLY)
        lock = gateway.parts.devices.locks["front"]

        def tap_for(seconds: float) -> list[float]:
            start_reads, start_locks = len(reads), len(lock.commands)
            deadline = time.monotonic() + seconds
            n = 0
            while time.monotonic() < deadline:
                os.write(fifo, f"A{n % 2000:06X}\n".encode())
                n += 1
                time.sleep(1 / rate)
            time.sleep(0.5)
            read_times = [reads[i] for i in range(start_reads, len(reads))]
            locks = list(lock.commands)[start_locks:]
            return [(c.issued_at - r) * 1000 for r, c in zip(read_times, locks, strict=False)]

        baseline = tap_for(5.0)
        pages = signed_pages(platform, 2, people, "B")
        done = threading.Event()

        def apply() -> None:
            send_pages(platform, pages)
            done.set()

        threading.Thread(target=apply, daemon=True).start()
        during: list[float] = []
        while not done.is_set():
            during += tap_for(2.0)
        os.close(fifo)
        for label, values in (("idle", baseline), ("while applying", during)):
            print(
                f"  read -> lock {label:>15}: n={len(values)}, p50 {median(values):.3f} ms,"
                f" p99 {percentile(values, 0.99):.3f} ms, max {max(values):.3f} ms"
            )
        ratio = percentile(during, 0.99) / percentile(baseline, 0.99)
        print(f"  p99 while applying / idle: {ratio:.2f}x")
    finally:
        platform.close()
        running.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200.0, help="taps per second in part 2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(benchlib.machine())
    workdir = Path(tempfile.mkdtemp(prefix="rentgate-snapbench-"))
    try:
        (workdir / "mq").mkdir()
        with LocalBroker(workdir=workdir / "mq") as broker:
            print(f"Part 1: apply a {args.people:,}-entry snapshot (gateway in a child process)")
            (workdir / "one").mkdir()
            times = part_one(args.people, workdir / "one", broker)
            print(f"  target <= {TARGET_S:.0f} s: {verdict(max(times) <= TARGET_S)}")
            print(f"Part 2: decisions while a {args.people:,}-entry snapshot applies")
            (workdir / "two").mkdir()
            part_two(args.people, args.rate, workdir / "two", broker)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
