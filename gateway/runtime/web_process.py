"""The web process: the web UI, the REST API and the terminals' endpoint, apart from the doors.

Everything that listens on the network runs here, in a process (and, under
systemd, a user) of its own: a flood of connections, a crash or a kill -9
here costs the web UI, never a door decision. It meets the door core in the
SQLite store (its own writer: accounts, enrolments, terminal records, audit;
the core follows the registry change log as it does for `rentgate enroll`)
and, for the little only the core can do, over the core's local socket
(`gateway.api.core_client`). While the core is down or restarting, pages and
reads keep working and the doors show as offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from fastapi import FastAPI

from gateway.api.connection_limits import ConnectionLimits
from gateway.api.core_client import CoreClient
from gateway.api.core_links import RemoteCaptures
from gateway.api.server import ApiServer, self_signed
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.ops.local_socket import SOCKET_NAME, CoreRefused, CoreUnavailable
from gateway.ops.status import GatewayStatus
from gateway.residence.intake import TerminalRegistry
from gateway.runtime.parts import record_intake, sealing_key
from gateway.runtime.web import WebParts, WebSide, build_web
from gateway.store.crypto import KeyRing
from gateway.store.db import connect
from gateway.store.errors import StoreError
from gateway.store.migrations import LATEST_VERSION, schema_version
from gateway.store.outbox import OutboxStats
from gateway.store.writer import Writer
from gateway.sync.outbox_source import OutboxSource

log = logging.getLogger(__name__)

STORE_WAIT_S = 0.5
STATUS_EVERY_S = 1.0


def core_socket(config: Config) -> Path:
    return config.gateway.data_dir / SOCKET_NAME


def api_limits(config: Config) -> ConnectionLimits:
    api = config.api
    return ConnectionLimits(
        max_connections=api.max_connections,
        max_per_address=api.max_connections_per_address,
        read_timeout_s=api.read_timeout_s,
        handshake_timeout_s=api.read_timeout_s,
    )


class CoreView:
    """The running gateway as the web sees it (`RunningView`): the core's status, its outbox."""

    def __init__(self, config: Config, core: CoreClient, clock: Clock) -> None:
        self.data_dir = config.gateway.data_dir
        self._gateway = config.gateway.id
        self._core = core
        self._clock = clock
        self._source = OutboxSource(config.gateway.database)
        self._last: GatewayStatus | None = None
        self._reachable = False

    def status(self) -> GatewayStatus:
        """The core's last status; `running` false (doors offline) while it cannot be reached."""
        if self._last is None:
            now = self._clock.now()
            return GatewayStatus(self._gateway, 0, False, now, now)
        return self._last if self._reachable else replace(self._last, running=False)

    async def fresh_status(self) -> GatewayStatus:
        await self.refresh_once()
        return self.status()

    async def refresh_once(self) -> None:
        status = await self._core.status()
        self._reachable = status is not None
        if status is not None:
            self._last = status

    async def refresh(self) -> None:
        """Keep the status fresh (once a second) until cancelled."""
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            await self.refresh_once()

    async def outbox_stats(self, delivered_at_least: int = 0) -> OutboxStats:
        return await self._source.stats(delivered_at_least)

    async def acknowledge_alert(self, alert_id: str) -> bool:
        try:
            answer = await self._core.call("alert.ack", id=alert_id)
        except (CoreUnavailable, CoreRefused):
            return False
        return bool(answer.get("acknowledged"))

    def close(self) -> None:
        self._source.close()


