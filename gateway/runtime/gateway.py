"""The door core: readers, decisions, the store writer, uplink and downlink, in one process.

One asyncio loop runs readers, the decision path and the uplink; the store
writer and the outbox reader have threads of their own, paho its network
thread. Nothing that listens on the network runs here: the web UI, REST API
and terminal endpoint are the web process (`gateway.runtime.web_process`),
started as a child (`rentgate run`), by its own systemd unit, or in this
process for tests; it reaches the core only through the store and the core's
local socket (`gateway.runtime.core_server`). `async with Gateway(config)`
starts everything; leaving it stops in this order: the web side, readers,
what was accepted is committed, a goodbye on MQTT with a retained offline
state, then the loops, then the store. A background loop that fails (or ends)
is logged, counted and started again with backoff: nothing it meets may stop
a door; a short task a command started is only logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.devices.protocols import Reader
from gateway.doors.access import AccessIndex
from gateway.doors.controller import DoorController
from gateway.doors.readers import ReaderSupervisor
from gateway.ops.liveness import EVENT_LOOP, STORE_WRITER, UPLINK, Liveness
from gateway.ops.local_socket import SOCKET_NAME
from gateway.ops.readings import essentials
from gateway.ops.status import GatewayStatus, write_status_file
from gateway.ops.watchdog import Watchdog, heartbeat, uplink_probe, writer_pings
from gateway.runtime.core_operations import WebReport, core_operations
from gateway.runtime.core_server import CoreServer
from gateway.runtime.core_view import RunningGatewayView
from gateway.runtime.parts import GatewayParts, build_parts
from gateway.runtime.status_snapshot import snapshot
from gateway.runtime.web_child import WebChild, web_command
from gateway.store.writer import Writer
from gateway.sync.uplink import Uplink
from gateway.sync.wire import StateHealth

if TYPE_CHECKING:
    from fastapi import FastAPI

    from gateway.api.server import ApiServer
    from gateway.runtime.web_process import WebGateway

log = logging.getLogger(__name__)

STATUS_EVERY_S = 1.0
DOOR_TICK_S = 0.25
"""How often held-open timers are looked at: the alarm is at most this late."""
SWITCH_INTERVAL_S = 0.0005
OUTBOX_POLL_S = 1.0
LOOP_RESTART_FIRST_S = 0.5
LOOP_RESTART_MAX_S = 30.0
LOOP_STEADY_S = 60.0
"""A loop that ran this long before failing is restarted quickly again."""

WebMode = Literal["child", "inline", "none"]
"""Where the web side runs: `rentgate web` as a child process, in this process (tests), or
elsewhere (its own systemd unit)."""


class Gateway:
    """A gateway built from its config; `async with` runs it, `run(stop)` until `stop` is set."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        readers: list[Reader] | None = None,
        alert_poll_s: float = 30.0,
        web: WebMode = "inline",
        config_path: Path | None = None,
        log_settings: tuple[str, str] = ("json", "INFO"),
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
        self.web_mode = web
        self.web_report = WebReport()
        self._view = RunningGatewayView(self.parts, self.status)
        self.core_server = CoreServer(
            config.gateway.data_dir / SOCKET_NAME,
            core_operations(
                status=self.status,
                captures=self.parts.captures,
                alerts=self.parts.alerts,
                outbox_changed=self._outbox_changed,
                web=self.web_report,
            ),
        )
        self.web_child: WebChild | None = None
        if web == "child":
            if config_path is None:
                raise ValueError("a web child needs the config file's path")
            self.web_child = WebChild(web_command(config_path, *log_settings))
        self.inline_web: WebGateway | None = None
        if web == "inline":  # imported here: the door core alone never loads the web stack
            from gateway.runtime.web_process import WebGateway

            self.inline_web = WebGateway(config, clock=self.clock)
        self.loop_failures: Counter[str] = Counter()
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
        """The web side's app, when it runs in this process (`web="inline"`)."""
        return self._inline().app

    @property
    def api_server(self) -> ApiServer:
        return self._inline().api_server

    @property
    def api_certificate(self) -> Path:
        return self._inline().api_certificate

    def _inline(self) -> WebGateway:
        if self.inline_web is None:
            raise RuntimeError(f"the web side runs as {self.web_mode!r}, not in this process")
        return self.inline_web

    @property
    def registry_version(self) -> int:
        """The registry version the access index reflects."""
        return self.parts.index_keeper.version

    def status(self) -> GatewayStatus:
        """The gateway now, as `/metrics`, the web UI, the status file and the CLI see it."""
        return snapshot(
            self.parts,
            self.web_report.api,
            running=self.ready.is_set(),
            started=self.started_at,
            loop_failures=self.loop_failures,
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
        self._raise_recovery_alarm()
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._tasks = await self._start_loops(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._exit = stack
        _spare_the_index_from_full_collections()
        self.ready.set()
        if self.inline_web is not None:
            try:
                await stack.enter_async_context(self.inline_web)
            except BaseException:
                await self.__aexit__(None, None, None)
                raise
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

    async def _start_loops(self, stack: AsyncExitStack) -> asyncio.TaskGroup:
        """Every loop in one TaskGroup; the exit stack undoes today's order in reverse."""
        parts = self.parts
        stack.callback(self.write_status, running=False)
        stack.callback(parts.source.close)
        stack.push_async_callback(asyncio.to_thread, parts.writer.close)
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        loops = self._loop_tasks
        stack.callback(_cancel, loops.values())
        stack.push_async_callback(parts.uplink.close)
        stack.push_async_callback(self._flush_store)
        stack.callback(lambda: _cancel(t for n, t in loops.items() if n.startswith("reader:")))
        stack.callback(self.watchdog.stopping)
        for name, work in self._loops().items():
            loops[name] = tasks.create_task(self._supervised(work, name), name=name)
        return tasks

    async def _supervised(self, work: Callable[[], Coroutine[Any, Any, Any]], name: str) -> None:
        """A long-running loop, contained: if it fails or ends it is counted, logged and
        started again with backoff. Nothing a loop meets (a bad message, a full disk, a
        bug) may stop the doors; a loop that keeps failing shows in the status and
        `/metrics`, and the watchdog decides whether the process is still alive."""
        delay = LOOP_RESTART_FIRST_S
        while True:
            started = time.monotonic()
            try:
                await work()
            except Exception:
                log.exception("background task %s failed; starting it again in %.1f s", name, delay)
            else:
                log.error("background task %s ended; starting it again in %.1f s", name, delay)
            self.loop_failures[name] += 1
            if time.monotonic() - started > LOOP_STEADY_S:
                delay = LOOP_RESTART_FIRST_S
            await asyncio.sleep(delay)
            delay = min(delay * 2, LOOP_RESTART_MAX_S)

    def _loops(self) -> dict[str, Callable[[], Coroutine[Any, Any, Any]]]:
        """The gateway's long-running loops by task name (each a way to start it afresh)."""
        parts, liveness = self.parts, self.liveness
        loops: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
            "uplink": parts.uplink.run,
            "heartbeat": lambda: heartbeat(liveness),
            "writer-pings": lambda: writer_pings(liveness, parts.writer),
            "watchdog": lambda: self.watchdog.run(self.ready),
            "index-keeper": lambda: parts.index_keeper.follow(self._swap_index),
            "status": self._keep_status_file,
            "downlink": parts.downlink.run,
            "alerts": parts.alerts.run,
            "door-supervision": self._tick_doors,
            "core-socket": self.core_server.run,
            "outbox-poll": self._poll_outbox,
            "housekeeping": parts.housekeeper.run,
            "clock-watch": parts.clock_watch.run,
        }
        if self.web_child is not None:
            loops["web-child"] = self.web_child.run
        for reader in parts.devices.readers.values():
            supervisor = ReaderSupervisor(reader, parts.doors, parts.doors.reader_health)
            loops[f"reader:{reader.name}"] = supervisor.run
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

    def _outbox_changed(self) -> None:
        """Another process (the web, `rentgate enroll`) committed events: send them now."""
        self.parts.uplink.notify_threadsafe(0)

    async def _poll_outbox(self) -> None:
        """Events other processes commit are sent within a second even if nobody says so."""
        while True:
            await asyncio.sleep(OUTBOX_POLL_S)
            self._outbox_changed()

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
        _spare_the_index_from_full_collections()

    async def _keep_status_file(self) -> None:
        while True:
            await asyncio.to_thread(self.write_status, running=True)
            await asyncio.sleep(STATUS_EVERY_S)

    def write_status(self, *, running: bool) -> None:
        """Write the status file now (the running gateway also rewrites it every second)."""
        status = replace(self.status(), running=running)
        write_status_file(self.config.gateway.status_file, status)


def _spare_the_index_from_full_collections() -> None:
    """Move every object alive now (the access index above all) out of the garbage
    collector's reach: a full collection then scans only what came since, not every
    credential. Measured under a command flood (bench/door_under_attack.py): a full
    collection held every thread 98 ms before, 1.2 ms after. Frozen objects are still
    freed by reference counting; only cycles among them would stay."""
    gc.freeze()


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


async def run_gateway(
    config: Config,
    stop: asyncio.Event,
    *,
    config_path: Path | None = None,
    log_settings: tuple[str, str] = ("json", "INFO"),
    web: WebMode | None = None,
) -> None:
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
    if web is None:
        web = "child" if config_path is not None else "inline"
    await Gateway(config, web=web, config_path=config_path, log_settings=log_settings).run(stop)
