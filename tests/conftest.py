"""Fixtures: a real Mosquitto per test session, and one of its own for a test that stops it;
a real nats-server and a real RabbitMQ (MQTT 3.1.1-only brokers) once per session for the
tests that need one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sync.local_broker import LocalBroker
from tests.support.nats import NatsBroker, NatsCluster, find_nats_server, forget_stream
from tests.support.postgres import PostgresCluster, find_postgres_bin
from tests.support.rabbitmq import RabbitBroker, find_rabbitmq


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A Mosquitto shared by the tests that never stop it."""
    with LocalBroker(workdir=tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A Mosquitto this test alone may stop, kill and restart."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    with LocalBroker(workdir=workdir) as running:
        yield running


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A Mosquitto of this test's own that keeps a platform's persistent session (and what is
    queued for it) across a stop and a restart."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    with LocalBroker(workdir=workdir, persistent=True) as running:
        yield running


@pytest.fixture(scope="session")
def nats_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsBroker]:
    """A nats-server with MQTT (3.1.1 only), started once for the whole session."""
    executable = find_nats_server()
    if executable is None:
        pytest.skip("nats-server is missing: install Debian's `nats-server` (scripts/setup does)")
    with NatsBroker(tmp_path_factory.mktemp("nats"), executable) as running:
        yield running


@pytest.fixture(scope="session")
def rabbit_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitBroker]:
    """A RabbitMQ with MQTT (3.1.1 only) and AMQP, started once for the whole session (it takes
    several seconds); tests that stop it need one of their own."""
    if find_rabbitmq() is None:
        pytest.skip("RabbitMQ is missing: install Debian's `rabbitmq-server` (scripts/setup does)")
    with RabbitBroker(tmp_path_factory.mktemp("rabbitmq")) as running:
        yield running


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster (Debian's `postgresql`), started once for the whole session."""
    bindir = find_postgres_bin()
    if bindir is None:
        pytest.fail("PostgreSQL is missing: install Debian's `postgresql` (scripts/setup does)")
    with PostgresCluster(bindir) as running:
        yield running


@pytest.fixture
def pg_dsn(postgres: PostgresCluster) -> str:
    """A database of this test's own in the session's PostgreSQL."""
    return postgres.create_database()


@pytest.fixture(scope="session")
def _nats_cluster_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    executable = find_nats_server()
    if executable is None:
        pytest.skip("nats-server is missing: install Debian's `nats-server` (scripts/setup does)")
    with NatsCluster(tmp_path_factory.mktemp("nats-cluster"), executable) as cluster:
        yield cluster


@pytest.fixture
def nats_cluster(_nats_cluster_once: NatsCluster) -> NatsCluster:
    """A three-node NATS cluster started once per session; a test may kill nodes, and the
    next test finds them started again (with their data: they rejoin) and no ingest stream."""
    _nats_cluster_once.heal()
    forget_stream(_nats_cluster_once.client_urls)
    return _nats_cluster_once
