"""Taps written to a FIFO become access.decision events at a real subscriber, in order."""

from __future__ import annotations

from pathlib import Path

from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    access_decisions,
    enrol_cards,
    load,
    stats_of,
    wait_until,
    write_config,
    write_taps,
)

KNOWN = ["04A1B2C3D4", "04E5F60718"]


def test_fifo_taps_reach_the_platform_in_order(broker: LocalBroker, tmp_path: Path) -> None:
    config = load(write_config(tmp_path, broker.url, gateway_id="GW-E2E"))
    enrol_cards(config, KNOWN)
    platform = Subscriber(broker.port, "rentgate/v1/GW-E2E/#", "e2e-platform")
    taps = [KNOWN[0], "04DEADBEEF", KNOWN[1]] * 20
    try:
        with InProcessGateway(config) as running:
            write_taps(tmp_path / "front.reader", taps)
            wait_until(
                lambda: len(platform.decisions()) >= len(taps),
                20,
                "all decisions at the subscriber",
            )
            lock_commands = len(running.gateway.parts.devices.locks["front"].commands)
        events = platform.events()
    finally:
        platform.close()

    seqs = [event["seq"] for event in events]
    assert seqs == list(range(1, len(seqs) + 1)), "seq contiguous from 1, in order"
    decisions = access_decisions(events)
    assert [d["result"] for d in decisions] == ["allow", "deny", "allow"] * 20
    assert [d["reason"] for d in decisions[:3]] == ["granted", "unknown", "granted"]
    assert lock_commands == 40, "the lock was commanded once per granted tap"
    for decision in decisions:
        assert decision["door"] == "front"
        assert decision["credential"]["kind"] == "card_uid"
        assert "***" in decision["credential"]["masked"]
        assert decision["ts"].endswith("+08:00")
    assert all(
        envelope["gw"] == "GW-E2E" and envelope["v"] == 1 for envelope in platform.envelopes()
    )

    stats = stats_of(config.gateway.database)
    assert stats.head_seq == seqs[-1]
    assert stats.delivered_seq == stats.head_seq, "every event marked delivered after PUBACK"


def test_birth_is_retained_and_carries_backlog(broker: LocalBroker, tmp_path: Path) -> None:
    config = load(write_config(tmp_path, broker.url, gateway_id="GW-BIRTH"))
    early = Subscriber(broker.port, "rentgate/v1/GW-BIRTH/state", "early-joiner")
    with InProcessGateway(config):
        wait_until(lambda: any(s["online"] for s in early.states()), 10, "the birth published")
        early.close()
        late = Subscriber(broker.port, "rentgate/v1/GW-BIRTH/state", "late-joiner")
        try:
            wait_until(lambda: any(m.retain for m in late.snapshot()), 10, "retained birth")
            birth = late.states()[0]
        finally:
            late.close()
    assert birth["online"] is True
    assert birth["gw"] == "GW-BIRTH"
    assert "backlog" in birth
    assert "oldest_unsent_s" not in birth or birth["oldest_unsent_s"] >= 0
    after = Subscriber(broker.port, "rentgate/v1/GW-BIRTH/state", "after-stop")
    try:
        wait_until(lambda: bool(after.states()), 10, "retained state after stop")
        assert after.states()[-1]["online"] is False, "clean stop leaves a retained offline state"
    finally:
        after.close()
