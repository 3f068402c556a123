"""`rentgate run` starts the web process as its child and keeps it running.

Under systemd the web side has a unit (and a user) of its own; for one
command on a workstation, the demo or a small install, the door core starts
`rentgate web` itself. The child dies with the core (PR_SET_PDEATHSIG), and
is started again, with backoff, whenever it exits: a crash, a kill -9 or an
exhausted web process costs the web UI a few seconds, never a door.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
from pathlib import Path

log = logging.getLogger(__name__)

RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
STEADY_S = 60.0
"""A child that ran this long counts as healthy: the next restart is quick again."""
STOP_GRACE_S = 8.0
_PR_SET_PDEATHSIG = 1


def web_command(config_path: Path, log_format: str, log_level: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway.cli",
        "--log-format",
        log_format,
        "--log-level",
        log_level,
        "web",
        "--config",
        str(config_path),
    ]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the door core's process ends, even by kill -9."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class WebChild:
    """Runs the web process, restarting it when it exits, until cancelled."""

    def __init__(self, command: list[str]) -> None:
        self._command = command
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def run(self) -> None:
        delay = RESTART_FIRST_S
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                self.process = await asyncio.create_subprocess_exec(
                    *self._command, preexec_fn=_die_with_parent, stdin=asyncio.subprocess.DEVNULL
                )
                log.info("web process started (pid %d)", self.process.pid)
                self.last_exit = await self.process.wait()
                if loop.time() - started >= STEADY_S:
                    delay = RESTART_FIRST_S
                self.restarts += 1
                log.error(
                    "web process exited with %s; starting it again in %.1f s", self.last_exit, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_MAX_S)
        finally:
            await self._stop()

    async def _stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
