"""The ingest on the clustered brokers, from Debian: a three-node NATS cluster read through a
JetStream durable consumer, and RabbitMQ read through a durable queue on `amq.topic`.

A real gateway (`rentgate run`, in a process of its own so it can be killed) on
`protocol = "auto"` (both brokers speak MQTT 3.1.1 only), a real PostgreSQL and
`rentgate platform ingest`: every seq stored once and acknowledged; the node the
gateway is on killed with SIGKILL costs nothing; a gateway that dies together with its
node (its Last Will dies with it) is shown stale at the platform within 60 s (15 s
measured with `state_every_s = 5`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.ops.status import GatewayStatus, read_status_file
from gateway.platform.fleet import gateway_status
from tests.support.gateway import (
    GatewayProcess,
    enrol_cards,
    load,
    stats_of,
    wait_until,
    write_config,
    write_taps,
)
from tests.support.ingest import IngestProcess, stored_seqs, stored_through
from tests.support.nats import NatsCluster
from tests.support.platform import key_file
from tests.support.rabbitmq import RabbitBroker

CARD = "0A000001"
STATE_EVERY_S = 5


@dataclass
class Building:
    """A gateway in a process of its own, its reader FIFO and its database."""

    gateway: GatewayProcess
    gateway_id: str
    tmp: Path
    database: Path
    status_file: Path
    taps: int = 0

    def tap(self, count: int = 1) -> None:
        write_taps(self.tmp / "front.reader", [CARD] * count, timeout=20)
        self.taps += count

    def tapping(self, seconds: float, per_second: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.tap()
            time.sleep(1 / per_second)

    def status(self) -> GatewayStatus:
        status = read_status_file(self.status_file)
        assert status is not None
        return status

    def head(self) -> int:
        wait_until(lambda: stats_of(self.database).head_seq > self.taps, 20, "taps recorded")
        return stats_of(self.database).head_seq

    def all_stored_once(self, dsn: str, timeout: float) -> None:
        head = self.head()
        wait_until(
            lambda: (
                stored_through(dsn, self.gateway_id) >= head
                and stats_of(self.database).acked_seq >= head
            ),
            timeout,
            f"seq 1..{head} stored and acknowledged",
        )
        assert stored_seqs(dsn, self.gateway_id) == list(range(1, head + 1))


@contextlib.contextmanager
def _building(tmp_path: Path, urls: list[str], gateway_id: str) -> Iterator[tuple[Building, Path]]:
    _key, public = key_file(tmp_path / "platform")
    key_path = next((tmp_path / "platform").glob("*.key"))
    config_path = write_config(
        tmp_path,
        urls,
        gateway_id=gateway_id,
        extra_mqtt=f'protocol = "auto"\nstate_every_s = {STATE_EVERY_S}\nack_resend_s = 10\n',
        extra=f'[platform]\nkeys = ["{public}"]\n',
    )
    config = load(config_path)
    enrol_cards(config, [CARD])
    gateway = GatewayProcess(config_path, tmp_path / "gateway.log", web="none")
    building = Building(
        gateway, gateway_id, tmp_path, config.gateway.database, config.gateway.status_file
    )
    gateway.start()
    try:
        gateway.wait_running(config.gateway.status_file, 30)
        yield building, key_path
    finally:
        if gateway.process is not None and gateway.process.poll() is None:
            gateway.kill()


def test_through_a_nats_cluster_nothing_is_lost_when_the_gateways_node_dies(
    nats_cluster: NatsCluster, pg_dsn: str, tmp_path: Path
) -> None:
    gateway_id = "GW-NATS-INGEST"
    with _building(tmp_path, nats_cluster.urls, gateway_id) as (building, key_path):
        stream = ",".join(nats_cluster.client_urls)
        ingest = IngestProcess(
            nats_cluster.urls,
            pg_dsn,
            key_path,
            tmp_path,
            extra=["--stream", stream, "--stream-replicas", "3", "--gap-after", "3"],
        )
        with ingest:
            building.tap(10)
            building.all_stored_once(pg_dsn, 60)
            assert building.status().link.protocol == "3.1.1", "auto fell back: NATS 2.9"

            node = nats_cluster.urls.index(building.status().link.broker or "")
            killed_at = time.monotonic()
            nats_cluster.kill(node)
            building.tapping(3)
            dead = nats_cluster.urls[node]
            # The 10 s bound is tests/sync/test_nats_cluster.py's; here the ingest matters. When
            # the node was JetStream's meta leader, the survivors hold new MQTT connections
            # until they elect another: 10.3 s measured, all of it NATS's.
            wait_until(
                lambda: building.status().link.connected and building.status().link.broker != dead,
                20,
                "the gateway on another node",
            )
            print(f"on another node {time.monotonic() - killed_at:.1f} s after the kill")
            building.tapping(2)
            building.all_stored_once(pg_dsn, 60)

            # The building loses power with its node: no goodbye, and its Will dies too.
            # (The first node comes back first: two of three down is a cluster without a
            # quorum, which is another test.)
            nats_cluster.heal()
            now_on = nats_cluster.urls.index(building.status().link.broker or "")
            building.gateway.kill()
            nats_cluster.kill(now_on)
            gone_at = time.monotonic()

            def not_online() -> bool:
                row = gateway_status(pg_dsn, gateway_id)
                return row is not None and row.status in ("stale", "offline")

            wait_until(not_online, 60, "the gateway stale or offline at the platform")
            print(f"shown {gateway_status(pg_dsn, gateway_id)} {time.monotonic() - gone_at:.1f} s")


def test_through_rabbitmq_every_seq_is_stored_once_and_acknowledged(
    rabbit_broker: RabbitBroker, pg_dsn: str, tmp_path: Path
) -> None:
    with _building(tmp_path, [rabbit_broker.url], "GW-RABBIT-INGEST") as (building, key_path):
        ingest = IngestProcess(
            [rabbit_broker.url],
            pg_dsn,
            key_path,
            tmp_path,
            extra=["--stream", rabbit_broker.amqp_url, "--gap-after", "3"],
        )
        with ingest:
            building.tapping(3)
            building.all_stored_once(pg_dsn, 60)
            ingest.stop()  # the queue is durable: what comes meanwhile waits in it
            building.tapping(3)
            ingest.start()
            building.all_stored_once(pg_dsn, 60)
        assert building.status().link.protocol == "3.1.1"
