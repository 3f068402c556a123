"""A broker cluster (`[mqtt] urls`): the gateway fails over to a live node and loses
nothing; its status and /metrics name the node it is on; its birth is refreshed on a
timer, so a platform can tell a stale state even when the Last Will died with a node.

Three real Mosquittos on free loopback ports stand for the cluster's nodes; a test
subscriber on each one is the platform.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.ops.status import read_status_file
from gateway.sync.local_broker import LocalBroker
from tests.support.contract import assert_valid, payload_ref, validator
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

CARD = "0C0000F1"
TAPS = 240


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[LocalBroker]]:
    """Three Mosquittos of this test's own: the nodes of a broker cluster."""
    with contextlib.ExitStack() as stack:
        nodes = []
        for number in range(3):
            workdir = tmp_path / f"node{number}"
            workdir.mkdir()
            nodes.append(stack.enter_context(LocalBroker(workdir=workdir)))
        yield nodes


class Tapper(threading.Thread):
    """Taps the card at the reader one by one, a few milliseconds apart, `count` times."""

    def __init__(self, fifo: Path, count: int) -> None:
        super().__init__(name="tapper", daemon=True)
        self._fifo = fifo
        self._count = count
        self.written = 0

    def run(self) -> None:
        for _ in range(self._count):
            write_taps(self._fifo, [CARD])
            self.written += 1
            time.sleep(0.02)


def test_the_gateway_fails_over_to_a_live_node_and_loses_nothing(
    cluster: list[LocalBroker], tmp_path: Path
) -> None:
    gateway_id = "GW-FAILOVER"
    config = load(write_config(tmp_path, [node.url for node in cluster], gateway_id=gateway_id))
    assert config.mqtt.brokers == [node.url for node in cluster]
    enrol_cards(config, [CARD])
    platforms = [
        Subscriber(node.port, f"rentgate/v1/{gateway_id}/#", f"platform-{n}")
        for n, node in enumerate(cluster)
    ]
    try:
        with InProcessGateway(config) as running:
            uplink = running.gateway.uplink
            assert uplink is not None
            link = uplink.link
            wait_until(lambda: link.connected, 15, "connected")
            assert link.broker_url == cluster[0].url, "the first URL is tried first"

            tapper = Tapper(tmp_path / "front.reader", TAPS)
            tapper.start()
            wait_until(lambda: len(platforms[0].decisions()) >= 40, 30, "taps flowing to node 0")
            killed_at = time.monotonic()
            cluster[0].kill()  # kill -9 of the node the gateway is on, taps still flowing
            wait_until(
                lambda: link.connected and link.broker_url != cluster[0].url,
                10,
                "the gateway on another node within 10 s",
            )
            failover_s = time.monotonic() - killed_at
            moved_to = link.broker_url
            print(f"failover: on {moved_to} {failover_s:.3f} s after kill -9 of {cluster[0].url}")
            assert moved_to in (cluster[1].url, cluster[2].url)

            tapper.join(60)
            assert tapper.written == TAPS
            wait_until(
                lambda: stats_of(config.gateway.database).head_seq >= TAPS, 30, "taps recorded"
            )
            head = stats_of(config.gateway.database).head_seq
            survivors = platforms[1:]

            def every_seq_reached_the_platform() -> bool:
                seen = set().union(*(platform.unique_seqs() for platform in platforms))
                return seen >= set(range(1, head + 1))

            wait_until(every_seq_reached_the_platform, 30, "every seq at a subscriber")
            wait_until(lambda: uplink.stats.delivered_seq >= head, 30, "cursor at the head")

            status_file = config.gateway.status_file

            def status_names_the_new_node() -> bool:
                status = read_status_file(status_file)
                return status is not None and status.link.broker == moved_to

            wait_until(status_names_the_new_node, 10, "the status file naming the new node")
            status = read_status_file(status_file)
            assert status is not None
            assert status.link.connected
            assert status.link.protocol == "5", "Mosquitto takes MQTT 5 on auto"
            assert status.link.failovers >= 1
            with running.api_client() as client:
                metrics = client.get("/metrics").text
        seen_after_kill = set().union(*(platform.unique_seqs() for platform in survivors))
        seen_before_kill = platforms[0].unique_seqs()
    finally:
        for platform in platforms:
            platform.close()

    assert seen_before_kill | seen_after_kill >= set(range(1, head + 1)), "nothing lost"
    assert max(seen_after_kill) == head, "what came after the kill went to the survivors"
    assert min(set(range(1, head + 1)) - seen_before_kill) in seen_after_kill
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }
    assert samples[("rentgate_mqtt_broker", (("protocol", "5"), ("url", moved_to)))] == 1
    assert samples[("rentgate_mqtt_failovers_total", ())] >= 1


def test_a_dead_node_costs_one_attempt_and_the_gateway_stays_where_it_works(
    cluster: list[LocalBroker], tmp_path: Path
) -> None:
    gateway_id = "GW-SKIP-DEAD"
    config = load(write_config(tmp_path, [node.url for node in cluster], gateway_id=gateway_id))
    cluster[1].stop()  # down before the gateway starts
    with InProcessGateway(config) as running:
        uplink = running.gateway.uplink
        assert uplink is not None
        link = uplink.link
        wait_until(lambda: link.connected, 15, "connected")
        assert link.broker_url == cluster[0].url
        cluster[0].kill()
        wait_until(
            lambda: link.connected and link.broker_url == cluster[2].url,
            10,
            "past the dead node to the live one within 10 s",
        )
        assert link.last_error is not None
        assert link.last_error.startswith(cluster[1].url), "node 1 was tried once, and failed"
        cluster[0].start()  # the first node is back: the gateway stays where it works
        reconnects = link.reconnects
        write_taps(tmp_path / "front.reader", [CARD])
        wait_until(lambda: stats_of(config.gateway.database).head_seq >= 1, 10, "a tap recorded")
        wait_until(lambda: uplink.stats.delivered_seq >= 1, 10, "delivered")
        assert (link.broker_url, link.reconnects) == (cluster[2].url, reconnects)


def test_the_birth_is_republished_on_its_timer_with_a_fresh_ts(
    broker: LocalBroker, tmp_path: Path
) -> None:
    gateway_id = "GW-STATE-TIMER"
    config = load(
        write_config(tmp_path, broker.url, gateway_id=gateway_id, extra_mqtt="state_every_s = 1")
    )
    topic = f"rentgate/v1/{gateway_id}/state"
    check = validator(payload_ref("state"))

    def retained_state() -> dict[str, object] | None:
        """The retained state as a platform subscribing now reads it."""
        reader = Subscriber(broker.port, topic, f"state-reader-{time.monotonic_ns()}")
        try:
            wait_until(lambda: bool(reader.states()), 10, "the retained state")
            return reader.states()[0]
        finally:
            reader.close()

    with InProcessGateway(config) as running:
        running.wait_connected()
        first = retained_state()
        assert first is not None
        assert first["online"] is True
        assert first["state_every_s"] == 1
        assert_valid(check, first, "the birth")
        live = Subscriber(broker.port, topic, "state-watcher")
        try:
            wait_until(
                lambda: any(str(s["ts"]) > str(first["ts"]) for s in live.states()),
                15,
                "a refreshed birth",
            )
        finally:
            live.close()
        second = retained_state()
        reconnects = running.gateway.uplink.link.reconnects if running.gateway.uplink else -1
    assert second is not None
    assert str(second["ts"]) > str(first["ts"]), "the retained state's ts advanced"
    assert second["online"] is True
    assert_valid(check, second, "the refreshed birth")
    assert reconnects == 0, "refreshed within one session, not by reconnecting"
