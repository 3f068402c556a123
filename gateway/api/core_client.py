"""The web process's line to the door core: a client of its local socket.

Every call opens a connection, sends one request and reads one answer, with a
deadline: a core that is stopped or restarting costs the web a refused
connection, never a hung request (`CoreUnavailable`, shown as "doors
offline"). The core's live status is fetched at most four times a second and
cached, so pages and scrapes do not each reach for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.ops.local_socket import (
    MAX_LINE,
    CoreRefused,
    CoreUnavailable,
    LocalSocketError,
    encode,
    read_message,
)
from gateway.ops.status import GatewayStatus

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 3.0
STATUS_MAX_AGE_S = 0.25


@dataclass
class CoreLine:
    """How the web sees the core: the last status it gave, and since when it is unreachable."""

    status: GatewayStatus | None = None
    fetched_at: float = 0.0
    unreachable_since: float | None = None
    last_error: str | None = None
    calls_failed: int = 0


class CoreClient:
    """Calls the door core's operations over its Unix socket."""

    def __init__(self, path: Path, *, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.path = path
        self._timeout_s = timeout_s
        self.line = CoreLine()
        self._status_lock = asyncio.Lock()

    async def call(
        self, op: str, *, timeout_s: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """The core's answer to `op`; `CoreRefused` if it said no, `CoreUnavailable` if silent."""
        deadline = timeout_s if timeout_s is not None else self._timeout_s
        try:
            async with asyncio.timeout(deadline):  # not wait_for: on 3.11 it can lose a cancel
                answer = await self._exchange({"op": op, **fields})
        except (OSError, TimeoutError, LocalSocketError) as exc:
            self._unreachable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            raise CoreUnavailable(
                f"the door core does not answer ({self.line.last_error})"
            ) from exc
        self.line.unreachable_since = None
        if not answer.get("ok"):
            detail = {k: v for k, v in answer.items() if k not in ("ok", "error", "message")}
            raise CoreRefused(str(answer.get("error")), str(answer.get("message")), detail)
        return answer

    async def status(self) -> GatewayStatus | None:
        """The core's status, at most `STATUS_MAX_AGE_S` old; None while it cannot be reached."""
        async with self._status_lock:
            if time.monotonic() - self.line.fetched_at < STATUS_MAX_AGE_S:
                return self.line.status if self.line.unreachable_since is None else None
            self.line.fetched_at = time.monotonic()
            try:
                answer = await self.call("status")
                self.line.status = GatewayStatus.from_json(answer["status"])
            except (CoreUnavailable, CoreRefused, KeyError, TypeError, ValueError) as exc:
                log.debug("door core status unavailable: %s", exc)
                return None
            return self.line.status

    async def _exchange(self, request: dict[str, Any]) -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(self.path, limit=MAX_LINE)
        try:
            writer.write(encode(request))
            await writer.drain()
            return await read_message(reader)
        finally:
            writer.close()

    def _unreachable(self, error: str) -> None:
        line = self.line
        line.calls_failed += 1
        line.last_error = error
        if line.unreachable_since is None:
            line.unreachable_since = time.monotonic()
            log.warning("door core unreachable: %s", error)
