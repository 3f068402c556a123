"""The web UI's event list end to end: HTTPS pages with 1,000,000 events stored, doors in use.

`bench/events_page.py` times the store's query alone; this times what a
landlord's browser waits for: TLS, FastAPI, the session check, the scope, the
query, the audit entry committed before the page is shown, and JSON.

1. A store with N events (default 1,000,000) is built by `events_page.build`
   and marked delivered (history, as after a long uptime). Forty of its people
   get a tenancy in unit `u1`, so landlord `bench-landlord` (units `u1`) has a
   scope of 40 people plus the door serving `u1`.
2. `rentgate run` starts as its own process on that store, with a real
   Mosquitto, its API on loopback and a line reader on a FIFO at `door-1`.
3. Pages (limit 50) are fetched over one keep-alive HTTPS connection: the
   admin's newest page, a door filter, a person filter, a deep page; the
   landlord's newest page and their door. First with the doors idle (the
   baseline), then while taps arrive at the reader at `--rate` per second
   through the real decision path, outbox and uplink.

Prints p50/p95/p99/max per case, idle and busy, and the ratio busy/idle of p99
against the target (p99 <= 50 ms per page while doors are in use).

    .venv/bin/python bench/web_events.py
    .venv/bin/python bench/web_events.py --events 100000 --samples 100
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import benchlib
import events_page
import httpx
from benchlib import percentile

from gateway.api.auth import hash_password
from gateway.store import users
from gateway.store.db import connect, transaction
from gateway.sync.local_broker import LocalBroker

TARGET_P99_MS = 50.0
PASSWORD = "bench password 1"
SCOPE_PEOPLE = 40


@dataclass(frozen=True)
class Case:
    name: str
    account: str
    params: dict[str, str]


def write_config(root: Path, broker_url: str, reader: Path) -> Path:
    path = root / "gateway.toml"
    path.write_text(
        f"""
[gateway]
id = "GW-BENCH-WEB"
data_dir = "{root / "data"}"

[mqtt]
url = "{broker_url}"

[api]
listen = "127.0.0.1:0"

[storage]
history_days = 120  # the built history spans 90 days: nothing to prune, a steady state

[[doors]]
name = "door-1"
units = ["u1"]

[[devices]]
kind = "line"
door = "door-1"
path = "{reader}"
credential = "card_uid"
""",
        encoding="utf-8",
    )
    return path


def prepare(database: Path, events: int, seed: int) -> None:
    """The history, delivered; the landlord's 40 tenants; two accounts."""
    events_page.build(database, events, seed)
    conn = connect(database)
    try:
        with transaction(conn):
            conn.execute(
                "UPDATE meta SET value = (SELECT value FROM meta WHERE key = 'head_seq')"
                " WHERE key = 'delivered_seq'"
            )
            # The bench's people exist only as ids in the history; rows just
            # sufficient for a scope (no real ID number, nothing sealed).
            for n in range(SCOPE_PEOPLE):
                person = events_page.person_id(n)
                conn.execute(
                    "INSERT INTO people (id, id_hash, id_masked, id_number_sealed, created_at,"
                    " updated_at) VALUES (?, ?, '000***********0000', x'', '2026-01-01',"
                    " '2026-01-01')",
                    (person, secrets.token_bytes(32)),
                )
                conn.execute(
                    "INSERT INTO tenancies (id, person_id, unit, valid_from, created_at)"
                    " VALUES (?, ?, 'u1', '2026-01-01T00:00:00+08:00', '2026-01-01')",
                    (f"t-{n}", person),
                )
            password_hash = hash_password(PASSWORD)
            for name, role, units in (
                ("bench-admin", "admin", ()),
                ("bench-landlord", "landlord", ("u1",)),
            ):
                users.create_user(
                    conn,
                    name=name,
                    role=role,
                    password_hash=password_hash,
                    created_at="2026-01-01T00:00:00+08:00",
                    units=units,
                )
    finally:
        conn.close()


class Gateway:
    """`rentgate run` in its own process; its API's URL from the status file."""

    def __init__(self, config: Path, root: Path) -> None:
        self._log = (root / "gateway.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RENTGATE_LOG_LEVEL": "WARNING"},
        )
        self.status = root / "data" / "status.json"
        self.cert = root / "data" / "tls" / "api.crt"

    def url(self, timeout: float = 120) -> str:
        import json

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the gateway exited; see gateway.log")
            try:
                url = json.loads(self.status.read_text())["api"]["url"]
            except (OSError, ValueError, KeyError):
                url = None
            if url:
                return str(url)
            time.sleep(0.2)
        raise RuntimeError("the API did not come up")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)
        self._log.close()


