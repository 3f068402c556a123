"""The broker goes away during a stream of taps and comes back: nothing lost, order kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    PersistentSubscriber,
    access_decisions,
    load,
    stats_of,
    wait_until,
    write_config,
)


@pytest.mark.slow
def test_broker_outage_loses_nothing_and_keeps_order(
    persistent_broker: LocalBroker, tmp_path: Path
) -> None:
    config = load(write_config(tmp_path, persistent_broker.url, gateway_id="GW-OUTAGE"))
    platform = PersistentSubscriber(persistent_broker.port, "rentgate/v1/GW-OUTAGE/#")
    fifo = os.open(tmp_path / "front.reader", os.O_RDWR)
    offered = 0

    def tap_for(seconds: float) -> None:
        nonlocal offered
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            os.write(fifo, f"0A{offered:08X}\n".encode())
            offered += 1
            time.sleep(0.005)

    try:
        with InProcessGateway(config) as running:
            tap_for(1.0)
            persistent_broker.stop()
            wait_until(lambda: not running.gateway.uplink.link.connected, 10, "link down")
            tap_for(3.0)
            backlog = stats_of(config.gateway.database).depth
            persistent_broker.start()
            wait_until(lambda: running.gateway.uplink.link.connected, 20, "link up again")
            tap_for(1.0)
            wait_until(lambda: stats_of(config.gateway.database).depth == 0, 30, "backlog drained")
            wait_until(
                lambda: len(platform.unique_seqs()) >= stats_of(config.gateway.database).head_seq,
                30,
                "all events at the subscriber",
            )
            reconnects = running.gateway.uplink.link.reconnects
    finally:
        os.close(fifo)
        platform.close()

    assert backlog > 100, "taps kept being recorded while the broker was down"
    assert reconnects >= 1
    events = platform.events()
    first_seen: list[int] = []
    seen: set[int] = set()
    for event in events:
        if event["seq"] not in seen:
            seen.add(event["seq"])
            first_seen.append(event["seq"])
    head = stats_of(config.gateway.database).head_seq
    assert first_seen == list(range(1, head + 1)), "every seq once, in order"
    unique = {e["seq"]: e for e in events}
    decisions = access_decisions(unique[s] for s in sorted(unique))
    cards = [int(e["credential"]["masked"][-4:], 16) for e in decisions]
    assert cards == [n & 0xFFFF for n in range(offered)], "every tap, in the order offered"
    births = [s for s in platform.states() if s["online"]]
    assert len(births) >= 2, "birth republished after the outage"
    assert any(b.get("backlog", 0) > 0 for b in births[1:]), "the new birth reports the backlog"
