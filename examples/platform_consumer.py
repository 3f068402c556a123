"""Reference consumer of Rentgate event streams, for platform engineers.

What it shows (docs/asyncapi.yaml is the contract):

- **Scale out with shared subscriptions.** Every instance subscribes to
  `$share/{group}/rentgate/v1/+/events`; the broker hands each envelope to one
  instance of the group. Start more instances to take more load.
- **At least once, then deduplicate by (gw, seq).** Gateways resend what was
  not acknowledged, so an event can arrive twice, possibly cut into another
  batch, possibly at another instance. The store's primary key (gw, seq) makes
  a repeat a no-op: `INSERT ... ON CONFLICT DO NOTHING`.
- **Detect gaps by seq.** seq is contiguous per gateway from 1. `gaps()` lists
  the seqs missing below the highest seen; with shared subscriptions an
  envelope can be processed by another instance a moment later, so report a
  gap only once it has stayed open for a while.
- **Acknowledge after storing.** paho acknowledges a QoS 1 message when
  `on_message` returns, so the event is committed before the PUBACK; a crash
  before that means the broker delivers it again.

Instances of one group share one database here (SQLite in WAL mode, for the
example); a real platform would use its own database the same way.

    python examples/platform_consumer.py --broker mqtt://127.0.0.1:1883 \\
        --group platform --db events.sqlite --seconds 60
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

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

    def __init__(self, broker: str, group: str, store: EventStore) -> None:
        parts = urlsplit(broker)
        self.name = f"{group}-{uuid.uuid4().hex[:8]}"
        self.store = store
        self.envelopes = 0
        self.repeats = 0
        self.malformed = 0
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.name, protocol=paho.MQTTv5
        )
        self._client.on_message = self._on_message
        self._ready = threading.Event()
        self._client.on_subscribe = lambda *_args: self._ready.set()
        self._client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self._client.loop_start()
        self._client.subscribe(f"$share/{group}/rentgate/v1/+/events", qos=1)
        if not self._ready.wait(10):
            raise ConnectionError("no SUBACK from the broker")

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        try:
            envelope = json.loads(message.payload)
            gw, events = envelope["gw"], envelope["events"]
        except (ValueError, KeyError, TypeError):
            self.malformed += 1  # count it and move on; never crash on input
            return
        self.envelopes += 1
        added = self.store.add(gw, events, self.name)
        self.repeats += len(events) - added

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--group", default="platform")
    parser.add_argument("--db", type=Path, default=Path("events.sqlite"))
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    store = EventStore(args.db)
    consumer = Consumer(args.broker, args.group, store)
    try:
        time.sleep(args.seconds)
    finally:
        consumer.close()
    print(
        f"{consumer.name}: {consumer.envelopes} envelopes, {consumer.repeats} repeated events,"
        f" {consumer.malformed} malformed; {store.count()} events stored"
    )
    store.close()


if __name__ == "__main__":
    main()
