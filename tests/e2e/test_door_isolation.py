"""Nothing reachable on the network stops a door (issue 13): the web lives in its own process.

Each test runs `rentgate run` as a real child process (door core + its web
child) or the two apart as under systemd (`rentgate run --web none` and
`rentgate web`), against a real Mosquitto, with taps written to the reader's
FIFO and the platform's view read from the broker:
- 1,100 idle connections to the API port, with the process's descriptors
  capped at 1,024 as systemd's default does: the web may drown, the doors
  decide every tap and the platform receives them all;
- the web process killed with SIGKILL: taps meanwhile are decided and
  delivered, and the web comes back by itself;
- the door core killed while the web runs apart: the web stays up and says the
  doors are offline, then online again once the core is back.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from gateway.api import auth
from gateway.config import Config
from gateway.ops.status import read_status_file
from gateway.store import users
from gateway.store.db import connect, transaction
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    GatewayProcess,
    Subscriber,
    enrol_cards,
    load,
    wait_until,
    write_config,
    write_taps,
)

CARDS = [f"04A1B2C3{n:02X}" for n in range(20)]
FD_LIMIT = 1024


def _capped_descriptors() -> None:
    """In the gateway's process, before exec: the soft descriptor limit systemd gives by default."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(FD_LIMIT, hard), hard))


