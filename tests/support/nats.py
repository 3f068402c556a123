"""A real nats-server with its MQTT gateway on free loopback ports: a broker that speaks
MQTT 3.1.1 only (Debian's NATS 2.9), as a city's NATS cluster would.

NATS serves MQTT only with JetStream on (sessions, QoS 1 and retained messages live
in streams) and a `server_name`; both are written into a config in the test's own
folder. The server runs as the current user and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from gateway.sync.local_broker import free_port


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server did not listen for MQTT within {timeout} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> NatsBroker:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
