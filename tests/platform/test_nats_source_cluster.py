"""The ingest's NATS source on a three-node cluster (Debian's 2.9): the stream and its
consumer have three replicas, so killing a node (SIGKILL) loses nothing the stream
stored, and the source carries on through another node's client port.

The cluster starts once per session (a killed node is started again for the next
test); its MQTT
sessions are replicated too (`stream_replicas: 3`).
"""

from __future__ import annotations

import asyncio
import time

import nats

from gateway.platform.nats_source import NatsStreamSource
from gateway.platform.source import Delivery
from tests.support.nats import NatsCluster
from tests.support.publisher import GatewayPublisher
from tests.support.sources import collect, payloads


async def _stream_leader(urls: list[str]) -> tuple[int, int]:
    """The node that leads the stream (by its number) and how many replicas follow it."""
    client = await nats.connect(urls)
    try:
        cluster = (await client.jetstream().stream_info("RENTGATE")).cluster
    finally:
        await client.close()
    assert cluster is not None
    assert cluster.leader is not None
    return int(cluster.leader.removeprefix("rentgate_node")), len(cluster.replicas or [])


def test_killing_the_stream_leader_loses_nothing_the_replicated_stream_stored(
    nats_cluster: NatsCluster,
) -> None:
    source = NatsStreamSource(nats_cluster.client_urls, replicas=3, connect_timeout_s=10)
    try:
        source.connect()
        with GatewayPublisher(nats_cluster.mqtt_ports[2], "GW-NATS-CLUSTER-SRC") as gateway:
            published = gateway.events(range(1, 21))  # on node 2, whoever leads
        first = collect(source, 10, 10, batch=10)
        assert payloads(first) == published[:10]
        leader, followers = asyncio.run(_stream_leader(nats_cluster.client_urls))
        assert followers == 2
        nats_cluster.kill(leader)
        rest: list[Delivery] = []
        deadline = time.monotonic() + 30
        while len(rest) < 10 and time.monotonic() < deadline:
            try:
                rest.extend(collect(source, 10 - len(rest), 1))
            except ConnectionError:
                time.sleep(0.2)  # its node was the killed one: it reconnects to another
        assert sorted(payloads(rest)) == sorted(published[10:])
    finally:
        source.close()
