"""Building the gateway's parts from its Config: store, doors, residence rules, sync, upkeep.

Everything here is built before anything runs, in dependency order, and nothing
is handed a half-built gateway: what the parts need of the running gateway
(start a background task, say what its health is, hear about commits) comes
in as callables that are only called once it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gateway import __version__
from gateway.clock import Clock
from gateway.config import Config
from gateway.devices.protocols import CardRead, Reader
from gateway.domain.sealed_box import SealingKey
from gateway.domain.signing import VerifyKey
from gateway.doors.access import Decision, DecisionReason, DoorPolicy
from gateway.doors.controller import DoorController, DoorSetup
from gateway.doors.enrol_by_tap import CardCaptures
from gateway.doors.index_keeper import IndexKeeper
from gateway.doors.supervision import DoorSupervisor, FailMode
from gateway.doors.vouchers import DoorVouchers
from gateway.ops.clock_watch import ClockWatch
from gateway.ops.housekeeping import Housekeeper
from gateway.residence.alerts import AlertEngine
from gateway.residence.intake import RecordIntake
from gateway.residence.platform_commands import GatewayHooks, PlatformCommands, TrustedKeys
from gateway.residence.runtime_settings import RuntimeSettings
from gateway.runtime.devices import DeviceSet, build_devices
from gateway.store import maintenance, users
from gateway.store.crypto import KeyRing
from gateway.store.opening import check_store
from gateway.store.opening import open_store as open_store_file
from gateway.store.writer import Writer
from gateway.sync.downlink import Downlink
from gateway.sync.link import (
    BrokerSettings,
    MqttLink,
    Session,
    Subscriptions,
    TlsSettings,
    Will,
)
from gateway.sync.outbox_source import OutboxSource
from gateway.sync.uplink import Uplink, UplinkSettings
from gateway.sync.wire import StateHealth

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any], str], None]
"""Start a named background task owned by the running gateway."""


def broker_settings(config: Config) -> list[BrokerSettings]:
    """One `BrokerSettings` per configured broker URL, in order; every node gets the same
    `[mqtt]` TLS files, credentials and protocol (a cluster's nodes share them)."""
    mqtt = config.mqtt
    password = None
    if mqtt.password_file is not None:
        password = mqtt.password_file.read_text(encoding="utf-8").strip()
    return [
        BrokerSettings.from_url(
            url,
            mqtt.client_id or config.gateway.id,
            tls=TlsSettings(mqtt.ca, mqtt.cert, mqtt.key) if url.startswith("mqtts://") else None,
            protocol=mqtt.protocol,
            keepalive_s=mqtt.keepalive_s,
            username=mqtt.username,
            password=password,
            reconnect_max_s=mqtt.reconnect_max_s,
        )
        for url in mqtt.brokers
    ]


def open_store(config: Config, trusted: TrustedKeys | None = None) -> KeyRing:
    """The configured store, created or upgraded; loads rotated platform keys into `trusted`."""
    return open_store_file(
        config.gateway.database,
        config.gateway.keys,
        then=trusted.load if trusted is not None else None,
        shared=config.gateway.store_shared_with_group,
    )


@dataclass
class GatewayParts:
    """Every part of a gateway, built and wired, none of them running yet."""

    config: Config
    clock: Clock
    recovery: maintenance.Recovery | None
    keys: KeyRing
    trusted: TrustedKeys
    settings: RuntimeSettings
    devices: DeviceSet
    index_keeper: IndexKeeper
    captures: CardCaptures
    writer: Writer
    doors: DoorController
    alerts: AlertEngine
    commands: PlatformCommands
    actions: GatewayActions
    """What signed commands may do to the running gateway (unlock, settings changed…)."""
    downlink: Downlink
    uplink: Uplink
    source: OutboxSource
    housekeeper: Housekeeper
    clock_watch: ClockWatch


def build_parts(
    config: Config,
    *,
    clock: Clock,
    readers: list[Reader] | None,
    alert_poll_s: float,
    on_commit: Callable[[int], None],
    spawn: Spawn,
    health: Callable[[], Awaitable[StateHealth]],
) -> GatewayParts:
    """Build the gateway's parts; the callables are called only once the gateway runs."""
    sealing_key(config)  # a bad key file stops the start before the store is touched
    trusted, recovery, keys = _store_at_start(config)
    settings = RuntimeSettings(config.gateway.data_dir / "settings.json")
    devices = build_devices(config, readers)
    window_s = config.gateway.commit_window_ms / 1000
    writer = Writer(config.gateway.database, window_s=window_s, on_commit=on_commit)
    alerts = _alert_engine(
        config, clock=clock, keys=keys, settings=settings, writer=writer, poll_s=alert_poll_s
    )
    index_keeper = IndexKeeper(config.gateway.database, door_policies(config))
    captures = CardCaptures(clock, record=writer.append, audit=_audit_from_doors(writer, clock))
    doors = DoorController(
        index_keeper.index,
        doors=door_setups(config, devices, settings),
        readers=devices.readers,
        keys=keys,
        clock=clock,
        record=writer.append,
        unrecorded=writer.pending,
        observe=DecisionObserver(alerts),
        vouchers=DoorVouchers(trusted.current).check,
        capture=captures.offer,
        supervisors=door_supervisors(config),
    )
    actions = GatewayActions(
        config,
        devices=devices,
        doors=doors,
        alerts=alerts,
        settings=settings,
        resync=lambda: uplink.rebirth(),  # noqa: PLW0108 (the uplink is built below)
        replay=lambda from_seq: uplink.replay(from_seq),  # noqa: PLW0108 (built below)
        spawn=spawn,
    )
    commands = _platform_commands(
        keys, trusted=trusted, settings=settings, writer=writer, clock=clock, actions=actions
    )
    downlink = _downlink(
        config,
        clock,
        trusted,
        commands,
        lambda: uplink.session,
        on_ack=lambda through_seq: uplink.acks.offer(through_seq),  # noqa: PLW0108
    )
    source = OutboxSource(config.gateway.database)
    uplink = _uplink(
        config, clock=clock, writer=writer, source=source, health=health, downlink=downlink
    )
    housekeeper = _housekeeper(config, clock, writer)
    return GatewayParts(
        config=config,
        clock=clock,
        recovery=recovery,
        keys=keys,
        trusted=trusted,
        settings=settings,
        devices=devices,
        index_keeper=index_keeper,
        captures=captures,
        writer=writer,
        doors=doors,
        alerts=alerts,
        commands=commands,
        actions=actions,
        downlink=downlink,
        uplink=uplink,
        source=source,
        housekeeper=housekeeper,
        clock_watch=ClockWatch(clock, housekeeper.set_alarm),
    )


def _audit_from_doors(writer: Writer, clock: Clock) -> Callable[[str, str, str, str], None]:
    """Audit entries the door side makes (a tap taken by enrol by tap), through the writer."""

    def audit(actor: str, action: str, subject: str, detail: str) -> None:
        at = clock.now().isoformat()
        done = writer.submit(
            lambda conn: users.append_audit(
                conn,
                at=at,
                user_id=None,
                actor=actor,
                action=action,
                subject=subject,
                detail=detail,
            )
        )
        done.add_done_callback(_log_failure)

    return audit


def _log_failure(done: Future[int]) -> None:
    error = done.exception()
    if error is not None:
        log.error("an audit entry from the doors was not stored: %s", error)


def _store_at_start(config: Config) -> tuple[TrustedKeys, maintenance.Recovery | None, KeyRing]:
    """Check (and if need be rebuild) the store, bring it up to date, load the keys it holds."""
    trusted = TrustedKeys([VerifyKey.load(path) for path in config.platform.keys])
    recovery = check_store(config.gateway.database)
    return trusted, recovery, open_store(config, trusted)


def record_intake(
    config: Config, sealing: SealingKey | None, *, writer: Writer, keys: KeyRing, clock: Clock
) -> RecordIntake:
    """Terminal records in (the web process's): sealed to the platform's key, or refused."""
    return RecordIntake(
        writer=writer, keys=keys, clock=clock, gateway_id=config.gateway.id, sealing=sealing
    )


def sealing_key(config: Config) -> SealingKey | None:
    """The platform's encryption key that captures are sealed to; None refuses captures.

    The gateway still starts without one: doors and the uplink need no key, and a
    terminal told `no_encryption_key` keeps its captures until the key is set.
    """
    path = config.platform.encryption_key
    if path is None:
        log.warning(
            "no [platform] encryption_key: terminal captures will be refused until it is set"
        )
        return None
    key = SealingKey.load(path)
    log.info("personal data is sealed to the platform's encryption key %s", key.kid)
    return key


def door_policies(config: Config) -> dict[str, DoorPolicy]:
    """Which units each door serves (None: a shared door every tenant may use)."""
    return {
        door.name: DoorPolicy(door.name, frozenset(door.units) if door.units else None)
        for door in config.all_doors()
    }


def door_setups(
    config: Config, devices: DeviceSet, settings: RuntimeSettings
) -> dict[str, DoorSetup]:
    """Each door's lock and its release time (the platform may have changed it)."""
    return {
        door.name: DoorSetup(
            devices.locks[door.name], settings.unlock_seconds(door.name, door.unlock_seconds)
        )
        for door in config.all_doors()
    }


def door_supervisors(config: Config) -> dict[str, DoorSupervisor]:
    """Each door's held-open and forced-open watch, failing secure or safe as configured."""
    return {
        door.name: DoorSupervisor(door.name, door.held_open_s, FailMode(door.fail_mode))
        for door in config.all_doors()
    }


def _platform_commands(
    keys: KeyRing,
    *,
    trusted: TrustedKeys,
    settings: RuntimeSettings,
    writer: Writer,
    clock: Clock,
    actions: GatewayActions,
) -> PlatformCommands:
    """The downlink's handler: applies signed commands to the store and the running gateway."""
    return PlatformCommands(
        writer=writer,
        keys=keys,
        clock=clock,
        trusted=trusted,
        settings=settings,
        hooks=actions.hooks(),
        record=writer.append,
    )


def _downlink(
    config: Config,
    clock: Clock,
    trusted: TrustedKeys,
    commands: PlatformCommands,
    session: Callable[[], Session | None],
    *,
    on_ack: Callable[[int], None],
) -> Downlink:
    """Signed commands from the platform, received on the uplink's MQTT session; its acks go
    to the uplink's cursor."""
    return Downlink(
        config.gateway.id,
        keys=trusted.current,
        handler=commands,
        clock=clock,
        session=session,
        reply_prefix=config.platform.reply_prefix,
        on_ack=on_ack,
    )


def _uplink(
    config: Config,
    *,
    clock: Clock,
    writer: Writer,
    source: OutboxSource,
    health: Callable[[], Awaitable[StateHealth]],
    downlink: Downlink,
) -> Uplink:
    """The outbox's drain to the platform, on an MQTT link that also carries the commands."""
    mqtt = config.mqtt

    def link(will: Callable[[], Will]) -> MqttLink:
        return MqttLink(
            broker_settings(config),
            will,
            inflight_window=mqtt.inflight_window,
            subscriptions=Subscriptions((downlink.topic_filter,), downlink.received),
        )

    return Uplink(
        config.gateway.id,
        link_factory=link,
        source=source,
        writer=writer,
        clock=clock,
        settings=UplinkSettings(
            window=mqtt.inflight_window,
            batch_events=mqtt.batch_events,
            ack_timeout_s=mqtt.ack_timeout_s,
            state_every_s=mqtt.state_every_s,
            ack_resend_s=mqtt.ack_resend_s,
        ),
        software=f"rentgate/{__version__}",
        health=health,
    )


def _alert_engine(
    config: Config,
    *,
    clock: Clock,
    keys: KeyRing,
    settings: RuntimeSettings,
    writer: Writer,
    poll_s: float,
) -> AlertEngine:
    return AlertEngine(
        writer=writer,
        keys=keys,
        clock=clock,
        building=config.building,
        local_districts=lambda: settings.local_districts(config.residence.local_districts),
        check_at=config.residence.check_at,
        poll_s=poll_s,
    )


def _housekeeper(config: Config, clock: Clock, writer: Writer) -> Housekeeper:
    storage = config.storage
    return Housekeeper(
        writer=writer,
        database=config.gateway.database,
        clock=clock,
        budget_bytes=int(storage.budget_mb * 1024 * 1024),
        history=timedelta(days=storage.history_days),
        every_s=storage.check_every_s,
        personal_grace=timedelta(hours=storage.personal_grace_hours),
        audit=timedelta(days=storage.audit_days),
    )


class DecisionObserver:
    """Feeds the residence rules from the doors: people let in, cancelled keys used."""

    def __init__(self, alerts: AlertEngine) -> None:
        self._alerts = alerts

    def __call__(self, read: CardRead, decision: Decision) -> None:
        entry = decision.entry
        if entry is None:
            return
        if decision.allowed:
            address = read.card.address if read.card is not None else None
            self._alerts.person_seen(entry.person_id, address)
        elif decision.reason is DecisionReason.REVOKED:
            self._alerts.cancelled_credential_used(
                entry.person_id, read.door, decision.status_detail or "revoked"
            )


class GatewayActions:
    """What signed platform commands may do to the running gateway (`GatewayHooks`)."""

    def __init__(
        self,
        config: Config,
        *,
        devices: DeviceSet,
        doors: DoorController,
        alerts: AlertEngine,
        settings: RuntimeSettings,
        resync: Callable[[], None],
        replay: Callable[[int], None],
        spawn: Spawn,
    ) -> None:
        self._config = config
        self._devices = devices
        self._doors = doors
        self._alerts = alerts
        self._settings = settings
        self._resync = resync
        self._replay = replay
        self._spawn = spawn

    def hooks(self) -> GatewayHooks:
        return GatewayHooks(
            unlock=self.unlock,
            doors=lambda: list(self._devices.locks),
            resync=self._resync,
            replay=self._replay,
            settings_changed=self.settings_changed,
            person_changed=self.person_changed,
        )

    def unlock(self, door: str, seconds: float) -> bool:
        lock = self._devices.locks.get(door)
        if lock is None:
            return False
        lock.unlock(seconds)
        self._doors.released(door, seconds)
        return True

    def settings_changed(self) -> None:
        self._doors.set_doors(door_setups(self._config, self._devices, self._settings))
        self._spawn(self._alerts.sweep(), "alerts-after-settings")

    def person_changed(self, person_id: str) -> None:
        self._spawn(self._alerts.evaluate(person_id), "alerts-after-status")
