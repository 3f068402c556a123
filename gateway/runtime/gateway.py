"""Build the gateway from its config and run it: the one place that wires parts together.

One asyncio loop runs readers, the decision path and the uplink; the store
writer and the outbox reader have threads of their own, paho its network
thread. Stopping (SIGTERM) closes readers first, commits what was accepted,
says goodbye on MQTT with a retained offline state, and then closes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.api.metrics import essentials
from gateway.api.server import ApiServer, self_signed
from gateway.clock import Clock, SystemClock
from gateway.config import Config, DoorSection, OsdpDevice, SamDevice
from gateway.devices.line.reader import LineReader
from gateway.devices.osdp.reader import OsdpBus, OsdpDeviceConfig, OsdpReader, OutputMode
from gateway.devices.protocols import CardRead, Lock, Reader, ReaderError
from gateway.devices.sam.reader import SamCardReader
from gateway.devices.sim import SimLock
from gateway.domain.signing import VerifyKey
from gateway.domain.voucher import VoucherError
from gateway.domain.voucher import verify as verify_voucher
from gateway.doors.access import AccessIndex, Decision, DecisionReason, DoorPolicy
from gateway.doors.controller import DoorController, DoorSetup, VoucherOutcome
from gateway.doors.enrol_by_tap import CardCaptures
from gateway.doors.index_keeper import IndexKeeper
from gateway.doors.supervision import DoorSupervisor, FailMode
from gateway.ops.clock_watch import ClockWatch
from gateway.ops.housekeeping import Housekeeper
from gateway.ops.liveness import EVENT_LOOP, STORE_WRITER, UPLINK, Liveness
from gateway.ops.watchdog import Watchdog, heartbeat, uplink_probe, writer_pings
from gateway.residence.alerts import AlertEngine
from gateway.residence.intake import RecordIntake, TerminalRegistry
from gateway.residence.platform_commands import GatewayHooks, PlatformCommands, TrustedKeys
from gateway.residence.runtime_settings import RuntimeSettings
from gateway.runtime.status_snapshot import gateway_status
from gateway.runtime.web import build_web
from gateway.store import maintenance, retention
from gateway.store.crypto import KeyRing
from gateway.store.db import connect
from gateway.store.migrations import migrate
from gateway.store.writer import Writer
from gateway.sync.downlink import Downlink
from gateway.sync.link import BrokerSettings, MqttLink, Subscriptions, TlsSettings, Will
from gateway.sync.uplink import OutboxSource, Uplink, UplinkSettings

log = logging.getLogger(__name__)

STATUS_EVERY_S = 1.0
DOOR_TICK_S = 0.25
"""How often held-open timers are looked at: the alarm is at most this late."""
READER_RETRY_MAX_S = 30.0


def broker_settings(config: Config) -> BrokerSettings:
    mqtt = config.mqtt
    tls = None
    if mqtt.url.startswith("mqtts://"):
        tls = TlsSettings(mqtt.ca, mqtt.cert, mqtt.key)
    password = None
    if mqtt.password_file is not None:
        password = mqtt.password_file.read_text(encoding="utf-8").strip()
    return BrokerSettings.from_url(
        mqtt.url,
        mqtt.client_id or config.gateway.id,
        tls=tls,
        protocol=mqtt.protocol,
        keepalive_s=mqtt.keepalive_s,
        username=mqtt.username,
        password=password,
        reconnect_max_s=mqtt.reconnect_max_s,
    )


def check_store(database: Path) -> maintenance.Recovery | None:
    """`PRAGMA quick_check` at start; a damaged store is kept aside and rebuilt."""
    if not database.exists():
        return None
    problems = maintenance.quick_check(database)
    if not problems:
        return None
    log.error("store %s failed its integrity check: %s", database, problems[:5])
    return maintenance.recover(database)


def open_store(config: Config, trusted: TrustedKeys | None = None) -> KeyRing:
    """Create the data dir, key file and schema as needed; return the key ring.

    Also loads the platform keys `keys.rotate` changed into `trusted`. Pages of
    an unfinished snapshot stay staged (not in force), so the platform resumes.
    """
    config.gateway.data_dir.mkdir(parents=True, exist_ok=True)
    keys = KeyRing.load_or_create(config.gateway.keys)
    conn = connect(config.gateway.database)
    try:
        if retention.ensure_incremental_vacuum(conn):
            log.info("store %s switched to incremental vacuum", config.gateway.database)
        before = migrate(conn)
        if before == 0:
            log.info("created store %s", config.gateway.database)
        if trusted is not None:
            trusted.load(conn)
    finally:
        conn.close()
    return keys


@dataclass
class ReaderHealth:
    online: bool = False
    error: str | None = None


class Gateway:
    """A running gateway: readers, decisions, the store writer and the uplink."""

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
        self.trusted = TrustedKeys([VerifyKey.load(path) for path in config.platform.keys])
        self.recovery = check_store(config.gateway.database)
        self.keys = open_store(config, self.trusted)
        self.settings = RuntimeSettings(config.gateway.data_dir / "settings.json")
        door_sections = config.all_doors()
        self.policies = {
            door.name: DoorPolicy(door.name, frozenset(door.units) if door.units else None)
            for door in door_sections
        }
        self.osdp_lines: list[OsdpBus] = []
        self.readers: dict[str, Reader] = {
            reader.name: reader for reader in (readers if readers is not None else self._readers())
        }
        self.locks: dict[str, Lock] = {door.name: self._lock(door) for door in door_sections}
        self.reader_health = {name: ReaderHealth() for name in self.readers}
        self.index_keeper = IndexKeeper(config.gateway.database, self.policies)
        self.captures = CardCaptures(self.clock)
        self.uplink: Uplink | None = None
        self.writer = Writer(
            config.gateway.database,
            window_s=config.gateway.commit_window_ms / 1000,
            on_commit=self._on_commit,
        )
        self.doors = DoorController(
            self.index_keeper.index,
            doors=self._door_setups(),
            readers=self.readers,
            keys=self.keys,
            clock=self.clock,
            record=self.writer.append,
            unrecorded=self.writer.pending,
            observe=self._observe_decision,
            vouchers=self._check_voucher,
            capture=self.captures.offer,
            supervisors={
                door.name: DoorSupervisor(door.name, door.held_open_s, FailMode(door.fail_mode))
                for door in door_sections
            },
        )
        self.alerts = AlertEngine(
            writer=self.writer,
            keys=self.keys,
            clock=self.clock,
            building=config.building,
            local_districts=lambda: self.settings.local_districts(config.residence.local_districts),
            check_at=config.residence.check_at,
            poll_s=alert_poll_s,
        )
        self.commands = PlatformCommands(
            writer=self.writer,
            keys=self.keys,
            clock=self.clock,
            trusted=self.trusted,
            settings=self.settings,
            hooks=GatewayHooks(
                unlock=self._remote_unlock,
                doors=lambda: list(self.locks),
                resync=self._resync,
                settings_changed=self._settings_changed,
                person_changed=self._person_changed,
            ),
            record=self.writer.append,
        )
        self.downlink = Downlink(
            config.gateway.id,
            keys=self.trusted.current,
            handler=self.commands,
            clock=self.clock,
            session=lambda: self.uplink.session if self.uplink else None,
        )
        self.terminals = TerminalRegistry(
            config.gateway.database, writer=self.writer, clock=self.clock
        )
        self.intake = RecordIntake(writer=self.writer, keys=self.keys, clock=self.clock)
        self.web = build_web(self, self.captures)
        self.api, self.accounts = self.web.app, self.web.accounts
        cert, key = config.api.cert, config.api.key
        if cert is None or key is None:
            cert, key = self_signed(config.gateway.data_dir / "tls", config.api.host)
        self.api_server = ApiServer(self.api, config.api.listen, cert, key)
        self.api_certificate = cert
        self.housekeeper = Housekeeper(
            writer=self.writer,
            database=config.gateway.database,
            clock=self.clock,
            budget_bytes=int(config.storage.budget_mb * 1024 * 1024),
            history=timedelta(days=config.storage.history_days),
            every_s=config.storage.check_every_s,
            personal_grace=timedelta(hours=config.storage.personal_grace_hours),
        )
        self.clock_watch = ClockWatch(self.clock, self.housekeeper.set_alarm)
        self.source = OutboxSource(config.gateway.database)
        self.started_at = self.clock.now()
        self.ready = asyncio.Event()
        self._background: set[asyncio.Future[Any]] = set()
        self.watchdog: Watchdog | None = None

    def _door_setups(self) -> dict[str, DoorSetup]:
        return {
            door.name: DoorSetup(
                self.locks[door.name], self.settings.unlock_seconds(door.name, door.unlock_seconds)
            )
            for door in self.config.all_doors()
        }

    def _observe_decision(self, read: CardRead, decision: Decision) -> None:
        """Feed the residence rules: presence of people let in, use of cancelled keys."""
        entry = decision.entry
        if entry is None:
            return
        if decision.allowed:
            address = read.card.address if read.card is not None else None
            self.alerts.person_seen(entry.person_id, address)
        elif decision.reason is DecisionReason.REVOKED:
            self.alerts.cancelled_credential_used(
                entry.person_id, read.door, decision.status_detail or "revoked"
            )

    def _check_voucher(self, text: str, today: date) -> VoucherOutcome:
        """A voucher QR shown at a door: verified offline with the platform's keys."""
        try:
            voucher = verify_voucher(text, self.trusted.current(), today)
        except VoucherError as exc:
            return VoucherOutcome(None, exc.reason.value)
        return VoucherOutcome(str(voucher.voucher_id))

    def _remote_unlock(self, door: str, seconds: float) -> bool:
        lock = self.locks.get(door)
        if lock is None:
            return False
        lock.unlock(seconds)
        self.doors.released(door, seconds)
        return True

    def _resync(self) -> None:
        if self.uplink is not None:
            self.uplink.rebirth()

    def _settings_changed(self) -> None:
        self.doors.set_doors(self._door_setups())
        self._spawn(self.alerts.sweep(), "alerts-after-settings")

    def _person_changed(self, person_id: str) -> None:
        self._spawn(self.alerts.evaluate(person_id), "alerts-after-status")

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_task_failure)

    def _readers(self) -> list[Reader]:
        """The one place that turns device config into drivers (OSDP lines grouped by path)."""
        readers: list[Reader] = []
        lines: dict[Path, list[OsdpDeviceConfig]] = {}
        bauds: dict[Path, int] = {}
        for index, device in enumerate(self.config.devices):
            name = self.config.reader_name(index)
            if isinstance(device, SamDevice):
                readers.append(SamCardReader(name, device.door, device.path, device.baud))
            elif isinstance(device, OsdpDevice):
                bauds[device.path] = device.baud
                lines.setdefault(device.path, []).append(
                    OsdpDeviceConfig(
                        name,
                        device.door,
                        device.address,
                        device.key_file,
                        install=device.install,
                        output_no=device.output,
                        output_mode=OutputMode(device.output_mode),
                        led_number=device.led,
                        contact_input=device.contact_input,
                        exit_input=device.exit_input,
                        contact_open_level=device.contact_open_level,
                    )
                )
            else:
                readers.append(
                    LineReader(name, device.door, device.path, device.credential, baud=device.baud)
                )
        self.osdp_lines = [OsdpBus(path, bauds[path], devices) for path, devices in lines.items()]
        for line in self.osdp_lines:
            readers.extend(line.readers)
        return readers

    def _lock(self, door: DoorSection) -> Lock:
        """The door's strike: its OSDP reader's relay, or a simulated lock."""
        if door.lock != "sim":
            for reader in self.readers.values():
                if isinstance(reader, OsdpReader) and reader.door == door.name:
                    return reader
        return SimLock(door.name)

    @property
    def registry_version(self) -> int:
        """The registry version the access index reflects."""
        return self.index_keeper.version

    def _on_commit(self, head: int) -> None:
        if self.uplink is not None:
            self.uplink.notify_threadsafe(head)
        self.web.feed.committed(head)

    def _link(self, will: Callable[[], Will]) -> MqttLink:
        return MqttLink(
            broker_settings(self.config),
            will,
            inflight_window=self.config.mqtt.inflight_window,
            subscriptions=Subscriptions((self.downlink.topic_filter,), self.downlink.received),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then shut down cleanly."""
        self.writer.start()
        await asyncio.to_thread(self.accounts.prepare_setup)
        if self.recovery is not None:
            self.housekeeper.raise_alarm(
                "store_recovered",
                f"the store was damaged and rebuilt from what was readable; the damaged file"
                f" is kept as {self.recovery.damaged.name}; unreadable:"
                f" {', '.join(self.recovery.unreadable) or 'nothing'}; seq jumps to"
                f" {self.recovery.head_seq + 1}",
            )
        self.uplink = Uplink(
            self.config.gateway.id,
            link_factory=self._link,
            source=self.source,
            writer=self.writer,
            clock=self.clock,
            settings=UplinkSettings(
                window=self.config.mqtt.inflight_window,
                batch_events=self.config.mqtt.batch_events,
                ack_timeout_s=self.config.mqtt.ack_timeout_s,
            ),
            software=f"rentgate/{__version__}",
            health=lambda: essentials(self),
        )
        liveness = Liveness(self.clock.monotonic)
        liveness.register(EVENT_LOOP, 5.0)
        liveness.register(UPLINK, self.config.mqtt.ack_timeout_s + 60)
        liveness.register(STORE_WRITER, 60.0)
        uplink = self.uplink
        self.watchdog = Watchdog(
            liveness,
            probes=[uplink_probe(liveness, uplink, lambda: self.writer.health.head_seq)],
            summary=self._summary,
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            tasks.append(asyncio.create_task(self.uplink.run(), name="uplink"))
            tasks.append(asyncio.create_task(heartbeat(liveness), name="heartbeat"))
            tasks.append(
                asyncio.create_task(writer_pings(liveness, self.writer), name="writer-pings")
            )
            tasks.append(asyncio.create_task(self.watchdog.run(self.ready), name="watchdog"))
            tasks.append(
                asyncio.create_task(self.index_keeper.follow(self._swap_index), name="index-keeper")
            )
            tasks.append(asyncio.create_task(self._write_status(), name="status"))
            tasks.append(asyncio.create_task(self.downlink.run(), name="downlink"))
            tasks.append(asyncio.create_task(self.alerts.run(), name="alerts"))
            tasks.append(asyncio.create_task(self._supervise_doors(), name="door-supervision"))
            tasks.append(asyncio.create_task(self.api_server.run(), name="api"))
            tasks.append(asyncio.create_task(self.web.feed.run(), name="live-feed"))
            tasks.append(asyncio.create_task(self.housekeeper.run(), name="housekeeping"))
            tasks.append(asyncio.create_task(self.clock_watch.run(), name="clock-watch"))
            for reader in self.readers.values():
                tasks.append(
                    asyncio.create_task(self._supervise(reader), name=f"reader:{reader.name}")
                )
            self.ready.set()
            log.info(
                "gateway %s running with %d reader(s), %d credential(s)",
                self.config.gateway.id,
                len(self.readers),
                len(self.doors.index),
            )
            stop_wait = asyncio.create_task(stop.wait(), name="stop")
            await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            stop_wait.cancel()
        finally:
            await self._shutdown(tasks)

    def _summary(self) -> str:
        """One line for `systemctl status`."""
        link = self.uplink.link if self.uplink else None
        connected = "connected" if link and link.connected else "broker unreachable"
        return (
            f"{self.doors.counters.decisions.total()} decisions, {connected},"
            f" {self.writer.pending()} queued"
        )

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        if self.watchdog is not None:
            self.watchdog.stopping()
        for task in tasks:
            if task.get_name().startswith("reader:"):
                task.cancel()
        self.web.feed.close()  # live event streams end, so the API can finish its requests
        self.api_server.stop()  # finish the requests in hand; new ones are refused
        try:
            await asyncio.to_thread(self.writer.flush)
        except TimeoutError:
            log.error("store writes are failing; %d record(s) still queued", self.writer.pending())
        if self.uplink is not None:
            await self.uplink.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self.writer.close)
        self.terminals.close()
        self.web.close()
        self.source.close()
        self._dump_status(running=False)
        log.info("gateway %s stopped", self.config.gateway.id)

    async def _supervise(self, reader: Reader) -> None:
        health = self.reader_health[reader.name]
        attempt = 0
        while True:
            started = time.monotonic()
            # An OSDP reader reports its own online state (its line can be open while the
            # reader behind it is silent or has the wrong key); the others are online once open.
            opened = (
                (lambda: None)
                if isinstance(reader, OsdpReader)
                else (lambda: self._reader_state(reader, online=True, error=None))
            )
            try:
                await reader.run(self.doors, opened)
                error = "reader stopped"
            except ReaderError as exc:
                error = str(exc)
            if time.monotonic() - started > READER_RETRY_MAX_S:
                attempt = 0
            if health.online or health.error != error:
                log.warning("reader %s offline: %s", reader.name, error)
            self._reader_state(reader, online=False, error=error)
            await asyncio.sleep(min(READER_RETRY_MAX_S, 0.5 * 2**attempt))
            attempt = min(attempt + 1, 10)

    def _reader_state(self, reader: Reader, *, online: bool, error: str | None) -> None:
        health = self.reader_health[reader.name]
        if health.online == online and health.error == error:
            return
        health.online, health.error = online, error
        self.doors.device_status(reader.name, reader.door, online, error)

    async def _supervise_doors(self) -> None:
        while True:
            await asyncio.sleep(DOOR_TICK_S)
            self.doors.tick()

    def _swap_index(self, index: AccessIndex) -> None:
        self.doors.index = index

    async def _write_status(self) -> None:
        while True:
            await asyncio.to_thread(self._dump_status, running=True)
            await asyncio.sleep(STATUS_EVERY_S)

    def status(self, *, running: bool) -> dict[str, Any]:
        """What `rentgate status` shows besides the store's own numbers."""
        return gateway_status(self, running=running)

    def _dump_status(self, *, running: bool) -> None:
        path = self.config.gateway.status_file
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.status(running=running), ensure_ascii=False, indent=2))
        os.replace(temporary, path)


def _log_task_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed: %s", task.exception())


SWITCH_INTERVAL_S = 0.0005


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
