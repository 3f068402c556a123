"""A private Mosquitto on a free loopback port: for `rentgate demo`, tests and benchmarks.

It listens on 127.0.0.1 only and runs as the current user (Mosquitto drops root
to its own user unless told `user root`). Persistence is off unless asked for:
a persistent broker keeps sessions and queued messages across a stop/start,
as a production broker would across a restart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from gateway.errors import RentgateError

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerError(RentgateError):
    """Mosquitto is not installed or did not start."""


def find_mosquitto() -> str:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in MOSQUITTO_PATHS:
        if os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalBroker:
    """Start, stop and restart a Mosquitto bound to 127.0.0.1:port."""

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        extra_config: str = "",
        *,
        persistent: bool = False,
        listener_config: str | None = None,
    ) -> None:
        """`listener_config` replaces the default anonymous plaintext listener (it must bind
        `self.port` on 127.0.0.1 itself): for a broker run as production runs it."""
        self.port = port or free_port()
        self._owned_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="rentgate-mosquitto-"))
        self._extra = extra_config
        self._persistent = persistent
        self._listener = listener_config
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running mosquitto's process id (benchmarks lower its priority)."""
        return self._process.pid if self._process is not None else None

    def _write_config(self) -> Path:
        listener = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        lines = [
            "persistence true" if self._persistent else "persistence false",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_inflight_messages 0",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        path = self.workdir / "mosquitto.conf"
        tail = self._listener if self._listener is not None else "\n".join(listener)
        path.write_text("\n".join(lines) + "\n" + tail + "\n" + self._extra + "\n")
        return path

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        config = self._write_config()
        log = (self.workdir / "mosquitto.log").open("ab")
        self._process = subprocess.Popen(
            [find_mosquitto(), "-c", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with {self._process.returncode}; see {self.workdir}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop abruptly, as a crashed or unplugged broker would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        self.stop()
        if self._owned_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