class Taps:
    """Card serials written to the reader's FIFO at `rate` per second, until stopped."""

    def __init__(self, reader: Path, rate: float, seed: int) -> None:
        self._fd = os.open(reader, os.O_RDWR)
        self._rate = rate
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taps", daemon=True)
        self.written = 0

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            os.write(self._fd, f"04{self._rng.getrandbits(32):08X}\n".encode())
            self.written += 1
            next_at += 1 / self._rate
            self._stop.wait(max(0.0, next_at - time.perf_counter()))

    def __enter__(self) -> Taps:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        os.close(self._fd)


def login(url: str, trust: ssl.SSLContext, account: str) -> httpx.Client:
    client = httpx.Client(base_url=url, verify=trust, timeout=30)
    reply = client.post("/api/v1/login", json={"name": account, "password": PASSWORD})
    reply.raise_for_status()
    return client


def cases(head: int) -> list[Case]:
    person = events_page.person_id(7)
    return [
        Case("admin: newest page", "bench-admin", {}),
        Case("admin: door filter", "bench-admin", {"door": "door-3"}),
        Case("admin: person filter", "bench-admin", {"person": person}),
        Case("admin: deep page", "bench-admin", {"before_seq": str(head // 2)}),
        Case("landlord: newest page (scope)", "bench-landlord", {}),
        Case("landlord: their door", "bench-landlord", {"door": "door-1"}),
    ]


def measure(clients: dict[str, httpx.Client], case: Case, samples: int) -> list[float]:
    client = clients[case.account]
    timings = []
    for _ in range(samples):
        began = time.perf_counter()
        reply = client.get("/api/v1/events", params=case.params)
        timings.append((time.perf_counter() - began) * 1000)
        reply.raise_for_status()
    return timings


def _row(name: str, idle: list[float], busy: list[float]) -> str:
    def stats(values: list[float]) -> str:
        return (
            f"{percentile(values, 0.5):6.1f} {percentile(values, 0.95):6.1f}"
            f" {percentile(values, 0.99):6.1f} {max(values):6.1f}"
        )

    ratio = percentile(busy, 0.99) / max(percentile(idle, 0.99), 1e-9)
    ok = percentile(busy, 0.99) <= TARGET_P99_MS
    return f"{name:32} {stats(idle)} | {stats(busy)} | {ratio:5.2f}x {benchlib.verdict(ok)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=200, help="pages per case and phase")
    parser.add_argument("--rate", type=float, default=20.0, help="taps/s while doors are in use")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rentgate-web-bench-"))
    try:
        (root / "data").mkdir()
        (root / "broker").mkdir()
        began = time.perf_counter()
        prepare(root / "data" / "rentgate.db", args.events, args.seed)
        print(f"{benchlib.machine()}")
        print(f"built {args.events:,} events in {time.perf_counter() - began:.1f} s")
        reader = root / "door-1.reader"
        os.mkfifo(reader, 0o600)
        with LocalBroker(workdir=root / "broker") as broker:
            gateway = Gateway(write_config(root, broker.url, reader), root)
            try:
                url = gateway.url()
                trust = ssl.create_default_context(cafile=str(gateway.cert))
                clients = {a: login(url, trust, a) for a in ("bench-admin", "bench-landlord")}
                head = args.events
                for case in cases(head):  # warm the page cache and the connection
                    measure(clients, case, 5)
                idle = {case.name: measure(clients, case, args.samples) for case in cases(head)}
                with Taps(reader, args.rate, args.seed) as taps:
                    time.sleep(1)
                    busy = {c.name: measure(clients, c, args.samples) for c in cases(head)}
                    written = taps.written
                for client in clients.values():
                    client.close()
            finally:
                gateway.stop()
        print(f"{written} taps at {args.rate:g}/s while busy; {args.samples} pages per case")
        print(f"{'ms per page (limit 50)':32} {'idle p50 p95 p99 max':>27} | {'busy':>27} |")
        for case in cases(head):
            print(_row(case.name, idle[case.name], busy[case.name]))
        print(f"target: p99 <= {TARGET_P99_MS:g} ms per page while doors are in use")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
