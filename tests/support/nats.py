"""A real nats-server with its MQTT gateway on free loopback ports: a broker that speaks
MQTT 3.1.1 only (Debian's NATS 2.9), as a city's NATS cluster would.

NATS serves MQTT only with JetStream on (sessions, QoS 1 and retained messages live
in streams) and a `server_name`; both are written into a config in the test's own
folder. The server runs as the current user and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from gateway.sync.local_broker import free_port
from tests.support.processes import stop as stop_process
from tests.support.processes import wait_listening


def find_nats_server() -> str | None:
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )


class NatsBroker:
    """Start and stop a nats-server with MQTT on `port` (its NATS clients on another)."""

    def __init__(self, workdir: Path, executable: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.client_port = free_port()
        self._executable = executable
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return (self.workdir / "nats.log").read_text(encoding="utf-8", errors="replace")

    def start(self, timeout: float = 20.0) -> None:
        config = self.workdir / "nats.conf"
        config.write_text(
            f"""
server_name: rentgate_test_{self.port}
listen: 127.0.0.1:{self.client_port}
jetstream {{ store_dir: "{self.workdir / "jetstream"}" }}
mqtt {{ host: 127.0.0.1, port: {self.port} }}
""",
            encoding="utf-8",
        )
        with (self.workdir / "nats.log").open("ab") as log:
            self._process = subprocess.Popen(
                [self._executable, "-c", str(config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_listening(self._process, self.port, timeout, "nats-server (MQTT)")
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}: {self.log[-2000:]}") from exc

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process)

    def __enter__(self) -> NatsBroker:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class NatsCluster:
    """Three nats-servers routed into one cluster, JetStream and MQTT on each, as a city runs
    NATS: MQTT sessions, retained messages and QoS 1 messages are kept in streams with
    three replicas (`stream_replicas`), so a node may die without losing what it accepted."""

    SIZE = 3

    def __init__(self, workdir: Path, executable: str) -> None:
        self.workdir = workdir
        self._executable = executable
        self.mqtt_ports = [free_port() for _ in range(self.SIZE)]
        self._client_ports = [free_port() for _ in range(self.SIZE)]
        self._route_ports = [free_port() for _ in range(self.SIZE)]
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * self.SIZE

    @property
    def urls(self) -> list[str]:
        return [f"mqtt://127.0.0.1:{port}" for port in self.mqtt_ports]

    @property
    def client_urls(self) -> list[str]:
        """The NATS client ports, as the platform's ingest connects."""
        return [f"nats://127.0.0.1:{port}" for port in self._client_ports]

    def start(self, timeout: float = 30.0) -> None:
        for node in range(self.SIZE):
            self._launch(node)
        self._wait_serving(timeout)

    def heal(self, timeout: float = 60.0) -> None:
        """Start again every node a test killed (same folders: it rejoins with its data)."""
        dead = [node for node, process in enumerate(self._processes) if process is None]
        for node in dead:
            self._launch(node)
        if dead:
            self._wait_serving(timeout)

    def _launch(self, node: int) -> None:
        routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self._route_ports)
        folder = self.workdir / f"node{node}"
        folder.mkdir(exist_ok=True)
        config = folder / "nats.conf"
        config.write_text(
            f"""
server_name: rentgate_node{node}
listen: 127.0.0.1:{self._client_ports[node]}
jetstream {{ store_dir: "{folder / "jetstream"}" }}
cluster {{ name: rentgate, listen: 127.0.0.1:{self._route_ports[node]}, routes: [{routes}] }}
mqtt {{ host: 127.0.0.1, port: {self.mqtt_ports[node]}, stream_replicas: {self.SIZE} }}
""",
            encoding="utf-8",
        )
        with (folder / "nats.log").open("ab") as log:
            self._processes[node] = subprocess.Popen(
                [self._executable, "-c", str(config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )

    def _wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._answers_mqtt(port) for port in self.mqtt_ports):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the NATS cluster did not serve MQTT within {timeout} s")

    @staticmethod
    def _answers_mqtt(port: int) -> bool:
        """A CONNECT is accepted (JetStream has elected its leader and made the MQTT streams)."""
        connect = bytes.fromhex("100f00044d5154540402000a0003") + b"chk"  # MQTT 3.1.1
        try:
            with socket.create_connection(("127.0.0.1", port), 1) as sock:
                sock.sendall(connect)
                sock.settimeout(2)
                connack = sock.recv(4)
                sock.sendall(b"\xe0\x00")  # DISCONNECT
        except OSError:
            return False
        return len(connack) == 4 and connack[0] == 0x20 and connack[3] == 0

    def kill(self, node: int) -> None:
        """kill -9 of one node."""
        process, self._processes[node] = self._processes[node], None
        if process is not None:
            process.kill()
            process.wait(10)

    def stop(self) -> None:
        processes, self._processes = self._processes, [None] * self.SIZE
        for process in processes:
            stop_process(process)

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def _delete_stream(urls: list[str], name: str) -> None:
    import nats
    import nats.js.errors

    client = await nats.connect(urls)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await client.jetstream().delete_stream(name)
    finally:
        await client.close()


def forget_stream(urls: list[str], name: str = "RENTGATE") -> None:
    """Delete the ingest's JetStream stream, if any: tests share a cluster, and a work-queue
    stream refuses a second unfiltered consumer (another test's ingest would be one)."""
    asyncio.run(_delete_stream(urls, name))
