"""A platform consumer on Rentgate's own ingest code, storing into a database of your own.

`rentgate platform ingest` stores into PostgreSQL (gateway/platform/). A platform with
another database keeps everything else and writes only the store: this example keeps
events in SQLite. What it reuses, and why it matters (docs/asyncapi.yaml is the contract):

- **the stream**, `MqttShareSource`: a `$share` group with a persistent session per
  instance and manual PUBACKs, so the broker forgets a message only after it is stored;
- **the checks**, `intake.take`: a bad envelope is rejected whole with a reason, never half
  stored; registrations are opened with `--decrypt-key` (kept sealed if they do not open);
- **the loop**, `Ingest`: commit, then settle, then send each gateway its signed `ack`
  (`GatewayCommands`): the gateway keeps and resends anything not acknowledged.

What the store must do (`BatchStore`): keep each event once by (gw, seq), and report
per gateway the seq through which every event is stored, starting from the `acked_seq`
in the gateway's state (below it the gateway may have pruned).

    python examples/platform_consumer.py --broker mqtt://127.0.0.1:1883 \\
        --db events.sqlite --key keys/k-3f2a9c4be01d7f5a.key --seconds 60
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
from pathlib import Path

from gateway.domain.sealed_box import OpeningKey
from gateway.domain.signing import SigningKey
from gateway.platform.gateway_commands import GatewayCommands
from gateway.platform.ingest import Ingest
from gateway.platform.intake import Intake
from gateway.platform.mqtt_source import MqttShareSource
from gateway.platform.pg_store import Stored
from gateway.sync.link import BrokerSettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    gw TEXT NOT NULL, seq INTEGER NOT NULL, ts TEXT NOT NULL, type TEXT NOT NULL,
    body TEXT NOT NULL, PRIMARY KEY (gw, seq)
) WITHOUT ROWID
"""


class SqliteStore:
    """Events by (gw, seq) in one SQLite file that every instance of the group shares."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.execute(SCHEMA)
        self._through: dict[str, int] = {}

    def store(self, intake: Intake) -> Stored:
        rows = [
            (envelope.gw, e["seq"], e["ts"], e["type"], json.dumps(e, ensure_ascii=False))
            for envelope in intake.envelope_rows  # checked already: each event has these
            for e in json.loads(envelope.payload)["events"]
        ]
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            before = self._conn.total_changes
            insert = "INSERT INTO events VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING"
            self._conn.executemany(insert, rows)
            new = self._conn.total_changes - before
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")  # never leave the write lock held
            raise
        for state in intake.states:
            if state.acked_seq is not None:
                self._through[state.gw] = max(self._through.get(state.gw, 0), state.acked_seq)
        touched = {e.gw for e in intake.events} | {s.gw for s in intake.states}
        acks = {gw: through for gw in touched if (through := self._contiguous(gw)) > 0}
        return Stored(events_new=new, events_repeated=len(rows) - new, acks=acks)

    def _contiguous(self, gw: str) -> int:
        """The highest seq through which every event of `gw` is stored, by any instance: read
        from the shared database, not from what this instance happened to get."""
        through = self._through.get(gw, 0)
        query = "SELECT seq FROM events WHERE gw = ? AND seq > ? ORDER BY seq LIMIT 10000"
        for (seq,) in self._conn.execute(query, (gw, through)).fetchall():
            if seq != through + 1:
                break
            through = seq
        self._through[gw] = through
        return through

    def due_replays(self, gap_after_s: float) -> list[tuple[str, int]]:  # noqa: ARG002
        return []  # gaps are left to the gateway's own resend (`[mqtt] ack_resend_s`)

    def rollback(self) -> None:
        self._conn.rollback()

    @property
    def broken(self) -> bool:
        return False

    def close(self) -> None:
        self._conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--group", default="platform")
    parser.add_argument("--instance", default="example-1")
    parser.add_argument("--db", type=Path, default=Path("events.sqlite"))
    parser.add_argument("--key", type=Path, required=True, help="platform signing key: acks")
    parser.add_argument("--decrypt-key", type=Path, action="append", default=[])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    broker = BrokerSettings.from_url(args.broker, "example")
    store = SqliteStore(args.db)
    ingest = Ingest(
        MqttShareSource([broker], group=args.group, instance=args.instance),
        lambda: store,
        GatewayCommands([broker], SigningKey.load(args.key)),
        keys=[OpeningKey.load(path) for path in args.decrypt_key],
    )
    stop = threading.Event()
    threading.Timer(args.seconds, stop.set).start()
    try:
        ingest.run(stop)
    finally:
        ingest.close()
    new = ingest.metrics.registry.get_sample_value(
        "rentgate_ingest_events_total", {"result": "new"}
    )
    print(f"{args.instance}: {new or 0:.0f} new events stored in {args.db}")


if __name__ == "__main__":
    main()
