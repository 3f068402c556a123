"""Nothing lost on the way to the platform's database: a real gateway, a real Mosquitto, a real
PostgreSQL and `rentgate platform ingest` in processes of their own, taken down, restarted
and killed while taps flow. Every seq stored exactly once; the gateway has it acknowledged."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from gateway.cli import main
from gateway.runtime.gateway import Gateway
from gateway.sync.local_broker import LocalBroker, free_port
from tests.support.gateway import (
    InProcessGateway,
    enrol_cards,
    load,
    stats_of,
    wait_until,
    write_config,
    write_taps,
)
from tests.support.ingest import IngestProcess, stored_seqs, stored_through
from tests.support.platform import key_file

GW = "GW-INGEST"


@dataclass
class Line:
    """A gateway, the platform's key and database, and a way to make taps."""

    running: InProcessGateway
    dsn: str
    key_path: Path
    broker: LocalBroker
    tmp: Path
    taps: int = 0

    @property
    def gateway(self) -> Gateway:
        return self.running.gateway

    def tap(self, count: int) -> None:
        write_taps(
            self.tmp / "front.reader", [f"0B{n:06X}" for n in range(self.taps, self.taps + count)]
        )
        self.taps += count

    def tapping(self, seconds: float, per_second: float = 20) -> None:
        """Taps at a steady rate for `seconds` (bounded), as a building does."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.tap(1)
            time.sleep(1 / per_second)

    def head(self) -> int:
        return stats_of(self.gateway.config.gateway.database).head_seq

    def ingest(self, instance: str = "ingest-1", *extra: str) -> IngestProcess:
        return IngestProcess(
            [self.broker.url],
            self.dsn,
            self.key_path,
            self.tmp,
            instance=instance,
            extra=["--gap-after", "2", *extra],
        )

    def recorded(self, timeout: float = 20) -> int:
        """Until every tap so far is an event in the outbox; the head seq."""
        wait_until(lambda: self.head() > self.taps, timeout, f"{self.taps} taps recorded")
        return self.head()

    def all_stored_once(self, timeout: float) -> list[int]:
        """Until the ingest stored and acknowledged through the head; then every stored seq."""
        head = self.recorded()
        wait_until(
            lambda: (
                stored_through(self.dsn, GW) >= head
                and self.gateway.status().link.acked_seq >= head
            ),
            timeout,
            f"seq 1..{head} stored and acknowledged",
        )
        return stored_seqs(self.dsn, GW)


def _line(tmp_path: Path, broker: LocalBroker, pg_dsn: str, resend_s: float) -> Iterator[Line]:
    _key, public = key_file(tmp_path / "platform")
    key_path = next((tmp_path / "platform").glob("*.key"))
    path = write_config(
        tmp_path,
        broker.url,
        gateway_id=GW,
        extra_mqtt=f"ack_resend_s = {resend_s}\nstate_every_s = 2\n",
        extra=f'[platform]\nkeys = ["{public}"]\n',
    )
    config = load(path)
    enrol_cards(config, ["0A000001"])
    with InProcessGateway(config) as running:
        running.wait_connected()
        yield Line(running, pg_dsn, key_path, broker, tmp_path)


@pytest.fixture
def line(tmp_path: Path, own_broker: LocalBroker, pg_dsn: str) -> Iterator[Line]:
    yield from _line(tmp_path, own_broker, pg_dsn, resend_s=120)


def test_taps_reach_the_database_once_and_the_gateway_has_them_acknowledged(line: Line) -> None:
    with line.ingest():
        line.tap(20)
        seqs = line.all_stored_once(30)
    assert seqs == list(range(1, line.head() + 1))


def test_the_ingest_down_for_a_minute_while_taps_flow_loses_nothing_and_stores_nothing_twice(
    line: Line,
) -> None:
    ingest = line.ingest().start()
    line.tap(10)
    line.all_stored_once(30)
    ingest.stop()
    line.tapping(60)  # the platform's ingest is down for a minute; the building is not
    assert stored_through(line.dsn, GW) < line.recorded()
    ingest.start()
    try:
        seqs = line.all_stored_once(60)
    finally:
        ingest.stop()
    assert seqs == list(range(1, line.head() + 1))


def test_a_broker_restart_without_persistence_loses_nothing(line: Line) -> None:
    """The broker forgets the ingest's session and whatever it held for it; gaps are replayed."""
    with line.ingest():
        line.tap(10)
        line.all_stored_once(30)
        line.tapping(3)
        line.broker.kill()  # SIGKILL: no persistence, so every queued message is gone
        line.tapping(2)
        line.broker.start()
        line.tapping(3)
        seqs = line.all_stored_once(60)
    assert seqs == list(range(1, line.head() + 1))


@pytest.fixture
def small_queue_line(tmp_path: Path, pg_dsn: str) -> Iterator[Line]:
    """A broker that queues at most 5 messages for a session that is away (Mosquitto's stock
    limit is 1000; the drop is the same, only sooner)."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    with LocalBroker(workdir=workdir, extra_config="max_queued_messages 5\n") as broker:
        yield from _line(tmp_path, broker, pg_dsn, resend_s=120)


def test_messages_the_broker_drops_at_its_queue_limit_are_replayed(small_queue_line: Line) -> None:
    line = small_queue_line
    ingest = line.ingest().start()
    line.tap(5)
    line.all_stored_once(30)
    ingest.stop()
    line.tapping(4)  # 80 envelopes for an absent session that may queue 5: the rest dropped
    ingest.start()
    try:
        seqs = line.all_stored_once(60)
    finally:
        ingest.stop()
    assert seqs == list(range(1, line.head() + 1))
    assert "replay from seq" in ingest.log


def test_two_ingest_instances_one_killed_mid_stream_lose_nothing_and_store_nothing_twice(
    line: Line,
) -> None:
    first, second = line.ingest("ingest-a").start(), line.ingest("ingest-b").start()
    try:
        line.tap(10)
        line.all_stored_once(30)
        line.tapping(2)
        first.kill()  # SIGKILL mid-stream: whatever it took and had not committed is not acked
        line.tapping(3)
        seqs = line.all_stored_once(60)
    finally:
        first.stop()
        second.stop()
    assert seqs == list(range(1, line.head() + 1))


def test_fleet_shows_presence_and_the_ingest_serves_its_metrics(
    tmp_path: Path, own_broker: LocalBroker, pg_dsn: str
) -> None:
    port = free_port()
    lines = _line(tmp_path, own_broker, pg_dsn, resend_s=120)
    line = next(lines)
    with line.ingest("ingest-1", "--metrics", f"127.0.0.1:{port}"):
        line.tap(5)
        line.all_stored_once(30)
        wait_until(lambda: _fleet(pg_dsn)["gateways"]["online"] == 1, 20, "online at the platform")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'rentgate_ingest_events_total{result="new"}' in metrics
        assert "rentgate_ingest_acks_total" in metrics
        with pytest.raises(StopIteration):
            next(lines)  # the gateway stops and says goodbye
        wait_until(lambda: _fleet(pg_dsn)["gateways"]["offline"] == 1, 20, "offline")
    report = _fleet(pg_dsn)
    assert (report["lag_events"], report["gateways_with_gap"]) == (0, 0)


def _fleet(dsn: str) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["platform", "fleet", "--dsn", dsn, "--json"]) == 0
    return cast(dict[str, Any], json.loads(out.getvalue()))
