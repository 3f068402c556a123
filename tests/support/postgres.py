"""A real PostgreSQL (Debian's `postgresql`) for the platform's ingest: a temporary cluster
on a free loopback port, started once per test session; each test gets a database of its own.

initdb refuses to run as root, so as root the cluster belongs to the `postgres` user
(Debian's package creates it) in a folder of its own under the system's temporary
folder (pytest's folders are 0700 root). It trusts connections from 127.0.0.1 only and
keeps `fsync` on: the ingest acknowledges to gateways after a commit, and that is
what the tests check.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from gateway.sync.local_broker import free_port
from tests.support.processes import stop as stop_process
from tests.support.processes import wait_listening


def find_postgres_bin() -> Path | None:
    """Debian's server binaries (initdb and postgres are not on PATH there)."""
    root = Path("/usr/lib/postgresql")
    versions = sorted(root.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


class PostgresCluster:
    """initdb, start and stop a PostgreSQL cluster; `create_database()` for each test."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="rentgate-pg-"))
        self._as_postgres = os.geteuid() == 0
        self.user = "postgres" if self._as_postgres else pwd.getpwuid(os.geteuid()).pw_name
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _command(self, *argv: str) -> list[str]:
        if not self._as_postgres:
            return list(argv)
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]

    def start(self, timeout: float = 60.0) -> None:
        if self._as_postgres:
            shutil.chown(self.workdir, "postgres", "postgres")
        subprocess.run(
            self._command(
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                self.user,
            ),
            check=True,
            capture_output=True,
        )
        log = (self.workdir / "postgres.log").open("ab")
        self._process = subprocess.Popen(
            self._command(
                str(self.bindir / "postgres"),
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.workdir}",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=128MB",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_listening(self._process, self.port, timeout, "postgres")
        self._wait_accepting(timeout)

    def _wait_accepting(self, timeout: float) -> None:
        """Until recovery is over and it takes connections (it listens before that)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not accept connections within {timeout} s")

    def create_database(self) -> str:
        """A fresh, empty database; its DSN."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    @property
    def log(self) -> str:
        path = self.workdir / "postgres.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # "fast" shutdown: does not wait for clients
        stop_process(self._process, grace_s=20)
        self._process = None
        with contextlib.suppress(OSError):
            shutil.rmtree(self.workdir)

    def __enter__(self) -> PostgresCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
