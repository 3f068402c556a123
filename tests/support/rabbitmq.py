"""A real RabbitMQ (Debian's 3.10) with its MQTT plugin on free loopback ports: a broker that
speaks MQTT 3.1.1 only and maps topics onto `amq.topic` (a `/` becomes a `.` in the
routing key), as a city's RabbitMQ would.

Everything lives in the test's own folder (node data, logs, config, the Erlang cookie
through HOME), and the Erlang port mapper it needs is started here too, on a port of
its own, so nothing of the machine's is touched; both are stopped by their PIDs. The
broker is run by its own script (`/usr/lib/rabbitmq/bin/rabbitmq-server`), not Debian's
wrapper, which would switch to the `rabbitmq` user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from gateway.sync.local_broker import free_port
from tests.support.processes import stop as stop_process
from tests.support.processes import wait_listening

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def find_rabbitmq() -> Path | None:
    return SERVER if SERVER.exists() and shutil.which("epmd") is not None else None


class RabbitBroker:
    """Start and stop a RabbitMQ node with MQTT on `port`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self._amqp_port = free_port()
        self._dist_port = free_port()
        self._epmd_port = free_port()
        self._epmd: subprocess.Popen[bytes] | None = None
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def amqp_url(self) -> str:
        """AMQP 0-9-1 as the platform's ingest reads (guest may log in over loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self._amqp_port}/%2F"

    def _environment(self) -> dict[str, str]:
        folder = self.workdir
        return {
            **os.environ,
            "HOME": str(folder),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_PID_FILE": str(folder / "rabbit.pid"),
            "RABBITMQ_NODENAME": f"rentgate{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self._amqp_port),
            "RABBITMQ_DIST_PORT": str(self._dist_port),
            "ERL_EPMD_PORT": str(self._epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self, timeout: float = 90.0) -> None:
        folder = self.workdir
        for name in ("mnesia", "log"):
            (folder / name).mkdir(exist_ok=True)
        (folder / "rabbitmq.conf").write_text(
            f"""
listeners.tcp.default = 127.0.0.1:{self._amqp_port}
mqtt.listeners.tcp.default = 127.0.0.1:{self.port}
mqtt.allow_anonymous = true
loopback_users = none
""",
            encoding="utf-8",
        )
        (folder / "enabled_plugins").write_text("[rabbitmq_mqtt].\n", encoding="utf-8")
        environment = self._environment()
        with (folder / "rabbit.out").open("ab") as log:
            self._epmd = subprocess.Popen(
                ["epmd", "-port", str(self._epmd_port), "-address", "127.0.0.1"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=environment,
            )
            self._server = subprocess.Popen(
                [str(SERVER)], stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=environment
            )
        try:
            wait_listening(self._server, self.port, timeout, "RabbitMQ (MQTT)")
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}; see {folder / 'rabbit.out'}") from exc

    def stop(self) -> None:
        server, epmd = self._server, self._epmd
        self._server = self._epmd = None
        stop_process(server, grace_s=30)
        stop_process(epmd)

    def __enter__(self) -> RabbitBroker:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
