"""`protocol = "3.1.1"`, "5" and the default "auto": taps reach a real subscriber the same
way (Mosquitto takes MQTT 5, so "auto" stays on 5 there; tests/sync/test_protocol_auto.py
shows the fallback against a broker that refuses 5).

The broker logs each new client with its protocol (`p2` is MQTT 3.1.1, `p5` is
MQTT 5), which shows that the gateway really spoke the configured version.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

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
TAPS = [KNOWN[0], "04DEADBEEF", KNOWN[1]] * 5
BROKER_PROTOCOL = {"5": "p5", "3.1.1": "p2", "auto": "p5"}
GATEWAY_IDS = {"5": "GW-P5", "3.1.1": "GW-P311", "auto": "GW-PAUTO"}


@pytest.fixture
def logging_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A Mosquitto of this test's own that logs connections (with their protocol)."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    with LocalBroker(workdir=workdir, extra_config="log_type notice") as running:
        yield running


def connections_of(broker: LocalBroker, client_id: str) -> list[str]:
    """The protocol tags (`p2`, `p5`) of the broker's "New client connected" lines."""
    log = (broker.workdir / "mosquitto.log").read_text(encoding="utf-8", errors="replace")
    pattern = rf"New client connected from \S+ as {re.escape(client_id)} \((p\d+),"
    return re.findall(pattern, log)


@pytest.mark.parametrize("protocol", ["3.1.1", "5", "auto"])
def test_taps_reach_the_platform_over_each_protocol(
    logging_broker: LocalBroker, tmp_path: Path, protocol: str
) -> None:
    gateway_id = GATEWAY_IDS[protocol]
    config = load(
        write_config(
            tmp_path,
            logging_broker.url,
            gateway_id=gateway_id,
            extra_mqtt=f'protocol = "{protocol}"',
        )
    )
    assert config.mqtt.protocol == protocol
    enrol_cards(config, KNOWN)
    platform = Subscriber(logging_broker.port, f"rentgate/v1/{gateway_id}/#", "proto-platform")
    try:
        with InProcessGateway(config) as running:
            write_taps(tmp_path / "front.reader", TAPS)
            wait_until(
                lambda: len(platform.decisions()) >= len(TAPS),
                20,
                "all decisions at the subscriber",
            )
            late = Subscriber(logging_broker.port, f"rentgate/v1/{gateway_id}/state", "late")
            try:
                wait_until(lambda: any(m.retain for m in late.snapshot()), 10, "retained birth")
                retained = [m for m in late.snapshot() if m.retain]
                birth = late.states()[0]
            finally:
                late.close()
            uplink = running.gateway.uplink
            assert uplink is not None
            wait_until(
                lambda: uplink.stats.delivered_seq >= max(platform.unique_seqs()),
                10,
                "cursor at the last delivered seq",
            )
            reconnects = uplink.link.reconnects
        events = platform.events()
    finally:
        platform.close()

    assert connections_of(logging_broker, gateway_id) == [BROKER_PROTOCOL[protocol]]
    assert reconnects == 0, "one session carried everything"

    seqs = [event["seq"] for event in events]
    assert seqs == list(range(1, len(seqs) + 1)), "seq contiguous from 1, in order, no repeats"
    decisions = access_decisions(events)
    assert [d["result"] for d in decisions] == ["allow", "deny", "allow"] * 5
    assert all(envelope["gw"] == gateway_id for envelope in platform.envelopes())

    assert len(retained) == 1
    assert birth["online"] is True
    assert birth["gw"] == gateway_id
    assert "backlog" in birth

    stats = stats_of(config.gateway.database)
    assert stats.head_seq == seqs[-1]
    assert stats.delivered_seq == stats.head_seq
