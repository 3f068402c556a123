"""Backlog drain after an outage: outbox -> real Mosquitto -> a platform subscriber.

Per run:
1. a backlog of N access.decision events (~330 bytes of JSON each) is recorded
   through the real store Writer into a gateway data dir while no broker runs
   (built once, then copied for every run so each starts from the same file);
2. a real Mosquitto (gateway.sync.local_broker.LocalBroker, 127.0.0.1) is started
   and a platform subscriber (paho, QoS 1) subscribes, counting unique seqs
   in each envelope;
3. the gateway is started as a child process, `python -m gateway.cli run
   --config FILE`, and the clock runs from spawning it until the subscriber
   holds every seq. Its RSS is sampled with psutil every 50 ms (and the
   kernel's VmHWM read before it is stopped) for the peak.

The baseline runs in the same invocation, against the same broker and a copy
of the same backlog: bench/plain_drain.py (SQLite id cursor -> paho QoS 1,
100 events per message, cursor written on PUBACK), also a child process,
measured the same way. The ratio gateway / plain is printed.

    .venv/bin/python bench/drain.py                      # 200,000 events, 3 runs
    .venv/bin/python bench/drain.py --events 1000000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import benchlib
from benchlib import ROOT, EventCounter, PeakRss, fmt_rate, median, verdict

from gateway.clock import SystemClock
from gateway.config import load_config
from gateway.runtime.parts import open_store
from gateway.store import outbox
from gateway.store.db import connect
from gateway.store.writer import Writer
from gateway.sync.local_broker import LocalBroker, free_port

GATEWAY_ID = "GW-BENCH"
PLAIN_ID = "GW-PLAIN"
TARGET_RATE = 60_000
TARGET_MILLION_S = 20.0
TARGET_RSS_MB = 60.0
MB = 1024 * 1024


@dataclass
class Run:
    what: str
    events: int
    total_s: float  # spawn -> subscriber holds every seq
    first_s: float  # spawn -> first envelope at the subscriber
    peak_rss: int  # max of the 50 ms samples and VmHWM
    cpu_s: float  # user + system CPU of the child until done
    received: int  # events received, duplicates included
    envelopes: int

    @property
    def rate(self) -> float:
        return self.events / self.total_s

    @property
    def drain_rate(self) -> float:
        return self.events / (self.total_s - self.first_s)


def write_config(directory: Path, port: int, window: int | None, batch: int | None) -> Path:
    extra = ""
    if window is not None:
        extra += f"inflight_window = {window}\n"
    if batch is not None:
        extra += f"batch_events = {batch}\n"
    path = directory / "gateway.toml"
    path.write_text(
        f"""[gateway]
id = "{GATEWAY_ID}"
data_dir = "{directory / "data"}"
commit_window_ms = 2

