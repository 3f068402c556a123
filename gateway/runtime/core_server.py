"""The door core's end of the local socket: a few named operations, bounded in every way.

The socket file is made 0660 in the data directory, so only the gateway's own
user and the web's group can connect; no network reaches it. Even so the
core trusts nothing it reads here: at most `MAX_CLIENTS` connections at once
(more are closed unanswered), one request per connection, `MAX_LINE` bytes,
`REQUEST_TIMEOUT_S` to send it, and every failure in a handler answered as an
error and counted, never raised into the door loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.errors import RentgateError
from gateway.ops.local_socket import MAX_LINE, CoreRefused, LocalSocketError, encode, read_message

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""One operation: the request's fields in, the answer's fields out (`ok` is added)."""

MAX_CLIENTS = 32
REQUEST_TIMEOUT_S = 5.0
SOCKET_MODE = 0o660


class CoreServer:
    """Serves the door core's operations on a Unix socket until cancelled."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self._handlers = dict(handlers)
        self._clients = 0
        self.requests: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        """Requests answered with an error, by reason (bad_message, unknown_op, busy, …)."""

    async def run(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a core that was killed
        server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_LINE)
        os.chmod(self.path, SOCKET_MODE)
        log.info("door core listening on %s", self.path)
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            self.refused["busy"] += 1
            writer.close()
            return
        self._clients += 1
        try:
            answer = await self._answer(reader)
            writer.write(encode(answer))
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                await writer.drain()
        except (OSError, TimeoutError, LocalSocketError):
            self.refused["unanswered"] += 1
        finally:
            self._clients -= 1
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                request = await read_message(reader)
        except (LocalSocketError, TimeoutError) as exc:
            return self._refuse("bad_message", str(exc) or "no request in time")
        op = request.get("op")
        handler = self._handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            return self._refuse("unknown_op", f"no operation {op!r}")
        self.requests[str(op)] += 1
        try:
            return {"ok": True, **await handler(request)}
        except CoreRefused as exc:
            return {**exc.detail, **self._refuse(exc.code, str(exc))}
        except (RentgateError, KeyError, TypeError, ValueError) as exc:
            return self._refuse("bad_request", f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # contained: a bug in one handler must not reach the doors
            log.exception("door core: operation %s failed", op)
            return self._refuse("failed", type(exc).__name__)

    def _refuse(self, code: str, message: str) -> dict[str, Any]:
        self.refused[code] += 1
        return {"ok": False, "error": code, "message": message}
