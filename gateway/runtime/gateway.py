"""The running gateway: its parts started in order, its loops owned by one TaskGroup.

One asyncio loop runs readers, the decision path and the uplink; the store
writer and the outbox reader have threads of their own, paho its network
thread. `async with Gateway(config)` starts everything; leaving it stops in
this order: readers first, the web side, what was accepted is committed, a
goodbye on MQTT with a retained offline state, then the loops, then the store.
A background loop that fails (or ends) is logged with its traceback and
stops the gateway the same clean way, after which `run` raises its error
(systemd restarts the process); a short task a command started is only logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine, Iterable
from contextlib import AsyncExitStack
from dataclasses import replace
from types import TracebackType
from typing import Any

from fastapi import FastAPI

from gateway.api.metrics import essentials
from gateway.api.server import ApiServer, self_signed
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.devices.protocols import Reader
from gateway.doors.access import AccessIndex
from gateway.doors.controller import DoorController
from gateway.doors.readers import ReaderSupervisor
from gateway.ops.liveness import EVENT_LOOP, STORE_WRITER, UPLINK, Liveness
from gateway.ops.status import GatewayStatus, write_status_file
from gateway.ops.watchdog import Watchdog, heartbeat, uplink_probe, writer_pings
from gateway.runtime.parts import GatewayParts, build_parts
from gateway.runtime.status_snapshot import snapshot
from gateway.runtime.web import RunningGatewayView, build_web
from gateway.store.writer import Writer
from gateway.sync.uplink import Uplink
from gateway.sync.wire import StateHealth

log = logging.getLogger(__name__)

STATUS_EVERY_S = 1.0
DOOR_TICK_S = 0.25
"""How often held-open timers are looked at: the alarm is at most this late."""
SWITCH_INTERVAL_S = 0.0005


class Gateway:
    """A gateway built from its config; `async with` runs it, `run(stop)` until `stop` is set."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        readers: list[Reader] | None = None,
        alert_poll_s: float = 30.0,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock(config.gateway.timezone)
        self.parts: GatewayParts = build_parts(
            config,
            clock=self.clock,
            readers=readers,
            alert_poll_s=alert_poll_s,
            on_commit=self._committed,
            spawn=self._spawn,
            health=self._birth_health,
        )
        cert, key = config.api.cert, config.api.key
        if cert is None or key is None:
            cert, key = self_signed(config.gateway.data_dir / "tls", config.api.host)
        self.api_certificate = cert
        self.api_server = ApiServer(config.api.listen, cert, key)
        self._view = RunningGatewayView(self.parts, self.status)
        self.web = build_web(self.parts, self._view)
        self.started_at = self.clock.now()
        self.ready = asyncio.Event()
        self.liveness = Liveness(self.clock.monotonic)
        self.liveness.register(EVENT_LOOP, 5.0)
        self.liveness.register(UPLINK, config.mqtt.ack_timeout_s + 60)
        self.liveness.register(STORE_WRITER, 60.0)
        self.watchdog = Watchdog(
            self.liveness,
            probes=[
                uplink_probe(
                    self.liveness, self.parts.uplink, lambda: self.parts.writer.health.head_seq
                )
            ],
            summary=self._summary,
        )
        self._tasks: asyncio.TaskGroup | None = None
        self._loop_tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._failure: Exception | None = None
        self._exit: AsyncExitStack | None = None

    # The parts most callers (tests, benchmarks, the CLI) reach for by name.
    @property
    def doors(self) -> DoorController:
        return self.parts.doors

    @property
    def writer(self) -> Writer:
        return self.parts.writer

    @property
    def uplink(self) -> Uplink:
        return self.parts.uplink

    @property
    def api(self) -> FastAPI:
        return self.web.app

    @property
    def registry_version(self) -> int:
        """The registry version the access index reflects."""
        return self.parts.index_keeper.version

    def status(self) -> GatewayStatus:
        """The gateway now, as `/metrics`, the web UI, the status file and the CLI see it."""
        return snapshot(
            self.parts, self.api_server, running=self.ready.is_set(), started=self.started_at
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set or a loop fails, then shut down cleanly (and raise that)."""
        async with self:
            await self.until_stopped(stop)

    async def until_stopped(self, stop: asyncio.Event) -> None:
        """Wait until `stop` is set or one of the gateway's loops has ended or failed."""
        if self._tasks is None:
            raise RuntimeError("the gateway is not running")
        self._loop_tasks["stop-request"] = self._tasks.create_task(
            _relay(stop, self._stopping), name="stop-request"
        )
        await self._stopping.wait()

    async def __aenter__(self) -> Gateway:
        parts = self.parts
        parts.writer.start()
        await asyncio.to_thread(self.web.accounts.prepare_setup)
        self._raise_recovery_alarm()
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._tasks = await self._start_loops(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._exit = stack
        self.ready.set()
        log.info(
            "gateway %s running with %d reader(s), %d credential(s)",
            self.config.gateway.id,
            len(parts.devices.readers),
            len(parts.doors.index),
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        stack, self._exit = self._exit, None
        try:
            if stack is not None:
                await stack.__aexit__(kind, error, trace)
        finally:
            self.ready.clear()
            log.info("gateway %s stopped", self.config.gateway.id)
        if self._failure is not None and error is None:
            raise self._failure  # the loop that stopped the gateway, after a clean shutdown

    async def _start_loops(self, stack: AsyncExitStack) -> asyncio.TaskGroup:
        """Every loop in one TaskGroup; the exit stack undoes today's order in reverse."""
        parts, web = self.parts, self.web
        stack.callback(self.write_status, running=False)
        stack.callback(parts.source.close)
        stack.callback(web.close)
        stack.callback(parts.terminals.close)
        stack.push_async_callback(asyncio.to_thread, parts.writer.close)
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        loops = self._loop_tasks
        stack.callback(_cancel, loops.values())
        stack.push_async_callback(parts.uplink.close)
        stack.push_async_callback(self._flush_store)
        stack.callback(self.api_server.stop)  # finish the requests in hand; refuse new ones
        stack.callback(web.feed.close)  # live streams end, so the API can finish
        stack.callback(lambda: _cancel(t for n, t in loops.items() if n.startswith("reader:")))
        stack.callback(self.watchdog.stopping)
        for name, work in self._loops().items():
            loops[name] = tasks.create_task(self._supervised(work, name), name=name)
        return tasks

    async def _supervised(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """A long-running loop: if it fails (or ends), the gateway stops cleanly and says why."""
        try:
            await work
        except Exception as exc:
            log.exception("background task %s failed; the gateway stops", name)
            self._failure = self._failure or exc
        else:
            log.error("background task %s ended; the gateway stops", name)
        self._stopping.set()

    def _loops(self) -> dict[str, Coroutine[Any, Any, Any]]:
        """The gateway's long-running loops by task name (coroutines, not yet started)."""
        parts, liveness = self.parts, self.liveness
        loops: dict[str, Coroutine[Any, Any, Any]] = {
            "uplink": parts.uplink.run(),
            "heartbeat": heartbeat(liveness),
            "writer-pings": writer_pings(liveness, parts.writer),
            "watchdog": self.watchdog.run(self.ready),
            "index-keeper": parts.index_keeper.follow(self._swap_index),
            "status": self._keep_status_file(),
            "downlink": parts.downlink.run(),
            "alerts": parts.alerts.run(),
            "door-supervision": self._tick_doors(),
            "api": self.api_server.run(self.web.app),
            "live-feed": self.web.feed.run(),
            "housekeeping": parts.housekeeper.run(),
            "clock-watch": parts.clock_watch.run(),
        }
        for reader in parts.devices.readers.values():
            supervisor = ReaderSupervisor(reader, parts.doors, parts.doors.reader_health)
            loops[f"reader:{reader.name}"] = supervisor.run()
        return loops

    def _raise_recovery_alarm(self) -> None:
        recovery = self.parts.recovery
        if recovery is None:
            return
        self.parts.housekeeper.raise_alarm(
            "store_recovered",
            f"the store was damaged and rebuilt from what was readable; the damaged file"
            f" is kept as {recovery.damaged.name}; unreadable:"
            f" {', '.join(recovery.unreadable) or 'nothing'}; seq jumps to"
            f" {recovery.head_seq + 1}",
        )

    async def _flush_store(self) -> None:
        writer = self.parts.writer
        try:
            await asyncio.to_thread(writer.flush)
        except TimeoutError:
            log.error("store writes are failing; %d record(s) still queued", writer.pending())

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """A short task a command started: owned by the TaskGroup, its failure only logged."""
        try:
            if self._tasks is None:
                raise RuntimeError("the gateway is not running")
            self._tasks.create_task(_logged_failure(work, name), name=name)
        except RuntimeError as exc:  # not yet running, or already stopping
            work.close()
            log.warning("background task %s not started: %s", name, exc)

    def _committed(self, head: int) -> None:
        """Called on the writer's thread after each commit."""
        self.parts.uplink.notify_threadsafe(head)
        self.web.feed.committed(head)

    async def _birth_health(self) -> StateHealth:
        return await essentials(self._view)

    def _summary(self) -> str:
        """One line for `systemctl status`."""
        link = self.parts.uplink.link
        connected = "connected" if link and link.connected else "broker unreachable"
        doors, writer = self.parts.doors, self.parts.writer
        return (
            f"{doors.counters.decisions.total()} decisions, {connected}, {writer.pending()} queued"
        )

    async def _tick_doors(self) -> None:
        while True:
            await asyncio.sleep(DOOR_TICK_S)
            self.parts.doors.tick()

    def _swap_index(self, index: AccessIndex) -> None:
        self.parts.doors.index = index

    async def _keep_status_file(self) -> None:
        while True:
            await asyncio.to_thread(self.write_status, running=True)
            await asyncio.sleep(STATUS_EVERY_S)

    def write_status(self, *, running: bool) -> None:
        """Write the status file now (the running gateway also rewrites it every second)."""
        status = replace(self.status(), running=running)
        write_status_file(self.config.gateway.status_file, status)


async def _logged_failure(work: Coroutine[Any, Any, Any], name: str) -> None:
    """Run a short task; a failure is logged with its traceback and goes no further."""
    try:
        await work
    except Exception:
        log.exception("background task %s failed", name)


async def _relay(stop: asyncio.Event, stopping: asyncio.Event) -> None:
    await stop.wait()
    stopping.set()


def _cancel(tasks: Iterable[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()


async def run_gateway(config: Config, stop: asyncio.Event) -> None:
    """Run a gateway as a process's main job until `stop` is set or SIGTERM/SIGINT arrives.

    The GIL is handed around every 0.5 ms instead of 5 ms: door decisions run on
    the event loop thread while the store writer and an index rebuild run in
    others, and the default interval could hold a decision back for milliseconds.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await Gateway(config).run(stop)
