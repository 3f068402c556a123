"""The pre-ingest reference consumer, kept for comparison: the baseline of `bench/fleet.py`.

This is a copy of `examples/platform_consumer.py` as it stood before the
platform's ingest (`rentgate platform ingest`, PostgreSQL) was written: the
`EventStore` and `Consumer` classes are unchanged, so that the fleet benchmark
keeps measuring "today's reference consumer" after the example becomes a thin
wrapper around the ingest. Only `main` differs: it prints `ready` once
subscribed and stops cleanly (printing its counts) on SIGTERM.

What it does (docs/asyncapi.yaml is the contract): SQLite in WAL mode, one
transaction per envelope (`INSERT ... ON CONFLICT DO NOTHING` keyed by
(gw, seq)), an MQTT 5 shared subscription `$share/{group}/rentgate/v1/+/events`
through paho, and after each commit a signed `ack` of the highest seq through
which every event of that gateway is stored, starting from the `acked_seq` of
the gateway's retained state.

    python bench/reference_consumer.py --broker mqtt://127.0.0.1:1883 \\
        --group platform --db events.sqlite --seconds 60 --ack-key keys/k-3f2a9c4be01d7f5a.key
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.domain.personal import open_event
from gateway.domain.sealed_box import OpeningKey, SealError
from gateway.domain.signing import SigningKey
from gateway.sync.platform_acks import ack_command, state_acked_seq

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    gw TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    ts TEXT NOT NULL,
    body TEXT NOT NULL,
    received_by TEXT NOT NULL,
    PRIMARY KEY (gw, seq)
) WITHOUT ROWID
"""


class EventStore:
    """Events by (gw, seq), shared by the instances of a consumer group."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.execute(SCHEMA)
        self._lock = threading.Lock()
        self._through: dict[str, int] = {}

    def contiguous(self, gw: str, floor: int = 0) -> int:
        """The highest seq through which every event of `gw` is stored (from `floor` up)."""
        with self._lock:
            through = max(self._through.get(gw, 0), floor)
            while True:
                rows = self._conn.execute(
                    "SELECT seq FROM events WHERE gw = ? AND seq > ? ORDER BY seq LIMIT 1000",
                    (gw, through),
                ).fetchall()
                advanced = 0
                for (seq,) in rows:
                    if seq != through + 1:
                        break
                    through, advanced = seq, advanced + 1
                if advanced < 1000:  # a gap, or the end
                    break
            self._through[gw] = through
            return through

    def add(self, gw: str, events: list[dict[str, Any]], instance: str) -> int:
        """Store a batch; return how many events were new (the rest were repeats)."""
        rows = [
            (gw, e["seq"], e["type"], e["ts"], json.dumps(e, ensure_ascii=False), instance)
            for e in events
        ]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows
            )
            added = self._conn.total_changes - before
            self._conn.execute("COMMIT")
        return added

    def gaps(self, gw: str) -> list[tuple[int, int]]:
        """Missing seq ranges (first, last) between 1 and the highest seq seen."""
        with self._lock:
            seqs = [
                row[0]
                for row in self._conn.execute(
                    "SELECT seq FROM events WHERE gw = ? ORDER BY seq", (gw,)
                )
            ]
        missing: list[tuple[int, int]] = []
        expected = 1
        for seq in seqs:
            if seq > expected:
                missing.append((expected, seq - 1))
            expected = seq + 1
        return missing

    def count(self, gw: str | None = None) -> int:
        with self._lock:
            if gw is None:
                return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])
            query = "SELECT count(*) FROM events WHERE gw = ?"
            return int(self._conn.execute(query, (gw,)).fetchone()[0])

    def close(self) -> None:
        self._conn.close()


class Consumer:
    """One instance of a consumer group."""

    def __init__(
        self,
        broker: str,
        group: str,
        store: EventStore,
        keys: list[OpeningKey] | None = None,
        ack_key: SigningKey | None = None,
    ) -> None:
        parts = urlsplit(broker)
        self.name = f"{group}-{uuid.uuid4().hex[:8]}"
        self.store = store
        self.keys = keys or []
        self.envelopes = 0
        self.repeats = 0
        self.malformed = 0
        self.unopened = 0
        self.acks = 0
        self.ack_key = ack_key
        self._floors: dict[str, int] = {}
        self._acked: dict[str, int] = {}
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.name, protocol=paho.MQTTv5
        )
        self._client.on_message = self._on_message
        self._ready = threading.Event()
        self._client.on_subscribe = lambda *_args: self._ready.set()
        self._client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self._client.loop_start()
        self._client.subscribe(
            [(f"$share/{group}/rentgate/v1/+/events", 1), ("rentgate/v1/+/state", 1)]
        )
        if not self._ready.wait(10):
            raise ConnectionError("no SUBACK from the broker")

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        if message.topic.endswith("/state"):
            state = state_acked_seq(bytes(message.payload))
            if state is not None:
                self._floors[state[0]] = max(self._floors.get(state[0], 0), state[1])
            return
        try:
            envelope = json.loads(message.payload)
            gw, events = envelope["gw"], envelope["events"]
        except (ValueError, KeyError, TypeError):
            self.malformed += 1  # count it and move on; never crash on input
            return
        self.envelopes += 1
        if self.keys:
            events = [self._opened(gw, event) for event in events]
        added = self.store.add(gw, events, self.name)
        self.repeats += len(events) - added
        self._ack(gw)

    def _ack(self, gw: str) -> None:
        """After the commit: ack what is stored without a gap (a repeat acks again: harmless)."""
        if self.ack_key is None:
            return
        through = self.store.contiguous(gw, self._floors.get(gw, 0))
        if through <= 0:
            return
        signed = ack_command(self.ack_key, gw, through, int(time.time()))
        self._client.publish(f"rentgate/v1/{gw}/cmd/ack", signed, qos=1)
        self._acked[gw] = through
        self.acks += 1

    def _opened(self, gw: str, event: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(event, dict):
            return event
        try:
            return open_event(self.keys, gw, event)
        except SealError:
            self.unopened += 1  # kept sealed: a key given later can still open it
            return event

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def _stop(_signum: int, _frame: object) -> None:
    """SIGTERM: leave the sleep, close the client and print the counts."""
    sys.exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--group", default="platform")
    parser.add_argument("--db", type=Path, default=Path("events.sqlite"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--decrypt-key", type=Path, action="append", default=[], help="encryption private key"
    )
    parser.add_argument(
        "--ack-key", type=Path, help="platform signing private key: acknowledge what is stored"
    )
    args = parser.parse_args()
    store = EventStore(args.db)
    keys = [OpeningKey.load(path) for path in args.decrypt_key]
    ack_key = SigningKey.load(args.ack_key) if args.ack_key else None
    consumer = Consumer(args.broker, args.group, store, keys, ack_key)
    signal.signal(signal.SIGTERM, _stop)
    print("ready", flush=True)
    try:
        time.sleep(args.seconds)
    except SystemExit:
        pass
    finally:
        consumer.close()
    print(
        f"{consumer.name}: {consumer.envelopes} envelopes, {consumer.repeats} repeated events,"
        f" {consumer.malformed} malformed, {consumer.unopened} sealed boxes unopened,"
        f" {consumer.acks} acks sent;"
        f" {store.count()} events stored",
        flush=True,
    )
    store.close()


if __name__ == "__main__":
    main()
