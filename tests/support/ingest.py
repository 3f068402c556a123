"""The platform's ingest as the tests run it: `rentgate platform ingest` in a process of its
own (so it can be stopped, killed with SIGKILL and started again), and what it stored."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

from tests.support.processes import stop as stop_process


class IngestProcess:
    """One ingest instance: `start()`, `stop()` (SIGTERM), `kill()` (SIGKILL), `start()` again."""

    def __init__(
        self,
        brokers: Sequence[str],
        dsn: str,
        key: Path,
        workdir: Path,
        *,
        instance: str = "ingest-1",
        extra: Sequence[str] = (),
    ) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "gateway.cli",
            "platform",
            "ingest",
            "--broker",
            *brokers,
            "--dsn",
            dsn,
            "--key",
            str(key),
            "--instance",
            instance,
            *extra,
        ]
        self.log_path = workdir / f"{instance}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> IngestProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return self

    def stop(self) -> None:
        stop_process(self.process, grace_s=15)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> IngestProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def stored_seqs(dsn: str, gateway_id: str) -> list[int]:
    """Every stored seq of a gateway, repeats included (a repeat would show twice)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT seq FROM events WHERE gw = %s ORDER BY seq", (gateway_id,))
        return [int(seq) for (seq,) in rows]


def stored_through(dsn: str, gateway_id: str) -> int:
    """The seq through which the ingest stored everything of a gateway (what it acks)."""
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT stored_seq FROM gateways WHERE gw = %s", (gateway_id,))
            found = row.fetchone()
    except psycopg.errors.UndefinedTable:
        return 0  # the ingest has not made its tables yet
    return int(found[0]) if found else 0
