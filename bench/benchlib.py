"""Small helpers shared by the benchmark scripts (not a test helper; no assertions).

The scripts put `bench/` (their own folder) first on sys.path by being run as
`python bench/NAME.py`, so `import benchlib` finds this file; the repository root is
added here so that the tests' helpers (`tests.support.gateway`, ...) can be imported as well.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.domain.events import EventType, OutboxEvent, new_event  # noqa: E402
from gateway.store.db import connect  # noqa: E402
from gateway.store.migrations import migrate  # noqa: E402


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    """One line describing where the numbers were taken."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPU ({cpu}), "
        f"Python {platform.python_version()}, SQLite {sqlite_version()}, "
        f"load avg {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"
    )


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def fresh_store(path: Path) -> None:
    """A new database file with the gateway's pragmas and schema."""
    conn = connect(path)
    try:
        migrate(conn)
    finally:
        conn.close()


def decision_body(serial: int) -> dict[str, Any]:
    """An access.decision body like the door path writes; with the envelope ~340 bytes."""
    return {
        "door": "front",
        "reader": "front-line-0",
        "result": "allow" if serial % 2 else "deny",
        "reason": "granted" if serial % 2 else "unknown",
        "credential": {
            "kind": "card_uid",
            "masked": "04A***D4",
            "hash": f"{serial:032x}",
        },
        "person": "5f0c6c0e-8a1e-4c4e-9a55-1b2f3c4d5e6f" if serial % 2 else None,
    }


def stamp(serial: int, now: Callable[[], datetime]) -> OutboxEvent:
    """Build an event the way the gateway does (UUIDv7, wall time, JSON once)."""
    return new_event(EventType.ACCESS_DECISION, now(), time.monotonic(), decision_body(serial))


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


class EventCounter:
    """A platform-side MQTT subscriber (paho, QoS 1) that counts events per envelope.

    Seqs are taken from the envelope text (`{"seq":N,` opens every event), not
    from a full JSON parse, so that the subscriber costs little CPU next to the
    gateway it measures; duplicates (at-least-once) are counted once.
    """

    def __init__(self, port: int, topic: str, expected: int, client_id: str) -> None:
        import re

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self._seq = re.compile(rb'\{"seq":(\d+),')
        self.expected = expected
        self._seen = bytearray(expected + 1)
        self.unique = 0
        self.received = 0
        self.envelopes = 0
        self.out_of_range = 0
        self.first_at: float | None = None
        self.done_at: float | None = None
        self.done = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self._client.on_message = self._on_message
        connected = threading.Event()
        subscribed = threading.Event()
        self._client.on_connect = lambda *_a: connected.set()
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not connected.wait(10):
            raise RuntimeError("subscriber could not connect")
        self._client.subscribe(topic, qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("subscription not acknowledged")

    def _on_message(self, _client: object, _userdata: object, message: Any) -> None:
        now = time.perf_counter()
        if self.first_at is None:
            self.first_at = now
        self.envelopes += 1
        seen = self._seen
        for raw in self._seq.findall(message.payload):
            seq = int(raw)
            self.received += 1
            if seq > self.expected:
                self.out_of_range += 1
            elif not seen[seq]:
                seen[seq] = 1
                self.unique += 1
        if self.unique >= self.expected and self.done_at is None:
            self.done_at = now
            self.done.set()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class PeakRss:
    """Samples a process's resident set every `every_s` seconds; keeps the peak."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self._every = every_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                rss = self._process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._stop.wait(self._every)

    def high_water_mark(self) -> int | None:
        """The kernel's own peak (VmHWM) for the process, while it is alive."""
        try:
            with open(f"/proc/{self._process.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU the process has used so far (None once it is gone)."""
        import psutil

        try:
            times = self._process.cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def card_uid(serial: int) -> str:
    """A distinct, valid card serial (10 hex digits) per serial number."""
    return f"04{serial:08X}"


def unknown_card_uid(serial: int) -> str:
    """A valid card serial that `card_uid` never produces."""
    return f"05{serial:08X}"


def enrol_many(database: Path, keys: Any, count: int, unit: str = "1") -> float:
    """Enrol `count` tenants (one card each, a tenancy valid now) in one transaction.

    Goes through `gateway.store.registry.enrol`, so every row is what the
    gateway itself writes (sealed names and ID numbers, keyed lookups).
    Returns the seconds it took.
    """
    from datetime import date, timedelta

    from gateway.domain.credentials import CredentialKind, parse_credential
    from gateway.domain.ids import IdNumber, check_character
    from gateway.domain.people import CredentialGrant, Enrolment, Tenancy
    from gateway.store import registry
    from gateway.store.db import transaction

    now = datetime.now().astimezone()
    tenancy = Tenancy(unit, now - timedelta(days=1), now + timedelta(days=365))
    first_birthday = date(1950, 1, 1)
    conn = connect(database)
    started = time.perf_counter()
    try:
        with transaction(conn):
            for serial in range(count):
                birthday = first_birthday + timedelta(days=serial // 1000)
                first17 = f"341002{birthday:%Y%m%d}{serial % 1000:03d}"
                enrolment = Enrolment(
                    IdNumber(first17 + check_character(first17)),
                    f"Tenant {serial}",
                    (CredentialGrant(parse_credential(CredentialKind.CARD_UID, card_uid(serial))),),
                    tenancy,
                )
                registry.enrol(conn, keys, enrolment, now)
    finally:
        conn.close()
    return time.perf_counter() - started
