"""The reference platform consumer (examples/): shared subscription, dedup by (gw, seq), gaps."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from gateway.sync.link import BrokerSettings
from gateway.sync.local_broker import LocalBroker
from gateway.sync.platform_client import PlatformClient
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


def test_a_consumer_group_shares_the_stream_and_stores_each_event_once(
    tmp_path: Path, broker: LocalBroker
) -> None:
    example = _example()
    key, public = key_file(tmp_path / "platform")
    store = example.EventStore(tmp_path / "events.sqlite")
    group = [example.Consumer(broker.url, "platform", store, ack_key=key) for _ in range(2)]
    path = write_config(
        tmp_path, broker.url, gateway_id=GW, extra=f'[platform]\nkeys = ["{public}"]\n'
    )
    config = load(path)
    try:
        with InProcessGateway(config):
            for burst in range(12):  # several envelopes, so the broker spreads them
                write_taps(tmp_path / "front.reader", [f"0A{burst:02X}{n:04X}" for n in range(25)])
                head = 25 * (burst + 1)
                wait_until(lambda h=head: store.count(GW) >= h, 20, "the burst stored")
            head = stats_of(config.gateway.database).head_seq
            wait_until(lambda: store.count(GW) == head, 20, "every event stored")
            # Acked after each commit: the gateway's platform cursor reaches what was stored.
            wait_until(
                lambda: stats_of(config.gateway.database).acked_seq == head == store.contiguous(GW),
                20,
                "the gateway's acked cursor at the head, as the platform stored it",
            )
        assert store.gaps(GW) == []
        assert all(consumer.envelopes > 0 for consumer in group), "both instances got work"
        assert sum(consumer.acks for consumer in group) > 0

        settings = BrokerSettings.from_url(broker.url, "replayer")
        first = {"v": 1, "gw": GW, "events": [_event(1), _event(2)]}
        with PlatformClient(settings) as client:
            client.publish(f"rentgate/v1/{GW}/events", json.dumps(first).encode())
            forged = {"v": 1, "gw": "GW-GAPPY", "events": [_event(1), _event(5)]}
            client.publish("rentgate/v1/GW-GAPPY/events", json.dumps(forged).encode())
            client.publish("rentgate/v1/GW-GAPPY/events", b"{not json")
        wait_until(lambda: store.count("GW-GAPPY") == 2, 10, "the gappy stream")
        wait_until(lambda: sum(c.malformed for c in group) == 1, 10, "the malformed envelope")
        assert store.count(GW) == head, "a redelivered envelope adds nothing"
        assert sum(c.repeats for c in group) >= 2
        assert store.gaps("GW-GAPPY") == [(2, 4)]
    finally:
        for consumer in group:
            consumer.close()
        store.close()


def _event(seq: int) -> dict[str, object]:
    return {
        "seq": seq,
        "id": f"id-{seq}",
        "type": "device.status",
        "ts": "2026-11-28T09:00:00.000+08:00",
    }
