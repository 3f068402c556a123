"""A three-node NATS cluster (Debian's nats-server, JetStream and MQTT 3.1.1 on each node):
the gateway on `protocol = "auto"` delivers end to end, and when the node it is on is
killed with SIGKILL it is on another within 10 s and nothing it recorded is lost.

The cluster starts once per session (a killed node is started again for the next
test). The platform is a
subscriber with a persistent session on a node that stays up: NATS routes what the
gateway publishes on any node to it, from JetStream streams replicated on all three.
"""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as paho

from gateway.ops.status import read_status_file
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    enrol_cards,
    load,
    stats_of,
    wait_until,
    write_config,
    write_taps,
)
from tests.support.nats import NatsCluster

CARD = "0C0000A7"
GW = "GW-NATS-CLUSTER"


def test_the_gateway_survives_the_node_it_is_on_being_killed(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    config = load(
        write_config(tmp_path, nats_cluster.urls, gateway_id=GW, extra_mqtt='protocol = "auto"')
    )
    enrol_cards(config, [CARD])
    platform = Subscriber(
        nats_cluster.mqtt_ports[2], f"rentgate/v1/{GW}/#", "nats-platform", protocol=paho.MQTTv311
    )
    try:
        with InProcessGateway(config) as running:
            uplink = running.gateway.uplink
            link = uplink.link
            wait_until(lambda: link.connected, 20, "connected to the cluster")
            assert link.broker_url == nats_cluster.urls[0]
            for _ in range(20):
                write_taps(tmp_path / "front.reader", [CARD])
            wait_until(lambda: len(platform.decisions()) >= 20, 30, "taps through node 0")

            killed_at = time.monotonic()
            nats_cluster.kill(0)
            for _ in range(20):  # taps go on while the gateway looks for another node
                write_taps(tmp_path / "front.reader", [CARD])
                time.sleep(0.05)
            wait_until(
                lambda: link.connected and link.broker_url != nats_cluster.urls[0],
                10,
                "the gateway on another node within 10 s",
            )
            print(f"on {link.broker_url} {time.monotonic() - killed_at:.2f} s after the kill")
            wait_until(lambda: stats_of(config.gateway.database).head_seq >= 40, 20, "recorded")
            head = stats_of(config.gateway.database).head_seq
            wait_until(
                lambda: platform.unique_seqs() >= set(range(1, head + 1)),
                30,
                "every seq at the platform",
            )
            wait_until(lambda: uplink.stats.delivered_seq >= head, 30, "the cursor at the head")
            status = read_status_file(config.gateway.status_file)
            assert status is not None
            assert status.link.protocol == "3.1.1", "NATS 2.9 speaks 3.1.1: auto fell back"
        assert len(platform.decisions()) >= 40
    finally:
        platform.close()
