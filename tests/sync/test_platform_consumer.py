"""The example consumer (examples/): the ingest's own code with a store of the platform's
choosing (SQLite here). Two instances share the stream; each event is stored once and the
gateway has everything acknowledged."""

from __future__ import annotations

import contextlib
import importlib.util
import sqlite3
import sys
import threading
from pathlib import Path
from types import ModuleType

from gateway.platform.gateway_commands import GatewayCommands
from gateway.platform.ingest import Ingest, IngestSettings
from gateway.platform.mqtt_source import MqttShareSource
from gateway.sync.link import BrokerSettings
from gateway.sync.local_broker import LocalBroker
from tests.support import REPO
from tests.support.gateway import (
    InProcessGateway,
    load,
    stats_of,
    wait_until,
    write_config,
    write_taps,
)
from tests.support.platform import key_file

EXAMPLE = REPO / "examples" / "platform_consumer.py"
GW = "GW-CONSUMED"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("platform_consumer", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _count(tmp_path: Path, gateway_id: str) -> int:
    """Events stored, read on a connection of the test's own (the stores' are the loops')."""
    with contextlib.closing(sqlite3.connect(tmp_path / "events.sqlite", timeout=10)) as conn:
        query = "SELECT count(*) FROM events WHERE gw = ?"
        return int(conn.execute(query, (gateway_id,)).fetchone()[0])


def test_two_example_consumers_share_the_stream_and_store_each_event_once(
    tmp_path: Path, broker: LocalBroker
) -> None:
    example = _example()
    key, public = key_file(tmp_path / "platform")
    settings = BrokerSettings.from_url(broker.url, "example")
    stop = threading.Event()
    stores = [example.SqliteStore(tmp_path / "events.sqlite") for _ in range(2)]
    group = [
        Ingest(
            MqttShareSource([settings], group="example", instance=f"i{n}"),
            lambda store=store: store,
            GatewayCommands([settings], key),
            settings=IngestSettings(ack_every_s=0.5),
        )
        for n, store in enumerate(stores)
    ]
    threads = [threading.Thread(target=ingest.run, args=(stop,)) for ingest in group]
    for thread in threads:
        thread.start()
    path = write_config(
        tmp_path, broker.url, gateway_id=GW, extra=f'[platform]\nkeys = ["{public}"]\n'
    )
    config = load(path)
    try:
        with InProcessGateway(config):
            for burst in range(12):  # several envelopes, so the broker spreads them
                write_taps(tmp_path / "front.reader", [f"0A{burst:02X}{n:04X}" for n in range(25)])
                head = 25 * (burst + 1)
                wait_until(lambda h=head: _count(tmp_path, GW) >= h, 20, "the burst stored")
            head = stats_of(config.gateway.database).head_seq
            wait_until(lambda: _count(tmp_path, GW) == head, 20, "every event stored")
            wait_until(
                lambda: stats_of(config.gateway.database).acked_seq == head,
                20,
                "the gateway's acked cursor at the head",
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
    taken = [
        ingest.metrics.registry.get_sample_value("rentgate_ingest_envelopes_total")
        for ingest in group
    ]
    assert all(taken), f"both instances got work: {taken}"
    for ingest in group:
        ingest.close()
