"""The door core's local socket: its framing, shared by the core (server) and the web (client).

The web process reaches the door core only here, and only for what the store
cannot carry: the core's live status, arming and taking an enrol-by-tap
capture, acknowledging an alert, and "the outbox grew" after the web committed
an event. One request per connection: a JSON object on one line, answered by
one JSON object on one line, `{"ok": true, …}` or `{"ok": false, "error":
code, "message": …}`. Lines are capped at `MAX_LINE` bytes, so a confused or
hostile peer cannot make the core buffer more than that.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway.errors import RentgateError

MAX_LINE = 64 * 1024
"""Bytes in one request or answer, newline included (a status is a few KiB)."""
SOCKET_NAME = "core.sock"


class LocalSocketError(RentgateError):
    """A message on the core socket that is not one: too long, not JSON, not an object."""


class CoreUnavailable(RentgateError, ConnectionError):
    """The door core cannot be reached (stopped, restarting, or not answering in time)."""


class CoreRefused(RentgateError):
    """The door core understood the request and said no (`code` says why)."""

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail or {}
        """What the caller may show of the refusal (who holds a busy door, until when)."""


def encode(message: dict[str, Any]) -> bytes:
    line = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    if len(line) > MAX_LINE:
        raise LocalSocketError(f"message of {len(line)} bytes is over {MAX_LINE}")
    return line


def decode(line: bytes) -> dict[str, Any]:
    if not line.endswith(b"\n"):
        raise LocalSocketError("message not terminated (connection closed or line too long)")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LocalSocketError(f"message is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise LocalSocketError("message is not a JSON object")
    return message


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any]:
    """One message; `reader` must have been made with `limit=MAX_LINE`."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise LocalSocketError(f"message over {MAX_LINE} bytes") from exc
    except asyncio.IncompleteReadError as exc:
        raise LocalSocketError("connection closed before a whole message") from exc
    return decode(line)
