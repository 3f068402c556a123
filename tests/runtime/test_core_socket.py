"""The door core's local socket answers every request and is hurt by none (issue 13).

A real `CoreServer` on a real Unix socket, spoken to by raw sockets (what a
confused or compromised web process could send) and by the web's own
`CoreClient`: garbage, an endless line, an unknown operation, a handler with a
bug, more clients than it serves at once. Each gets an answer or a closed
connection and a count; the next good request is served as ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.api.core_client import CoreClient
from gateway.ops.local_socket import MAX_LINE, CoreRefused, CoreUnavailable
from gateway.runtime.core_server import MAX_CLIENTS, CoreServer


async def _ping(request: dict[str, Any]) -> dict[str, Any]:
    return {"pong": request.get("n")}


async def _buggy(_request: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("a bug in one operation")


async def _slow(_request: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(30)
    return {}


async def _raw(path: Path, payload: bytes) -> dict[str, Any] | None:
    reader, writer = await asyncio.open_unix_connection(path, limit=MAX_LINE * 2)
    try:
        writer.write(payload)
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
    return json.loads(line) if line else None


@contextlib.asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[CoreServer]:
    core = CoreServer(tmp_path / "core.sock", {"ping": _ping, "buggy": _buggy, "slow": _slow})
    task = asyncio.create_task(core.run())
    for _ in range(200):
        if core.path.exists():
            break
        await asyncio.sleep(0.01)
    try:
        yield core
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_bad_requests_are_answered_counted_and_harmless(tmp_path: Path) -> None:
    async def body() -> None:
        async with serving(tmp_path) as core:
            path = core.path
            assert stat.S_IMODE(path.stat().st_mode) == 0o660, "the web's group only"
            garbage = await _raw(path, b"not json\n")
            assert garbage is not None
            assert garbage["ok"] is False
            assert garbage["error"] == "bad_message"
            assert "not JSON" in garbage["message"]
            assert (await _raw(path, b"[1,2]\n") or {})["error"] == "bad_message"
            endless = await _raw(path, b"x" * (MAX_LINE + 10))
            assert endless is not None
            assert endless["error"] == "bad_message"
            assert (await _raw(path, b'{"op":"nope"}\n') or {})["error"] == "unknown_op"
            assert (await _raw(path, b'{"op":"buggy"}\n') or {})["error"] == "failed"
            assert await _raw(path, b'{"op":"ping","n":7}\n') == {"ok": True, "pong": 7}
            assert core.refused == {"bad_message": 3, "unknown_op": 1, "failed": 1}

    _run(body())


def test_the_web_client_gets_answers_refusals_and_a_clear_unavailable(tmp_path: Path) -> None:
    async def body() -> None:
        async with serving(tmp_path) as core:
            client = CoreClient(core.path, timeout_s=1)
            assert (await client.call("ping", n=3))["pong"] == 3
            with pytest.raises(CoreRefused) as refused:
                await client.call("nope")
            assert refused.value.code == "unknown_op"
            with pytest.raises(CoreUnavailable):
                await client.call("slow")  # no answer within the client's deadline
        gone = CoreClient(tmp_path / "core.sock", timeout_s=1)
        with pytest.raises(CoreUnavailable):
            await gone.call("ping")
        assert gone.line.unreachable_since is not None
        assert await gone.status() is None, "no status while the core is away"

    _run(body())


def test_more_clients_than_it_serves_are_turned_away_not_queued(tmp_path: Path) -> None:
    async def body() -> None:
        async with serving(tmp_path) as core:
            hogs = [await asyncio.open_unix_connection(core.path) for _ in range(MAX_CLIENTS + 5)]
            try:
                await asyncio.sleep(0.2)
                assert core.refused["busy"] == 5
            finally:
                for _reader, writer in hogs:
                    writer.close()
            await asyncio.sleep(0.2)
            assert await _raw(core.path, b'{"op":"ping","n":1}\n') == {"ok": True, "pong": 1}

    _run(body())
