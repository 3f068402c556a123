"""Soak: taps flowing for an hour while the broker flaps; RSS and open files must stay flat and
nothing may be lost.

`rentgate run` in a child process (the real main job) with a line reader on a
FIFO and a persistent Mosquitto; the benchmark writes taps at `--rate` per
second (a mix of enrolled and unknown cards, now and then a garbled line),
stops the broker for `--outage` seconds every `--flap-every` seconds, and
samples the gateway's RSS and open file descriptors every `--sample` seconds.
A platform subscriber with a persistent session counts what arrives. At the
end: every recorded seq delivered, exactly the taps written decided, RSS and
fd counts (first quarter vs last quarter of the run) printed side by side.
Bounded: it stops by itself after `--minutes`.

    .venv/bin/python bench/soak.py                     # one hour
    .venv/bin/python bench/soak.py --minutes 10 --flap-every 120
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    PersistentSubscriber,
    enrol_cards,
    load,
    stats_of,
    wait_until,
    write_config,
)

GW = "GW-SOAK"


def sample(pid: int) -> tuple[float, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss_mb = int(fields["VmRSS"].split()[0]) / 1024
    return rss_mb, len(os.listdir(f"/proc/{pid}/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=20.0, help="taps per second")
    parser.add_argument("--flap-every", type=float, default=240.0, help="seconds between outages")
    parser.add_argument("--outage", type=float, default=20.0, help="seconds the broker is down")
    parser.add_argument("--sample", type=float, default=10.0)
    args = parser.parse_args()
    print(benchlib.machine())
    work = Path(tempfile.mkdtemp(prefix="rentgate-soak-"))
    (work / "mq").mkdir()
    broker = LocalBroker(workdir=work / "mq", persistent=True)
    broker.start()
    subscriber = PersistentSubscriber(broker.port, f"rentgate/v1/{GW}/events")
    config_path = write_config(work, broker.url, gateway_id=GW)
    config = load(config_path)
    cards = [f"0D{n:06X}" for n in range(200)]
    enrol_cards(config, cards)
    log = (work / "gateway.log").open("ab")
    child = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config_path)],
        stdout=log,
        stderr=log,
    )
    rng = random.Random(1)
    samples: list[tuple[float, float, int]] = []
    taps = garbled = outages = 0
    try:
        fifo = os.open(work / "front.reader", os.O_WRONLY)
        started = time.monotonic()
        end = started + args.minutes * 60
        next_flap = started + args.flap_every
        next_sample = started
        while (now := time.monotonic()) < end:
            if now >= next_sample:
                rss, fds = sample(child.pid)
                samples.append((now - started, rss, fds))
                next_sample += args.sample
            if now >= next_flap:
                broker.stop()
                outages += 1
                time.sleep(args.outage)
                broker.start()
                next_flap += args.flap_every
                continue
            if rng.random() < 0.01:
                os.write(fifo, b"\x00garbled\xff\n")
                garbled += 1
            else:
                card = (
                    rng.choice(cards) if rng.random() < 0.7 else f"0E{rng.randrange(1 << 24):06X}"
                )
                os.write(fifo, card.encode() + b"\n")
                taps += 1
            time.sleep(rng.expovariate(args.rate))
        os.close(fifo)
        wait_until(lambda: stats_of(config.gateway.database).depth == 0, 120, "drained")
        head = stats_of(config.gateway.database).head_seq
        wait_until(lambda: len(subscriber.unique_seqs()) >= head, 60, "all at the platform")
    finally:
        child.terminate()
        child.wait(60)
        subscriber.close()
        broker.stop()
        log.close()
    decisions = [e for e in subscriber.events() if e["type"] == "access.decision"]
    quarter = max(1, len(samples) // 4)
    first, last = samples[:quarter], samples[-quarter:]
    print(f"ran {args.minutes:.0f} min: {taps} taps, {garbled} garbled lines, {outages} outages")
    print(
        f"recorded head seq {head}; delivered {len(subscriber.unique_seqs())} distinct seqs;"
        f" decisions at the platform {len({d['seq'] for d in decisions})} (taps written {taps})"
    )
    for label, column in (("RSS MB", 1), ("open fds", 2)):
        a = statistics.median(s[column] for s in first)
        b = statistics.median(s[column] for s in last)
        peak = max(s[column] for s in samples)
        print(
            f"{label:>9}: first quarter median {a:.1f}, last quarter median {b:.1f},"
            f" ratio {b / a:.3f}, peak {peak:.1f}"
        )
    lost = head - len(subscriber.unique_seqs())
    print(f"lost: {lost}; every tap decided: {len({d['seq'] for d in decisions}) == taps}")


if __name__ == "__main__":
    main()
