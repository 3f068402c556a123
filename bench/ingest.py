"""Durable ingest into the outbox through the real store Writer, against one event per commit.

Three measurements, each on a fresh database opened the gateway's one way
(WAL, synchronous=FULL, the real schema):

1. sustained ingest: producer threads append ~340-byte access.decision events
   to `gateway.store.writer.Writer` (group commit, the gateway's 2 ms window)
   as fast as they can; the rate is events / (first append -> all committed).
   Measured twice: "stamped" (each event built with `new_event`, as the door
   path does, so UUIDv7 + timestamp + JSON are inside the loop) and
   "pre-built" (events built before the clock starts: the writer alone).
2. baseline, same run: a plain sqlite3 loop, INSERT + COMMIT per event, on an
   identically configured fresh database; the ratio is printed.
3. latency group commit adds to one event at a low rate (default 200/s):
   append() -> on_recorded callback, p50/p99, next to the plain single commit.

    .venv/bin/python bench/ingest.py                # defaults: 3 repeats
    .venv/bin/python bench/ingest.py --events 500000 --producers 1 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import benchlib
from benchlib import fmt_rate, median, percentile, verdict

from gateway.clock import SystemClock
from gateway.domain.events import OutboxEvent
from gateway.store.db import connect
from gateway.store.writer import Writer

TARGET_RATE = 60_000
TARGET_RATIO = 15.0
TARGET_P99_MS = 10.0


def _run_producers(
    writer: Writer, count: int, producers: int, make: Callable[[int], OutboxEvent]
) -> tuple[float, float]:
    """Append `count` events from `producers` threads; return (append s, recorded s)."""
    share = [count // producers + (1 if p < count % producers else 0) for p in range(producers)]
    start_gate = threading.Barrier(producers + 1)
    errors: list[BaseException] = []

    def produce(first: int, how_many: int) -> None:
        start_gate.wait()
        try:
            for serial in range(first, first + how_many):
                writer.append(make(serial))
        except BaseException as exc:  # reported after the run, never swallowed
            errors.append(exc)

    threads = []
    first = 0
    for how_many in share:
        threads.append(threading.Thread(target=produce, args=(first, how_many), daemon=True))
        first += how_many
    for thread in threads:
        thread.start()
    start_gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(600)
    appended = time.perf_counter()
    writer.flush(timeout=600)  # commits after everything appended before it
    recorded = time.perf_counter()
    if errors:
        raise errors[0]
    return appended - started, recorded - started


def sustained(
    workdir: Path, count: int, producers: int, window_s: float, *, prebuilt: bool
) -> dict[str, float]:
    path = workdir / ("prebuilt.db" if prebuilt else "stamped.db")
    benchlib.fresh_store(path)
    clock = SystemClock()
    if prebuilt:
        events = [benchlib.stamp(serial, clock.now) for serial in range(count)]

        def make(serial: int) -> OutboxEvent:
            return events[serial]

    else:

        def make(serial: int) -> OutboxEvent:
            return benchlib.stamp(serial, clock.now)

    writer = Writer(path, window_s=window_s)
    writer.start()
    try:
        append_s, recorded_s = _run_producers(writer, count, producers, make)
    finally:
        writer.close()
    if writer.health.events_recorded != count:
        raise RuntimeError(f"recorded {writer.health.events_recorded} of {count}")
    conn = connect(path, readonly=True)
    try:
        rows = conn.execute("SELECT count(*), max(seq) FROM outbox").fetchone()
        size = conn.execute("SELECT avg(length(payload)) FROM outbox").fetchone()[0]
    finally:
        conn.close()
    if rows != (count, count):
        raise RuntimeError(f"outbox holds {rows}, expected {count} rows ending at seq {count}")
    path.unlink()
    return {
        "rate": count / recorded_s,
        "append_rate": count / append_s,
        "commits": writer.health.commits,
        "payload_bytes": size,
    }


def one_per_transaction(workdir: Path, count: int) -> tuple[float, list[float]]:
    """Plain sqlite3: INSERT + COMMIT per event, same pragmas and schema. (rate, commit ms)."""
    path = workdir / "baseline.db"
    benchlib.fresh_store(path)
    clock = SystemClock()
    events = [benchlib.stamp(serial, clock.now) for serial in range(count)]
    conn = connect(path)  # WAL, synchronous=FULL, autocommit: explicit transactions
    commits_ms: list[float] = []
    try:
        started = time.perf_counter()
        for seq, event in enumerate(events, start=1):
            began = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO outbox (seq, id, type, ts, payload) VALUES (?, ?, ?, ?, ?)",
                (seq, event.id, event.type, event.ts, event.payload),
            )
            conn.execute("COMMIT")
            commits_ms.append((time.perf_counter() - began) * 1000)
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    path.unlink()
    return count / elapsed, commits_ms


class _TimedWriter(Writer):
    """The real Writer, with the duration of each group commit noted (diagnosis only)."""

    def __init__(self, path: Path, *, window_s: float) -> None:
        super().__init__(path, window_s=window_s)
        self.commit_ms: list[float] = []

    def _commit(self, conn: Any, batch: Any) -> int:
        began = time.perf_counter()
        head = super()._commit(conn, batch)
        self.commit_ms.append((time.perf_counter() - began) * 1000)
        return head


def settle() -> None:
    """Let the disk finish writing back what earlier runs left behind."""
    os.sync()
    time.sleep(0.5)


def added_latency(
    workdir: Path, rate: float, seconds: float, window_s: float
) -> tuple[list[float], list[float]]:
    """append() -> on_recorded in ms, for events appended one at a time at `rate`/s.

    Also returns how long each group commit took (BEGIN .. COMMIT), when the
    Writer still has the `_commit` method this wraps.
    """
    path = workdir / "latency.db"
    benchlib.fresh_store(path)
    clock = SystemClock()
    count = max(1, int(rate * seconds))
    appended = [0.0] * count
    recorded = [0.0] * count
    done = threading.Event()

    def on_recorded_for(index: int) -> Callable[[int], None]:
        def on_recorded(_seq: int) -> None:
            recorded[index] = time.perf_counter()
            if index == count - 1:
                done.set()

        return on_recorded

    writer: Writer = (
        _TimedWriter(path, window_s=window_s)
        if hasattr(Writer, "_commit")
        else Writer(path, window_s=window_s)
    )
    writer.start()
    try:
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for index in range(count):
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            event = benchlib.stamp(index, clock.now)
            callback = on_recorded_for(index)
            appended[index] = time.perf_counter()
            writer.append(event, callback)
            next_at += interval
        if not done.wait(60):
            raise RuntimeError("last event not recorded within 60 s")
    finally:
        writer.close()
    path.unlink()
    latency = [(r - a) * 1000 for a, r in zip(appended, recorded, strict=True)]
    return latency, list(getattr(writer, "commit_ms", []))


def stamping_alone(count: int) -> float:
    """Events/s that one thread builds with new_event, storing nothing (the CPU ceiling)."""
    clock = SystemClock()
    started = time.perf_counter()
    for serial in range(count):
        benchlib.stamp(serial, clock.now)
    return count / (time.perf_counter() - started)


def paced_single_commits(workdir: Path, rate: float, seconds: float) -> list[float]:
    """Each event committed alone at `rate`/s, the Writer's statements inline (ms each).

    The reference for the latency runs: what one event costs to make durable
    at that rate on this disk with no group commit, window or thread hand-off.
    """
    path = workdir / "paced.db"
    benchlib.fresh_store(path)
    clock = SystemClock()
    conn = connect(path)
    durations: list[float] = []
    try:
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for index in range(max(1, int(rate * seconds))):
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            next_at += interval
            event = benchlib.stamp(index, clock.now)
            began = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            head = conn.execute("SELECT value FROM meta WHERE key = 'head_seq'").fetchone()[0]
            conn.execute(
                "INSERT INTO outbox (seq, id, type, ts, payload) VALUES (?, ?, ?, ?, ?)",
                (head + 1, event.id, event.type, event.ts, event.payload),
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'head_seq'", (head + 1,))
            conn.execute("COMMIT")
            durations.append((time.perf_counter() - began) * 1000)
    finally:
        conn.close()
    path.unlink()
    return durations


def _summary(label: str, values: Sequence[float]) -> str:
    runs = ", ".join(fmt_rate(v) for v in values)
    return f"  {label:<34} median {fmt_rate(median(values)):>9} events/s   (runs: {runs})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per sustained run")
    parser.add_argument("--producers", type=int, default=2, help="producer threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window-ms", type=float, default=2.0, help="group commit window")
    parser.add_argument(
        "--baseline-events", type=int, default=4_000, help="events in the 1-per-commit loop"
    )
    parser.add_argument("--latency-rate", type=float, default=200.0, help="events/s")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--skip-prebuilt", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="rentgate-ingest-", dir=args.dir))
    window_s = args.window_ms / 1000
    print(f"machine: {benchlib.machine()}")
    print(
        f"databases in {workdir}; {args.events:,} events/run, {args.producers} producer(s), "
        f"window {args.window_ms} ms, {args.repeats} repeats"
    )
    stamped: list[dict[str, float]] = []
    prebuilt: list[dict[str, float]] = []
    baseline: list[float] = []
    commit_ms: list[float] = []
    latencies: list[list[float]] = []
    stamping: list[float] = []
    commit_times: list[float] = []
    paced: list[list[float]] = []
    try:
        # Latency first: the heavy runs leave the disk busy writing back and
        # freeing hundreds of MB, which shows up as slow fsyncs for a while.
        for repeat in range(args.repeats):
            settle()
            lat, commits = added_latency(workdir, args.latency_rate, args.latency_seconds, window_s)
            latencies.append(lat)
            commit_times.extend(commits)
            alone = paced_single_commits(workdir, args.latency_rate, args.latency_seconds)
            paced.append(alone)
            print(
                f"latency run {repeat + 1}: append -> on_recorded p50 "
                f"{percentile(lat, 0.5):.2f} ms, p99 {percentile(lat, 0.99):.2f} ms, "
                f"max {max(lat):.2f} ms"
                + (
                    f"; commits p50 {percentile(commits, 0.5):.2f} ms, "
                    f"p99 {percentile(commits, 0.99):.2f} ms, max {max(commits):.2f} ms"
                    if commits
                    else ""
                )
                + f"; each event committed alone at that rate: p50 {percentile(alone, 0.5):.2f}"
                f" ms, p99 {percentile(alone, 0.99):.2f} ms",
                flush=True,
            )
        for repeat in range(args.repeats):
            settle()
            stamped.append(
                sustained(workdir, args.events, args.producers, window_s, prebuilt=False)
            )
            if not args.skip_prebuilt:
                settle()
                prebuilt.append(
                    sustained(workdir, args.events, args.producers, window_s, prebuilt=True)
                )
            stamping.append(stamping_alone(min(args.events, 50_000)))
            settle()
            rate, commits = one_per_transaction(workdir, args.baseline_events)
            baseline.append(rate)
            commit_ms.extend(commits)
            line = (
                f"run {repeat + 1}: stamped {fmt_rate(stamped[-1]['rate'])}/s "
                f"(appends {fmt_rate(stamped[-1]['append_rate'])}/s, "
                f"{stamped[-1]['commits']:.0f} commits)"
            )
            if prebuilt:
                line += (
                    f", pre-built {fmt_rate(prebuilt[-1]['rate'])}/s "
                    f"({prebuilt[-1]['commits']:.0f} commits)"
                )
            line += f", 1-per-commit {fmt_rate(rate)}/s"
            line += f", new_event alone {fmt_rate(stamping[-1])}/s"
            print(line, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    stamped_rate = median([r["rate"] for r in stamped])
    base_rate = median(baseline)
    print()
    print(f"payload size: {stamped[0]['payload_bytes']:.0f} bytes of JSON per event")
    print("sustained durable ingest (first append -> all committed):")
    print(_summary("stamped (new_event in the loop)", [r["rate"] for r in stamped]))
    print(_summary("  appends alone, stamped", [r["append_rate"] for r in stamped]))
    if prebuilt:
        print(_summary("pre-built (writer alone)", [r["rate"] for r in prebuilt]))
    print(_summary("baseline: 1 event per transaction", baseline))
    print(_summary("new_event alone, 1 thread, no store", stamping))
    p50s = [percentile(lat, 0.5) for lat in latencies]
    p99s = [percentile(lat, 0.99) for lat in latencies]
    stamped_ratio = stamped_rate / base_rate
    print(f"ratio stamped / 1-per-transaction:   {stamped_ratio:.1f}x")
    if prebuilt:
        prebuilt_rate = median([r["rate"] for r in prebuilt])
        print(f"ratio pre-built / 1-per-transaction: {prebuilt_rate / base_rate:.1f}x")
    print(
        f"single plain commit (INSERT+COMMIT, fsync): p50 {percentile(commit_ms, 0.5):.2f} ms, "
        f"p99 {percentile(commit_ms, 0.99):.2f} ms"
    )
    print(
        f"group-commit latency, append -> on_recorded at {args.latency_rate:.0f}/s: "
        f"p50 {median(p50s):.2f} ms, p99 {median(p99s):.2f} ms (median of runs; "
        f"p99 per run: {', '.join(f'{v:.2f}' for v in p99s)})"
    )
    alone_p50 = median([percentile(v, 0.5) for v in paced])
    alone_p99 = median([percentile(v, 0.99) for v in paced])
    print(
        f"  same rate, each event committed alone (no group commit): p50 {alone_p50:.2f} ms, "
        f"p99 {alone_p99:.2f} ms -> group commit adds p50 {median(p50s) - alone_p50:+.2f} ms, "
        f"p99 {median(p99s) - alone_p99:+.2f} ms"
    )
    if commit_times:
        print(
            f"  of which the group commits themselves (BEGIN..COMMIT, all runs): "
            f"p50 {percentile(commit_times, 0.5):.2f} ms, "
            f"p99 {percentile(commit_times, 0.99):.2f} ms, max {max(commit_times):.2f} ms"
        )
    print()
    print("targets:")
    print(
        f"  >= {fmt_rate(TARGET_RATE)} events/s sustained (stamped): "
        f"{fmt_rate(stamped_rate)} {verdict(stamped_rate >= TARGET_RATE)}"
    )
    if prebuilt:
        print(
            f"  >= {fmt_rate(TARGET_RATE)} events/s sustained (pre-built): "
            f"{fmt_rate(prebuilt_rate)} {verdict(prebuilt_rate >= TARGET_RATE)}"
        )
    print(
        f"  >= {TARGET_RATIO:.0f}x one-per-transaction (stamped): {stamped_ratio:.1f}x "
        f"{verdict(stamped_ratio >= TARGET_RATIO)}"
    )
    print(
        f"  <= {TARGET_P99_MS:.0f} ms p99 added latency: {median(p99s):.2f} ms "
        f"{verdict(median(p99s) <= TARGET_P99_MS)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