[mqtt]
url = "mqtt://127.0.0.1:{port}"
reconnect_max_s = 1
{extra}""",
        encoding="utf-8",
    )
    return path


def record_backlog(template: Path, count: int, credentials: int) -> float:
    """Enrol `credentials` tenants, record `count` events through the Writer; return seconds."""
    config = load_config(write_config(template, 1883, None, None), environ={})
    keys = open_store(config)
    if credentials:
        enrol_s = benchlib.enrol_many(config.gateway.database, keys, credentials)
        print(f"{credentials:,} credentials enrolled in {enrol_s:.1f} s")
    clock = SystemClock(config.gateway.timezone)
    writer = Writer(config.gateway.database, window_s=0.002)
    writer.start()
    started = time.perf_counter()
    try:
        for serial in range(count):
            writer.append(benchlib.stamp(serial, clock.now))
            if serial % 50_000 == 49_999:
                writer.flush(timeout=600)  # keep the queue (and this process) small
        writer.flush(timeout=600)
    finally:
        writer.close()
    elapsed = time.perf_counter() - started
    conn = connect(config.gateway.database, readonly=True)
    try:
        head = outbox.head_seq(conn)
    finally:
        conn.close()
    if head != count:
        raise RuntimeError(f"backlog head seq {head}, expected {count}")
    return elapsed


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENTGATE_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _measure(
    what: str, argv: list[str], counter: EventCounter, log: Path, timeout: float
) -> tuple[Run, subprocess.Popen[bytes], PeakRss]:
    with log.open("ab") as sink:
        spawned = time.perf_counter()
        child = subprocess.Popen(
            argv, cwd=ROOT, env=_child_env(), stdout=sink, stderr=sink, stdin=subprocess.DEVNULL
        )
    rss = PeakRss(child.pid, 0.05)
    deadline = time.monotonic() + timeout
    finished = False
    exited_early = False
    while time.monotonic() < deadline:
        if counter.done.wait(0.2):
            finished = True
            break
        if child.poll() is not None and not counter.done.wait(2.0):
            exited_early = True  # gone without delivering everything
            break
    hwm = rss.high_water_mark() or 0
    cpu = rss.cpu_seconds() or 0.0  # the plain script may have exited already
    rss.stop()
    if not finished:
        child.kill()
        child.wait()
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        how = f"exited with {child.returncode}" if exited_early else f"timed out ({timeout:.0f} s)"
        raise RuntimeError(
            f"{what} {how}: subscriber holds {counter.unique:,} of {counter.expected:,} "
            f"events in {counter.envelopes:,} envelopes; log tail:\n{tail}"
        )
    if counter.first_at is None or counter.done_at is None:
        raise RuntimeError(f"{what}: subscriber finished without timestamps")
    run = Run(
        what,
        counter.expected,
        counter.done_at - spawned,
        counter.first_at - spawned,
        max(rss.peak, hwm),
        cpu,
        counter.received,
        counter.envelopes,
    )
    return run, child, rss


def run_gateway(
    template: Path, workdir: Path, port: int, count: int, args: argparse.Namespace
) -> Run:
    shutil.copytree(template / "data", workdir / "data")
    config_path = write_config(workdir, port, args.window, args.batch)
    counter = EventCounter(
        port, f"rentgate/v1/{GATEWAY_ID}/events", count, f"bench-platform-{time.time_ns()}"
    )
    try:
        argv = [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING"]
        argv += ["run", "--config", str(config_path)]
        run, child, _rss = _measure("gateway", argv, counter, workdir / "gateway.log", args.timeout)
        child.terminate()
        code = child.wait(60)
    finally:
        counter.close()
    if code != 0:
        raise RuntimeError(f"gateway exited {code}; see {workdir / 'gateway.log'}")
    conn = connect(workdir / "data" / "rentgate.db", readonly=True)
    try:
        delivered = outbox.delivered_seq(conn)
    finally:
        conn.close()
    if delivered != count:
        print(f"  note: gateway persisted delivered_seq {delivered:,} of {count:,} on stop")
    shutil.rmtree(workdir / "data", ignore_errors=True)
    return run


def run_plain(template: Path, workdir: Path, port: int, count: int, timeout: float) -> Run:
    shutil.copytree(template / "data", workdir / "plain")
    topic = f"rentgate/v1/{PLAIN_ID}/events"
    counter = EventCounter(port, topic, count, f"bench-platform-plain-{time.time_ns()}")
    try:
        argv = [sys.executable, str(ROOT / "bench" / "plain_drain.py")]
        argv += ["--db", str(workdir / "plain" / "rentgate.db"), "--port", str(port)]
        argv += ["--topic", topic, "--gateway-id", PLAIN_ID]
        run, child, _rss = _measure("plain", argv, counter, workdir / "plain.log", timeout)
        code = child.wait(60)
    finally:
        counter.close()
    if code != 0:
        raise RuntimeError(f"plain drain exited {code}; see {workdir / 'plain.log'}")
    lines = (workdir / "plain.log").read_text(encoding="utf-8").strip().splitlines()
    report = json.loads(lines[-1])
    run.peak_rss = max(run.peak_rss, int(report["vm_hwm_kb"]) * 1024)
    (workdir / "plain.log").unlink()
    shutil.rmtree(workdir / "plain", ignore_errors=True)
    return run


def _line(run: Run) -> str:
    return (
        f"{run.what:<8} {fmt_rate(run.rate):>8} events/s spawn->all ({run.total_s:.2f} s; "
        f"first envelope after {run.first_s:.2f} s, {fmt_rate(run.drain_rate)}/s from there), "
        f"peak RSS {run.peak_rss / MB:.1f} MB, CPU {run.cpu_s:.2f} s, "
        f"{run.envelopes:,} envelopes, {run.received - run.events:,} duplicates"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="backlog size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--credentials", type=int, default=0, help="tenants enrolled first (RSS target: 100000)"
    )
    parser.add_argument("--no-plain", action="store_true", help="skip the plain-script baseline")
    parser.add_argument("--window", type=int, default=None, help="[mqtt] inflight_window")
    parser.add_argument("--batch", type=int, default=None, help="[mqtt] batch_events")
    parser.add_argument("--timeout", type=float, default=300.0, help="per run (s)")
    parser.add_argument("--dir", type=Path, default=None, help="where the data dirs go")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="rentgate-drain-", dir=args.dir))
    template = workdir / "template"
    template.mkdir()
    print(f"machine: {benchlib.machine()}")
    print(f"work dir {workdir}; backlog {args.events:,} events; {args.repeats} repeats")
    try:
        recorded_s = record_backlog(template, args.events, args.credentials)
        size = (template / "data" / "rentgate.db").stat().st_size
        print(
            f"backlog recorded through the Writer in {recorded_s:.1f} s "
            f"({fmt_rate(args.events / recorded_s)}/s), database {size / MB:.0f} MB"
        )
        port = free_port()
        gateway_runs: list[Run] = []
        plain_runs: list[Run] = []
        (workdir / "mosquitto").mkdir()
        with LocalBroker(port=port, workdir=workdir / "mosquitto") as broker:
            for repeat in range(args.repeats):
                gateway_runs.append(run_gateway(template, workdir, broker.port, args.events, args))
                print(f"run {repeat + 1}: {_line(gateway_runs[-1])}", flush=True)
                if not args.no_plain:
                    plain_runs.append(
                        run_plain(template, workdir, broker.port, args.events, args.timeout)
                    )
                    print(f"run {repeat + 1}: {_line(plain_runs[-1])}", flush=True)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    rate = median([r.rate for r in gateway_runs])
    drain_rate = median([r.drain_rate for r in gateway_runs])
    peak = median([r.peak_rss for r in gateway_runs]) / MB
    print()
    print(f"gateway drain, median of {len(gateway_runs)}:")
    print(f"  spawn -> all delivered:          {fmt_rate(rate)} events/s")
    print(f"  first envelope -> all delivered: {fmt_rate(drain_rate)} events/s")
    print(
        f"  start-up (spawn -> first envelope): {median([r.first_s for r in gateway_runs]):.2f} s"
    )
    print(
        f"  peak RSS: {peak:.1f} MB (max of runs {max(r.peak_rss for r in gateway_runs) / MB:.1f})"
    )
    if plain_runs:
        plain_rate = median([r.rate for r in plain_runs])
        plain_drain = median([r.drain_rate for r in plain_runs])
        print(f"plain drain script, median of {len(plain_runs)}:")
        print(f"  spawn -> all delivered:          {fmt_rate(plain_rate)} events/s")
        print(f"  first envelope -> all delivered: {fmt_rate(plain_drain)} events/s")
        print(f"  peak RSS: {median([r.peak_rss for r in plain_runs]) / MB:.1f} MB")
        print(
            f"ratio gateway / plain: {rate / plain_rate:.2f} (spawn -> all), "
            f"{drain_rate / plain_drain:.2f} (first envelope -> all)"
        )
    print("(targets.md reference for the plain script on this kind of machine: ~110,000 events/s)")
    million_s = 1_000_000 / rate
    print()
    print("targets:")
    print(
        f"  >= {fmt_rate(TARGET_RATE)} events/s end to end: {fmt_rate(rate)} "
        f"{verdict(rate >= TARGET_RATE)}"
    )
    scope = "measured" if args.events >= 1_000_000 else "extrapolated at this rate"
    print(
        f"  1,000,000 events in < {TARGET_MILLION_S:.0f} s: {million_s:.1f} s ({scope}) "
        f"{verdict(million_s < TARGET_MILLION_S)}"
    )
    print(
        f"  gateway RSS <= {TARGET_RSS_MB:.0f} MB during the drain "
        f"({args.credentials:,} credentials, {args.events:,}-event backlog): "
        f"{peak:.1f} MB {verdict(peak <= TARGET_RSS_MB)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
