"""RabbitMQ with its MQTT plugin (Debian's 3.10, MQTT 3.1.1 only): the gateway on
`protocol = "auto"` delivers end to end and takes a signed command.

RabbitMQ maps MQTT topics onto `amq.topic` with `/` turned into `.`: a `.` inside a
gateway id would have been rewritten to `/` (and still PUBACKed), which is why gateway
ids may not contain one (`gateway.sync.wire`). The node is the session's (`rabbit_broker`:
it takes several seconds to start).
"""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as paho

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
from tests.support.platform import Platform, key_file
from tests.support.rabbitmq import RabbitBroker

KNOWN = ["0E000001", "0E000002"]
TAPS = [KNOWN[0], "0EDEADBE", KNOWN[1]] * 4
GW = "GW-RABBIT-AUTO"


def test_auto_delivers_every_seq_through_rabbitmq_and_takes_a_signed_command(
    rabbit_broker: RabbitBroker, tmp_path: Path
) -> None:
    key, public = key_file(tmp_path / "platform")
    config = load(
        write_config(
            tmp_path, rabbit_broker.url, gateway_id=GW, extra=f'[platform]\nkeys = ["{public}"]\n'
        )
    )
    enrol_cards(config, KNOWN)
    subscriber = Subscriber(
        rabbit_broker.port, f"rentgate/v1/{GW}/#", "rabbit-platform", protocol=paho.MQTTv311
    )
    try:
        with InProcessGateway(config) as running:
            uplink = running.gateway.uplink
            wait_until(lambda: uplink.link.connected, 30, "connected to RabbitMQ")
            assert uplink.link.protocol == "3.1.1", "RabbitMQ 3.10 refused MQTT 5: auto fell back"
            write_taps(tmp_path / "front.reader", TAPS)
            wait_until(lambda: len(subscriber.decisions()) >= len(TAPS), 30, "taps at RabbitMQ")
            head = stats_of(config.gateway.database).head_seq
            wait_until(lambda: uplink.stats.delivered_seq >= head, 20, "cursor at the head")
            platform = Platform(rabbit_broker, GW, key, running.gateway.clock, protocol="auto")
            try:
                reply = platform.send("resync", {})
            finally:
                platform.close()
    finally:
        subscriber.close()
    assert reply["ok"] is True, reply
    events = subscriber.events()
    assert sorted({event["seq"] for event in events}) == list(range(1, head + 1))
    decisions = access_decisions(events)
    assert [d["result"] for d in decisions][: len(TAPS)] == ["allow", "deny", "allow"] * 4