@contextlib.contextmanager
def _rentgate(config_path: Path, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args, "--config", str(config_path)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            preexec_fn=_capped_descriptors,  # noqa: PLW1509 (only setrlimit, no locks)
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _api_url(config: Config, timeout: float = 30) -> str:
    """The API's URL as the door core's status file has it (the web reports it there)."""
    found: list[str] = []

    def listening() -> bool:
        status = read_status_file(config.gateway.status_file)
        if status is not None and status.running and status.api.url:
            found.append(status.api.url)
            return True
        return False

    wait_until(listening, timeout, "the API listening")
    return found[-1]


def _new_api_url(config: Config, old: str) -> str:
    """The URL a restarted web reports (another free port), once it answers."""
    wait_until(lambda: _api_url(config) != old, 60, "the new web reporting its port")
    url = _api_url(config)
    wait_until(lambda: _healthy(config, url), 30, "the web restarted")
    return url


def _client(config: Config, url: str) -> httpx.Client:
    trust = ssl.create_default_context(cafile=str(config.gateway.data_dir / "tls" / "api.crt"))
    return httpx.Client(base_url=url, verify=trust, timeout=5)


def _healthy(config: Config, url: str) -> bool:
    try:
        with _client(config, url) as client:
            return client.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


ADMIN, PASSWORD = "iso-admin", "a long enough passphrase"


def _add_admin(config: Config) -> None:
    conn = connect(config.gateway.database)
    try:
        with transaction(conn):
            users.create_user(
                conn,
                name=ADMIN,
                role="admin",
                password_hash=auth.hash_password(PASSWORD),
                created_at="2026-01-01T00:00:00+08:00",
            )
    finally:
        conn.close()


def _log_in(client: httpx.Client) -> None:
    reply = client.post("/api/v1/login", json={"name": ADMIN, "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    client.headers["X-CSRF-Token"] = reply.json()["csrf_token"]


def _granted(config: Config) -> int:
    status = read_status_file(config.gateway.status_file)
    return status.decisions.get("granted", 0) if status is not None else -1


def _web_child(core_pid: int) -> psutil.Process:
    children = psutil.Process(core_pid).children()
    assert len(children) == 1, f"one web child, not {children}"
    return children[0]


@pytest.fixture
def gateway_setup(tmp_path: Path, broker: LocalBroker) -> Iterator[tuple[Path, Config, Subscriber]]:
    config_path = write_config(tmp_path, broker.url, gateway_id="GW-ISO")
    config = load(config_path)
    enrol_cards(config, CARDS)
    platform = Subscriber(broker.port, "rentgate/v1/GW-ISO/#", "iso-platform")
    try:
        yield config_path, config, platform
    finally:
        platform.close()


def _tap_and_expect(
    tmp_path: Path, platform: Subscriber, cards: list[str], already: int, what: str
) -> None:
    write_taps(tmp_path / "front.reader", cards)
    expected = already + len(cards)
    wait_until(lambda: len(platform.decisions()) >= expected, 20, what)
    granted = [d for d in platform.decisions()[already:] if d.get("reason") == "granted"]
    assert len(granted) == len(cards), "every enrolled card is let in"


def test_a_thousand_idle_connections_to_the_api_stop_no_door(
    tmp_path: Path, gateway_setup: tuple[Path, Config, Subscriber]
) -> None:
    config_path, config, platform = gateway_setup
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attacker (this test) has room
    with _rentgate(config_path, tmp_path / "gateway.log", "run") as core:
        url = _api_url(config)
        _tap_and_expect(tmp_path, platform, CARDS[:2], 0, "taps before the flood")
        host, port = url.removeprefix("https://").rsplit(":", 1)
        idle: list[socket.socket] = []
        try:
            for _ in range(1_100):
                with contextlib.suppress(OSError):
                    idle.append(socket.create_connection((host, int(port)), timeout=2))
            assert len(idle) >= 1_000, "the connections were made"
            _tap_and_expect(tmp_path, platform, CARDS[2:12], 2, "taps during the flood")
            assert core.poll() is None, "the door core is still running"
        finally:
            for sock in idle:
                sock.close()
        _tap_and_expect(tmp_path, platform, CARDS[12:], 12, "taps after the flood")
        wait_until(lambda: _healthy(config, url), 60, "the web answering again")
        status = read_status_file(config.gateway.status_file)
        assert status is not None
        assert status.pid == core.pid
        assert status.running
        wait_until(lambda: _granted(config) == len(CARDS), 5, "every tap granted, once")


def test_the_web_killed_with_sigkill_costs_the_doors_nothing_and_comes_back(
    tmp_path: Path, gateway_setup: tuple[Path, Config, Subscriber]
) -> None:
    config_path, config, platform = gateway_setup
    with _rentgate(config_path, tmp_path / "gateway.log", "run") as core:
        url = _api_url(config)
        web = _web_child(core.pid)
        for round_ in range(3):
            web.send_signal(signal.SIGKILL)
            web.wait(10)
            cards = CARDS[round_ * 5 : round_ * 5 + 5]
            _tap_and_expect(tmp_path, platform, cards, round_ * 5, "taps while the web is dead")
            url = _new_api_url(config, url)
            web = _web_child(core.pid)
        assert core.poll() is None
        wait_until(lambda: _granted(config) == 15, 5, "every tap granted, once")


def test_the_web_apart_says_doors_offline_while_the_core_restarts(
    tmp_path: Path, gateway_setup: tuple[Path, Config, Subscriber]
) -> None:
    """The systemd layout: `rentgate run --web none` and `rentgate web`, two processes."""
    config_path, config, platform = gateway_setup
    _add_admin(config)
    core = GatewayProcess(config_path, tmp_path / "core.log", web="none")
    core.start()
    core.wait_running(config.gateway.status_file)
    with _rentgate(config_path, tmp_path / "web.log", "web") as web:
        url = _api_url(config)

        def ready() -> int:
            with _client(config, url) as client:
                return client.get("/readyz").status_code

        wait_until(lambda: ready() == 200, 20, "ready with the core up")
        core.kill()
        wait_until(lambda: ready() == 503, 20, "doors offline once the core is gone")
        with _client(config, url) as client:
            body = client.get("/readyz").json()
            assert body["problems"] == ["doors_offline"]
            assert client.get("/healthz").status_code == 200, "the web itself goes on"
            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            assert "rentgate_outbox_head_seq" in metrics.text
            _log_in(client)
            doors = client.get("/api/v1/doors").json()
            assert doors["online"] is False
            assert [door["name"] for door in doors["doors"]] == ["front"], "as last reported"
            assert 'id="doors-offline"' in client.get("/ui/").text
            assert client.get("/api/v1/events").status_code == 200, "reads go on"
        assert web.poll() is None
        core.start()
        core.wait_running(config.gateway.status_file)
        wait_until(lambda: ready() == 200, 20, "doors online again")
        with _client(config, url) as client:
            _log_in(client)
            assert client.get("/api/v1/doors").json()["online"] is True
            assert 'id="doors-offline"' not in client.get("/ui/").text
        _tap_and_expect(tmp_path, platform, CARDS[:3], 0, "taps after the core came back")
        core.terminate()
