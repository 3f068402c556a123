"""Serving the gateway's API (terminals now, the web UI later) on the gateway's own event loop.

HTTPS always: with `[api] cert`/`key` from the installer, or else a
self-signed certificate the gateway makes on first start (its fingerprint is
logged and shown by `rentgate status`, so terminals can pin it as their CA
file). A port that cannot be bound is reported and retried; doors never wait
for the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI

from gateway.api.connection_limits import ConnectionGate, ConnectionLimits, bounded_protocol

log = logging.getLogger(__name__)

RETRY_S = 30.0


def self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    """The gateway's own certificate and key for `host` (made once, key mode 0600)."""
    cert_path, key_path = directory / "api.crt", directory / "api.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Rentgate gateway {host}")])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    fd = os.open(cert_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the data dir's rule
    with os.fdopen(fd, "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def fingerprint(cert_path: Path) -> str:
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, handshake_timeout_s: float) -> None:
        super().__init__(config)
        self._handshake_timeout_s = handshake_timeout_s

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The gateway owns SIGTERM/SIGINT; uvicorn must not take them over."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup for given sockets, with a deadline on the TLS handshake.

        uvicorn leaves asyncio's default of 60 s, long enough for a few hundred
        clients that never finish a handshake to hold the port's descriptors.
        """
        config = self.config
        loop = asyncio.get_running_loop()

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        self.servers = [
            await loop.create_server(
                create_protocol,
                sock=sock,
                ssl=config.ssl,
                backlog=config.backlog,
                ssl_handshake_timeout=self._handshake_timeout_s,
            )
            for sock in sockets or []
        ]
        self.started = True


class ApiServer:
    """The HTTPS listener; the app it serves is given when it runs, so its status exists first."""

    def __init__(
        self, listen: str, cert: Path, key: Path, limits: ConnectionLimits | None = None
    ) -> None:
        host, _, port = listen.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)
        self._cert, self._key = cert, key
        self.url: str | None = None
        self.error: str | None = None
        self._server: _Server | None = None
        self.limits = limits or ConnectionLimits()
        self.gate = ConnectionGate(self.limits)

    def _uvicorn_config(self, app: FastAPI) -> uvicorn.Config:
        return uvicorn.Config(
            app,
            host=self._host,
            port=self._port,
            ssl_certfile=str(self._cert),
            ssl_keyfile=str(self._key),
            lifespan="off",
            ws="none",
            http=bounded_protocol(self.gate),
            timeout_keep_alive=int(self.limits.keep_alive_s),
            backlog=self.limits.max_connections,
            log_level="warning",
            log_config=None,  # uvicorn's records go through the gateway's own log handler
            access_log=False,
            proxy_headers=False,  # X-Forwarded-For: only from [api] trusted_proxies (api/forwarded)
            timeout_graceful_shutdown=3,  # live event streams never end by themselves
        )

    def stop(self) -> None:
        """Ask the server to finish its requests and close (`run` then returns to its loop)."""
        if self._server is not None:
            self._server.should_exit = True

    async def run(self, app: FastAPI) -> None:
        """Serve `app` until cancelled; a port that cannot be bound is logged and retried.

        The socket is bound here, not by uvicorn, whose own bind failure ends in
        `sys.exit`, which would take the whole gateway down.
        """
        config = self._uvicorn_config(app)
        where = f"{self._host}:{self._port}"
        while True:
            try:
                sock = socket.create_server((self._host, self._port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                self.error = f"cannot listen on {where}: {exc.strerror}"
                log.error("API %s; retrying in %.0f s", self.error, RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            server = _Server(config, self.limits.handshake_timeout_s)
            self._server = server
            self.url = f"https://{self._host}:{sock.getsockname()[1]}"
            self.error = None
            log.info("API listening on %s", self.url)
            try:
                await server.serve(sockets=[sock])
            except asyncio.CancelledError:
                server.should_exit = True
                raise
            finally:
                sock.close()
            self.url = None
            self.error = f"stopped serving on {where}"
            log.error("API %s; retrying in %.0f s", self.error, RETRY_S)
            await asyncio.sleep(RETRY_S)
