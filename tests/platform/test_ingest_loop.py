"""The ingest's loop with a real PostgreSQL: what the database itself refuses is found, kept as
a rejection and settled, and the good messages of the same batch are stored and acknowledged.

The stream here is a list (the brokers' sources have tests of their own against the real
brokers); the database is real."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import psycopg

from gateway.platform.ingest import Ingest
from gateway.platform.pg_store import IngestStore
from gateway.platform.source import Delivery

GW = "GW-1"


class ListSource:
    """Hands out a fixed list once, records what was settled, then stops the loop."""

    def __init__(self, deliveries: list[Delivery], stop: threading.Event) -> None:
        self._pending = deliveries
        self._stop = stop
        self.settled: list[Delivery] = []

    def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        batch, self._pending = self._pending[:max_items], self._pending[max_items:]
        if not batch:
            self._stop.set()
        return batch

    def settle(self, deliveries: Sequence[Delivery]) -> None:
        self.settled.extend(deliveries)

    def close(self) -> None:
        pass


class SentCommands:
    """Records the acks the loop asks for (GatewayCommands signs and sends them; it is tested
    end to end with a real gateway in test_ingest_delivery.py)."""

    def __init__(self) -> None:
        self.acks: list[tuple[str, int]] = []

    def ack(self, gateway_id: str, through_seq: int) -> None:
        self.acks.append((gateway_id, through_seq))

    def replay(self, gateway_id: str, from_seq: int) -> None:
        raise AssertionError("no gap here")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def envelope(*seqs: int) -> Delivery:
    events = [{"seq": s, "type": "device.status", "ts": "2026-11-28T09:00:00+08:00"} for s in seqs]
    return Delivery(
        f"rentgate/v1/{GW}/events", json.dumps({"v": 1, "gw": GW, "events": events}).encode()
    )


def test_what_the_database_refuses_is_kept_as_a_rejection_and_the_rest_is_stored(
    pg_dsn: str, tmp_path: Path
) -> None:
    stop = threading.Event()
    too_big = envelope(2**63)  # an integer to Python, out of range for bigint
    source = ListSource([envelope(1, 2), too_big, envelope(3)], stop)
    commands = SentCommands()
    ingest = Ingest(source, lambda: IngestStore(pg_dsn), commands)
    ingest.run(stop)
    ingest.close()
    assert source.settled == [envelope(1, 2), too_big, envelope(3)], "all settled, none stuck"
    assert commands.acks == [(GW, 3)]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT seq FROM events ORDER BY seq").fetchall() == [(1,), (2,), (3,)]
        ((reason,),) = conn.execute("SELECT reason FROM rejected").fetchall()
    assert reason.startswith("refused by the database: ")
    assert ingest.metrics.registry.get_sample_value("rentgate_ingest_rejected_total") == 1
