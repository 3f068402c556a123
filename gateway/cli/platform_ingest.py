"""`rentgate platform ingest` (the platform's ingest service) and `rentgate platform fleet`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
FLEET_GAUGES_EVERY_S = 15.0


def add_parsers(actions: Any, broker_options: Callable[..., None]) -> None:
    ingest = actions.add_parser(
        "ingest",
        help="store every gateway's events and state in PostgreSQL, then acknowledge them",
    )
    broker_options(ingest, several=True)
    ingest.add_argument("--dsn", required=True, help="postgresql://user@host:port/database")
    ingest.add_argument(
        "--key", type=Path, required=True, help="platform signing private key (PEM): signs acks"
    )
    ingest.add_argument(
        "--decrypt-key",
        type=Path,
        action="append",
        default=[],
        help="platform encryption private key (PEM) that opens registrations; repeat per key id",
    )
    ingest.add_argument(
        "--stream",
        default="mqtt",
        help="where to read: mqtt (a $share group on --broker, MQTT 5), nats://host:port[,…]"
        " (a JetStream durable consumer) or amqp://user:pass@host:port[,…] (a durable queue)",
    )
    ingest.add_argument("--group", default="rentgate-ingest", help="consumer group / queue name")
    ingest.add_argument(
        "--instance",
        default=socket.gethostname(),
        help="this instance's stable name (its MQTT session); unique per instance",
    )
    ingest.add_argument("--metrics", help="serve Prometheus metrics at host:port")
    ingest.add_argument("--gap-after", type=float, default=30.0, help="seconds before a replay")
    ingest.add_argument("--batch", type=int, default=5000, help="deliveries per transaction")
    ingest.add_argument(
        "--ack-every",
        type=float,
        default=30.0,
        help="seconds between two acks to one gateway (the first goes at once); keep the"
        " gateways' ack_resend_s a few times longer",
    )
    ingest.add_argument(
        "--session-expiry",
        type=int,
        default=300,
        help="MQTT only: seconds the broker keeps this instance's session while it is away",
    )
    ingest.add_argument(
        "--stream-replicas",
        type=int,
        default=1,
        help="NATS only: replicas of the JetStream stream (3 in a 3-node cluster)",
    )

    fleet = actions.add_parser(
        "fleet", help="gateways online/stale/offline, lag, gaps, oldest unacknowledged"
    )
    fleet.add_argument("--dsn", required=True, help="the ingest's database")
    fleet.add_argument("--json", action="store_true")
    fleet.add_argument("--worst", type=int, default=10, help="list this many furthest behind")


def run_fleet(args: argparse.Namespace) -> int:
    import psycopg

    from gateway.platform.fleet import fleet_report, render

    try:
        report = fleet_report(args.dsn, worst=args.worst)
    except psycopg.Error as exc:
        print(f"rentgate platform fleet: {str(exc).strip()}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_json(), indent=2) if args.json else render(report))
    return 0


def run_ingest(args: argparse.Namespace, brokers: Sequence[Any]) -> int:
    import psycopg

    from gateway.domain.sealed_box import OpeningKey
    from gateway.domain.signing import SigningKey
    from gateway.ops.logs import configure_logging
    from gateway.platform.command_process import CommandProcess
    from gateway.platform.ingest import Ingest, IngestSettings
    from gateway.platform.pg_store import IngestStore

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    SigningKey.load(args.key)  # a bad key is a usage error now, not in the child later
    keys = [OpeningKey.load(path) for path in args.decrypt_key]
    try:
        IngestStore(args.dsn).close()  # the schema, and a clear error now rather than later
    except psycopg.Error as exc:
        print(f"rentgate platform ingest: database: {str(exc).strip()}", file=sys.stderr)
        return 1
    source = _source(args, brokers)
    ingest = Ingest(
        source,
        lambda: IngestStore(args.dsn),
        CommandProcess(brokers, args.key, setup_logging=partial(configure_logging, "json")),
        keys=keys,
        settings=IngestSettings(
            batch_max=args.batch, gap_after_s=args.gap_after, ack_every_s=args.ack_every
        ),
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if args.metrics:
        host, _, port = args.metrics.rpartition(":")
        ingest.metrics.serve(host or "127.0.0.1", int(port))
        threading.Thread(
            target=_fleet_gauges, args=(ingest, args.dsn, stop), daemon=True, name="fleet-gauges"
        ).start()
    try:
        ingest.run(stop)
    finally:
        ingest.close()
    return 0


def _source(args: argparse.Namespace, brokers: Sequence[Any]) -> Any:
    stream: str = args.stream
    if stream.startswith("nats://"):
        from gateway.platform.nats_source import NatsStreamSource

        return NatsStreamSource(
            _urls(stream, "nats://"), durable=args.group, replicas=args.stream_replicas
        )
    if stream.startswith(("amqp://", "amqps://")):
        from gateway.platform.rabbit_source import RabbitQueueSource

        return RabbitQueueSource(_urls(stream, stream.split("//", 1)[0] + "//"), queue=args.group)
    if stream != "mqtt":
        raise ValueError(f"--stream {stream!r}: mqtt, nats://… or amqp://…")
    from gateway.platform.mqtt_source import MqttShareSource

    return MqttShareSource(
        brokers, group=args.group, instance=args.instance, session_expiry_s=args.session_expiry
    )


def _urls(stream: str, scheme: str) -> list[str]:
    """`scheme://a:1,b:2` or `scheme://a:1,scheme://b:2`: one URL per node."""
    return [part if "://" in part else scheme + part for part in stream.split(",") if part]


def _fleet_gauges(ingest: Any, dsn: str, stop: threading.Event) -> None:
    """Keep the fleet gauges of /metrics fresh (one quick scan of the gateways table)."""
    import psycopg

    from gateway.platform.fleet import STATUSES, fleet_report

    while not stop.wait(FLEET_GAUGES_EVERY_S):
        try:
            report = fleet_report(dsn, worst=0)
        except psycopg.Error:
            continue
        metrics = ingest.metrics
        for status in STATUSES:
            metrics.fleet.labels(status).set(report.counts.get(status, 0))
        metrics.fleet_lag.set(report.lag)
        metrics.fleet_gaps.set(report.with_gap)
        metrics.fleet_oldest_unacked.set(report.oldest_unacked_s or 0)
