"""A junk flood on the command topics: the signed command still gets through, the junk is
counted, and the log says so in a few lines (issue 13, part 3).

The tester's finding: junk on `rentgate/v1/{gw}/cmd/+` from any broker client filled the
command queue, a properly signed `door.unlock` sent meanwhile was dropped, and every
dropped message logged a warning (26 MB in 10 s).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.api.metrics import render
from gateway.ops.readings import StorageReading
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import InProcessGateway, load, wait_until, write_config
from tests.support.junk import junk_command
from tests.support.platform import Platform, key_file

GW = "GW-FLOOD"
JUNK = 3000
MAX_LOG_LINES = 6


@pytest.fixture
def gateway(tmp_path: Path, broker: LocalBroker) -> Iterator[tuple[InProcessGateway, Platform]]:
    key, public = key_file(tmp_path / "platform")
    path = write_config(
        tmp_path, broker.url, gateway_id=GW, extra=f'[platform]\nkeys = ["{public}"]\n'
    )
    running = InProcessGateway(load(path)).start()
    platform = Platform(broker, GW, key, running.gateway.clock)
    running.wait_connected()
    try:
        yield running, platform
    finally:
        platform.close()
        running.stop()


def test_a_signed_unlock_sent_mid_flood_is_applied_and_the_junk_only_counted(
    gateway: tuple[InProcessGateway, Platform],
    broker: LocalBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running, platform = gateway
    downlink = running.gateway.parts.downlink
    lock = running.gateway.parts.devices.locks["front"]
    caplog.set_level(logging.WARNING)
    flooder = paho.Client(CallbackAPIVersion.VERSION2, client_id="flooder", protocol=paho.MQTTv5)
    flooder.max_inflight_messages_set(200)
    flooder.connect("127.0.0.1", broker.port)
    flooder.loop_start()
    try:
        signed = platform.signed("door.unlock", {"door": "front", "seconds": 4}, ttl_s=60)
        last = None
        for serial in range(JUNK):
            if serial == JUNK // 2:
                flooder.publish(f"rentgate/v1/{GW}/cmd/door.unlock", signed, qos=1)
            topic, payload = junk_command(serial, f"rentgate/v1/{GW}/cmd", GW)
            last = flooder.publish(topic, payload, qos=1)
        assert last is not None
        last.wait_for_publish(60)
        wait_until(lambda: downlink.stats().received >= JUNK + 1, 60, "every message judged")
        wait_until(lambda: any(c.seconds == 4.0 for c in lock.commands), 30, "the signed unlock")
    finally:
        flooder.disconnect()
        flooder.loop_stop()

    stats = downlink.stats()
    assert stats.received == JUNK + 1
    assert (stats.accepted, stats.applied, stats.dropped) == (1, 1, 0)
    assert sum(stats.rejected.values()) + stats.rate_limited == JUNK
    assert stats.rate_limited > 0  # the forged envelopes spent the resync topic's budget
    assert stats.rejected["malformed"] == 2 * JUNK // 6
    for reason in ("unknown_command", "oversized", "wrong_gateway"):
        assert stats.rejected[reason] == JUNK // 6
    status = running.gateway.status()
    assert status.commands.rate_limited == stats.rate_limited
    assert status.commands.rejected == stats.rejected
    metrics = render(status, StorageReading(None, None, None)).decode().splitlines()
    for outcome, count in (("rate_limited", stats.rate_limited), ("applied", 1)):
        line = f'rentgate_commands_total{{outcome="{outcome}"}} '
        assert [float(m.removeprefix(line)) for m in metrics if m.startswith(line)] == [count]
    logged = [r for r in caplog.records if r.name.startswith("gateway.sync")]
    assert len(logged) <= MAX_LOG_LINES, [r.getMessage() for r in logged]
