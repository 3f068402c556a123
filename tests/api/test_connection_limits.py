"""The HTTPS port is bounded (issue 13): per-address and total caps, deadlines for slow clients.

A real web process (`WebGateway`, no door core behind it: none is needed to
serve a connection) on a real TLS port, with small limits so the test stays
quick: four connections per address, one second to send a request. Clients
are plain sockets: a slow-loris that dribbles its headers, a client that never
starts its TLS handshake, and more connections than one address may hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.runtime.parts import open_store
from gateway.runtime.web_process import WebGateway
from tests.support.gateway import load, wait_until, write_config

PER_ADDRESS = 4
READ_TIMEOUT_S = 1.0


@contextlib.contextmanager
def running_web(config: Config) -> Iterator[WebGateway]:
    """The web side served on a loop of its own thread until the block ends."""
    open_store(config)
    web = WebGateway(config)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        async with web:
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        wait_until(lambda: web.api_server.url is not None, 15, "the API listening")
        yield web
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebGateway]:
    extra = f"""
[api]
listen = "127.0.0.1:0"
max_connections_per_address = {PER_ADDRESS}
read_timeout_s = {READ_TIMEOUT_S}
"""
    path = write_config(tmp_path, "mqtt://127.0.0.1:1", extra="")
    path.write_text(path.read_text().replace('[api]\nlisten = "127.0.0.1:0"\n', extra))
    with running_web(load(path)) as running:
        yield running


def _address(web: WebGateway) -> tuple[str, int]:
    url = web.api_server.url
    assert url is not None
    host, port = url.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


def _tls(web: WebGateway) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(web.api_certificate))


def _connect(web: WebGateway) -> ssl.SSLSocket:
    host, port = _address(web)
    raw = socket.create_connection((host, port), timeout=5)
    return _tls(web).wrap_socket(raw, server_hostname=host)


def _closed_by_server(sock: ssl.SSLSocket | socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def _get(sock: ssl.SSLSocket, path: str = "/healthz") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
    sock.settimeout(5)
    return sock.recv(4096)


def test_a_slow_loris_is_cut_off_after_the_read_deadline(web: WebGateway) -> None:
    with _connect(web) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")  # never the blank line
        started = time.monotonic()
        assert _closed_by_server(slow, 10), "the server closed the connection"
        assert time.monotonic() - started < READ_TIMEOUT_S + 3
    assert web.api_server.gate.read_timeouts == 1
    with _connect(web) as fresh:
        assert _get(fresh).startswith(b"HTTP/1.1 200"), "others are served as ever"


def test_one_address_holds_only_its_share_of_connections(web: WebGateway) -> None:
    held = [_connect(web) for _ in range(PER_ADDRESS)]
    try:
        for sock in held:
            assert _get(sock).startswith(b"HTTP/1.1 200")
        with _connect(web) as extra:  # the handshake completes; the gate then closes it
            assert _closed_by_server(extra, 5)
        assert web.api_server.gate.refused_per_address >= 1
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: web.api_server.gate.open_total == 0, 10, "the slots given back")
    with _connect(web) as again:
        assert _get(again).startswith(b"HTTP/1.1 200"), "a closed connection frees its slot"


def test_a_client_that_never_starts_tls_is_dropped(web: WebGateway) -> None:
    host, port = _address(web)
    with socket.create_connection((host, port), timeout=5) as silent:
        assert _closed_by_server(silent, READ_TIMEOUT_S + 5), "the handshake deadline"
    assert web.api_server.gate.open_total == 0, "it never took a slot"