class WebGateway:
    """The web side of one gateway; `async with` serves it until left."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock(config.gateway.timezone)
        self.core = CoreClient(core_socket(config))
        cert, key = config.api.cert, config.api.key
        if cert is None or key is None:
            cert, key = self_signed(config.web_state_dir / "tls", config.api.host)
        self.api_certificate = cert
        self.api_server = ApiServer(config.api.listen, cert, key, api_limits(config))
        self.view = CoreView(config, self.core, self.clock)
        self.web: WebSide | None = None
        self._exit: AsyncExitStack | None = None

    @property
    def app(self) -> FastAPI:
        if self.web is None:
            raise RuntimeError("the web side is not running")
        return self.web.app

    async def __aenter__(self) -> WebGateway:
        await _wait_for_store(self.config)
        parts = self._parts()
        parts.writer.start()
        self.web = build_web(parts, self.view)
        web = self.web
        await asyncio.to_thread(web.accounts.prepare_setup)
        await self.view.refresh_once()
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            stack.callback(self.view.close)
            stack.push_async_callback(asyncio.to_thread, parts.writer.close)
            stack.callback(web.close)
            stack.callback(parts.terminals.close)
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            running: list[asyncio.Task[None]] = []
            stack.callback(lambda: [task.cancel() for task in running])
            stack.callback(self.api_server.stop)
            stack.callback(web.feed.close)
            for name, work in (
                ("api", self.api_server.run(web.app)),
                ("live-feed", web.feed.run()),
                ("core-status", self.view.refresh()),
                ("report-listening", self._report_listening()),
            ):
                running.append(tasks.create_task(work, name=f"web:{name}"))
        except BaseException:
            await stack.aclose()
            raise
        self._exit = stack
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        stack, self._exit = self._exit, None
        if stack is not None:
            await stack.__aexit__(kind, error, trace)

    def _parts(self) -> WebParts:
        config = self.config
        keys = KeyRing.load_or_create(
            config.gateway.keys, group_readable=config.gateway.store_shared_with_group
        )

        def committed(head: int) -> None:  # on the web writer's thread
            if self.web is not None:
                self.web.feed.committed(head)
            loop.call_soon_threadsafe(self._outbox_changed)

        loop = asyncio.get_running_loop()
        writer = Writer(
            config.gateway.database,
            window_s=config.gateway.commit_window_ms / 1000,
            on_commit=committed,
        )
        return WebParts(
            config=config,
            clock=self.clock,
            keys=keys,
            writer=writer,
            terminals=TerminalRegistry(config.gateway.database, writer=writer, clock=self.clock),
            intake=record_intake(
                config, sealing_key(config), writer=writer, keys=keys, clock=self.clock
            ),
            captures=RemoteCaptures(self.core),
            core=self.core,
        )

    def _outbox_changed(self) -> None:
        """Tell the core the web committed events, so the uplink sends them now."""
        task = asyncio.ensure_future(self._notify_core())
        task.add_done_callback(_ignore_outcome)

    async def _notify_core(self) -> None:
        with contextlib.suppress(CoreUnavailable, CoreRefused):
            await self.core.call("outbox.changed")

    async def _report_listening(self) -> None:
        """Tell the core where the API listens (for `rentgate status`), now and on each change."""
        told: tuple[str | None, str | None] | None = None
        while True:
            server = self.api_server
            now = (server.url, server.error)
            if now != told:
                try:
                    await self.core.call("web.listening", url=server.url, error=server.error)
                    told = now
                except (CoreUnavailable, CoreRefused):
                    told = None
            elif self.core.line.unreachable_since is not None:
                told = None  # a core that restarts has forgotten
            await asyncio.sleep(STATUS_EVERY_S)


def _ignore_outcome(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


async def _wait_for_store(config: Config) -> None:
    """Until the door core has created (or upgraded) the store and its key: it alone migrates."""
    said = False
    while not await asyncio.to_thread(_store_ready, config):
        if not said:
            log.info("web waiting for the door core to open the store %s", config.gateway.database)
            said = True
        await asyncio.sleep(STORE_WAIT_S)


def _store_ready(config: Config) -> bool:
    """The store exists at the latest schema and can be opened. In a split install the web
    cannot create the WAL files in the core's folder: until the core has, it waits."""
    database = config.gateway.database
    if not database.exists() or not config.gateway.keys.exists():
        return False
    try:
        conn = connect(database)
    except StoreError:
        return False
    try:
        return schema_version(conn) == LATEST_VERSION
    finally:
        conn.close()


async def run_web(config: Config, stop: asyncio.Event) -> None:
    """Serve the web side as a process's main job until `stop` is set (SIGTERM/SIGINT)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with WebGateway(config):
        await stop.wait()
