"""systemd: the units verify, sd_notify reaches a real socket, the watchdog goes silent on a hang,
and `rentgate install-service` stages the units without clobbering local edits."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.service import add_parsers, run_install_service
from gateway.clock import ManualClock, SystemClock
from gateway.domain.events import EventType, OutboxEvent, new_event
from gateway.ops.liveness import EVENT_LOOP, STORE_WRITER, UPLINK, Liveness, Progress
from gateway.ops.sd_notify import (
    Notifier,
    NotifyAddressError,
    socket_address,
    watchdog_interval,
)
from gateway.ops.watchdog import Watchdog, heartbeat, uplink_probe, writer_pings
from gateway.store.db import connect
from gateway.store.migrations import migrate
from gateway.store.outbox import StoredEvent
from gateway.store.writer import Writer
from gateway.sync.link import BrokerSettings, MqttLink
from gateway.sync.local_broker import LocalBroker
from gateway.sync.outbox_source import OutboxSource
from gateway.sync.uplink import Uplink
from tests.support import REPO
from tests.support.gateway import write_config as support_write_config

UNITS_DIR = REPO / "systemd"
UNITS = (
    "rentgate.service",
    "rentgate-web.service",
    "rentgate-terminal-sync.service",
    "rentgate-terminal-sync.timer",
)
"""The gateway's units, which `rentgate install-service` stages."""
PLATFORM_UNITS = ("rentgate-ingest@.service",)
"""Units for the platform's servers, not for a gateway."""
VENV_BIN = "/opt/rentgate/.venv/bin/"
STATE = "/var/lib/rentgate"
PET = "WATCHDOG=1"
TICK_S = 0.01
WAIT_S = 20.0


# -- the units -----------------------------------------------------------------------------


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is missing: install Debian's `systemd` (scripts/setup does)")
    return found


def _verifiable_copies(directory: Path, units: dict[str, str] | None = None) -> list[Path]:
    """Copies of the units whose ExecStart names existing stand-ins (verify checks the binary)."""
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    for name in ("rentgate", "rentgate-terminal"):
        stand_in = bin_dir / name
        stand_in.write_text("#!/bin/sh\nexit 0\n")
        stand_in.chmod(0o755)
    texts = units or {name: (UNITS_DIR / name).read_text() for name in UNITS + PLATFORM_UNITS}
    copies = []
    for name, text in texts.items():
        if name.endswith(".service"):
            assert VENV_BIN in text, f"{name} does not start {VENV_BIN}…"
        copy = directory / name.replace("@.", "@a.")  # a template is verified as an instance
        copy.write_text(text.replace(VENV_BIN, f"{bin_dir}/"))
        copies.append(copy)
    return copies


def _verify(copies: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_analyze(), "verify", "--man=no", *map(str, copies)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_units_pass_systemd_analyze_verify_without_a_word(tmp_path: Path) -> None:
    result = _verify(_verifiable_copies(tmp_path))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verify_speaks_up_about_a_misspelt_directive(tmp_path: Path) -> None:
    """What makes the test above able to fail: verify warns (exit 0) and we demand silence."""
    text = (UNITS_DIR / "rentgate.service").read_text().replace("WatchdogSec=", "WatchdogSecs=")
    result = _verify(_verifiable_copies(tmp_path, {"rentgate.service": text}))
    assert "WatchdogSecs" in result.stderr


def _directives(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (UNITS_DIR / name).read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_gateway_unit_is_notify_watchdog_restart_and_hardened() -> None:
    unit = _directives("rentgate.service")
    expected = {
        "Type": ["notify"],
        "ExecStart": [f"{VENV_BIN}rentgate run --web none --config /etc/rentgate/gateway.toml"],
        "WatchdogSec": ["30s"],
        "Restart": ["on-failure"],
        "User": ["rentgate"],
        "SupplementaryGroups": ["dialout"],
        "ProtectSystem": ["strict"],
        "ReadWritePaths": ["/var/lib/rentgate"],
        "NoNewPrivileges": ["yes"],
        "PrivateTmp": ["yes"],
        "CapabilityBoundingSet": [""],
        "LimitCORE": ["0"],
        "LimitNOFILE": ["4096"],
    }
    assert {key: unit.get(key) for key in expected} == expected
    assert "PrivateDevices" not in unit, "serial readers live in /dev"


def test_the_web_runs_apart_as_its_own_user_without_devices_and_bounded() -> None:
    """Issue 13: everything that faces the network runs as another user, in another unit."""
    web = _directives("rentgate-web.service")
    expected = {
        "ExecStart": [f"{VENV_BIN}rentgate web --config /etc/rentgate/gateway.toml"],
        "User": ["rentgate-web"],
        "Group": ["rentgate"],
        "Restart": ["always"],
        "PrivateDevices": ["yes"],
        "LimitNOFILE": ["65536"],
        "MemoryMax": ["512M"],
        "StateDirectory": ["rentgate-web"],
        "ReadWritePaths": ["/var/lib/rentgate /var/lib/rentgate-web"],
        "NoNewPrivileges": ["yes"],
        "CapabilityBoundingSet": [""],
    }
    assert {key: web.get(key) for key in expected} == expected
    assert "SupplementaryGroups" not in web, "not in dialout: no serial device"
    core = _directives("rentgate.service")
    assert int(core["CPUWeight"][0]) > int(web["CPUWeight"][0]), "doors get the CPU first"


def test_terminal_sync_is_a_oneshot_the_timer_starts() -> None:
    service = _directives("rentgate-terminal-sync.service")
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"][0].endswith(
        "rentgate-terminal --home /var/lib/rentgate/terminal sync"
    )
    assert service["User"] == ["rentgate"]
    assert service["ProtectSystem"] == ["strict"]
    timer = _directives("rentgate-terminal-sync.timer")
    assert timer["OnUnitInactiveSec"]
    assert timer["WantedBy"] == ["timers.target"]


@pytest.mark.parametrize(
    "name",
    [
        "rentgate.service",
        "rentgate-web.service",
        "rentgate-terminal-sync.service",
        "rentgate-ingest@a.service",
    ],
)
def test_units_expose_little(tmp_path: Path, name: str) -> None:
    """`systemd-analyze security` scores exposure 0..10; --threshold is in tenths."""
    copy = next(path for path in _verifiable_copies(tmp_path) if path.name == name)
    result = subprocess.run(
        [_analyze(), "security", "--offline=true", "--threshold=20", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-400:] + result.stderr


def test_the_ingest_runs_as_a_dynamic_user_with_a_stable_instance_name() -> None:
    """%i is the instance's MQTT session: a restart gets back what the broker kept for it."""
    text = (UNITS_DIR / "rentgate-ingest@.service").read_text()
    unit = _directives("rentgate-ingest@.service")
    assert unit["DynamicUser"] == ["yes"]
    assert unit["Restart"] == ["always"]
    assert "--instance %i" in text
    assert "--dsn ${DSN}" in text


def test_sysusers_entry_creates_the_user_in_dialout(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is missing: install Debian's `systemd`")
    result = subprocess.run(
        [sysusers, f"--root={tmp_path}", "--dry-run", str(UNITS_DIR / "rentgate.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "Creating user 'rentgate'" in said
    assert "Creating user 'rentgate-web'" in said
    assert "Failed" not in said
    assert "Unknown" not in said


# -- sd_notify ---------------------------------------------------------------------------------


class Manager:
    """A stand-in for systemd's notify socket that keeps all it heard, read as it arrives.

    Reading keeps the kernel queue (as short as 10 datagrams) from filling, so no
    notification is dropped for want of a reader.
    """

    def __init__(self) -> None:
        self.name = f"@rentgate-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(socket_address(self.name))
        self.sock.setblocking(False)
        self.heard: list[str] = []

    def notifier(self) -> Notifier:
        return Notifier.from_env({"NOTIFY_SOCKET": self.name})

    def poll(self) -> None:
        while True:
            try:
                self.heard.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return

    def mark(self) -> int:
        """A point to ask `since` about (everything sent so far, when senders share our loop)."""
        self.poll()
        return len(self.heard)

    def since(self, mark: int) -> list[str]:
        self.poll()
        return self.heard[mark:]

    def receive(self, timeout: float = WAIT_S) -> str:
        """Wait for the next datagram (for senders on another thread)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        finally:
            self.sock.setblocking(False)


@pytest.fixture
def manager() -> Iterator[Manager]:
    listening = Manager()
    yield listening
    listening.sock.close()


def test_socket_addresses_and_watchdog_interval() -> None:
    assert socket_address("@sd/notify") == "\0sd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    for bad in ("relative/notify", "@", "vsock:2:1"):
        with pytest.raises(NotifyAddressError):
            socket_address(bad)
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, pid=41) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=41) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, pid=41) is None
    for usec in ("", "0", "-5", "15s"):
        assert watchdog_interval({"WATCHDOG_USEC": usec}) is None
    assert watchdog_interval({}) is None


def test_notifications_arrive_as_datagrams(manager: Manager) -> None:
    notifier = manager.notifier()
    assert notifier.ready("up")
    assert notifier.status("two\nlines  here")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert manager.since(0) == [
        "READY=1\nSTATUS=up",
        "STATUS=two lines here",
        "WATCHDOG=1",
        "STOPPING=1",
    ]
    assert notifier.stats.sent == 4


def test_a_manager_that_does_not_read_never_blocks_the_sender(manager: Manager) -> None:
    """The kernel queue fills (10 datagrams here by default); sends fail fast and are counted."""
    notifier = manager.notifier()
    sender = threading.Thread(target=lambda: [notifier.watchdog() for _ in range(500)])
    sender.start()
    sender.join(WAIT_S)
    assert not sender.is_alive(), "a notification blocked"
    assert notifier.stats.sent + notifier.stats.failed == 500
    assert notifier.stats.failed > 0
    assert len(manager.since(0)) == notifier.stats.sent


def test_a_filesystem_socket_path_works_too() -> None:
    with tempfile.TemporaryDirectory(prefix="rg-", dir="/tmp") as directory:
        path = f"{directory}/notify"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            assert Notifier.from_env({"NOTIFY_SOCKET": path}).watchdog()
            assert sock.recv(64) == b"WATCHDOG=1"


def test_outside_systemd_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    assert not Notifier.from_env({}).enabled
    assert not Notifier.from_env({}).ready()
    assert not Notifier.from_env({"NOTIFY_SOCKET": "not/absolute"}).enabled
    gone = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "no-manager-here")})
    assert gone.enabled
    assert not gone.watchdog()
    assert not gone.watchdog()
    assert (gone.stats.sent, gone.stats.failed) == (0, 2)


# -- liveness -----------------------------------------------------------------------------------


def _clock() -> ManualClock:
    return ManualClock(datetime(2026, 1, 1, tzinfo=UTC))


def test_a_loop_is_stale_once_silent_past_its_own_limit() -> None:
    clock = _clock()
    liveness = Liveness(clock.monotonic)
    liveness.register(EVENT_LOOP, 5)
    liveness.register(UPLINK, 100)
    clock.advance(5)
    assert liveness.alive()
    clock.advance(1)
    assert [item.name for item in liveness.stale()] == [EVENT_LOOP]
    liveness.beat(EVENT_LOOP)
    assert liveness.alive()
    clock.advance(101)
    liveness.beat(EVENT_LOOP)
    (stale,) = liveness.stale()
    assert (stale.name, stale.silent_s, stale.limit_s) == (UPLINK, 107, 100)
    with pytest.raises(KeyError):
        liveness.beat("nobody")
    with pytest.raises(ValueError):
        liveness.register(UPLINK, 1)
    with pytest.raises(ValueError):
        liveness.register("zero", 0)


def test_beats_from_another_thread_count() -> None:
    clock = _clock()
    liveness = Liveness(clock.monotonic)
    liveness.register(STORE_WRITER, 5)
    clock.advance(10)
    assert not liveness.alive()
    beater = threading.Thread(target=liveness.beat, args=(STORE_WRITER,))
    beater.start()
    beater.join()
    assert liveness.alive()


def test_progress_beats_when_idle_or_moving_never_when_stuck() -> None:
    clock = _clock()
    liveness = Liveness(clock.monotonic)
    liveness.register(UPLINK, 10)
    progress = Progress(liveness, UPLINK)
    assert progress.observe(busy=True, marker=1)  # first sight
    assert not progress.observe(busy=True, marker=1)  # work waiting, nothing moved
    assert progress.observe(busy=True, marker=2)  # moved
    assert progress.observe(busy=False, marker=2)  # nothing to do (or waiting on the world)
    clock.advance(11)
    assert not progress.observe(busy=True, marker=2)
    assert [item.name for item in liveness.stale()] == [UPLINK]


# -- the watchdog on a running loop --------------------------------------------------------------


async def _ticks(watchdog: Watchdog, count: int, manager: Manager) -> list[str]:
    """Let `count` more checks happen (bounded); what the manager heard meanwhile."""
    mark = manager.mark()
    target = watchdog.checks + count
    for _ in range(int(WAIT_S / TICK_S)):
        if watchdog.checks >= target:
            return manager.since(mark)
        manager.poll()
        await asyncio.sleep(TICK_S)
    raise AssertionError(f"the watchdog did not check {count} more time(s)")


async def _until(predicate: Callable[[], bool], what: str, manager: Manager) -> None:
    for _ in range(int(WAIT_S / TICK_S)):
        if predicate():
            return
        manager.poll()
        await asyncio.sleep(TICK_S)
    raise AssertionError(f"timed out waiting for {what}")


def _run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


def test_watchdog_pets_while_all_beat_and_withholds_while_one_is_silent(
    manager: Manager,
) -> None:
    async def body() -> None:
        clock = _clock()
        liveness = Liveness(clock.monotonic)
        liveness.register(EVENT_LOOP, 5)
        liveness.register(UPLINK, 10)
        watchdog = Watchdog(
            liveness, notifier=manager.notifier(), interval_s=TICK_S, summary=lambda: "link up"
        )
        ready = asyncio.Event()
        task = asyncio.create_task(watchdog.run(ready))
        await asyncio.sleep(TICK_S * 3)
        assert manager.since(0) == []  # nothing before the gateway is ready
        ready.set()
        got = await _ticks(watchdog, 3, manager)
        assert got[:2] == ["READY=1", "STATUS=2 loop(s) alive; link up"]
        assert got.count(PET) >= 3

        clock.advance(11)
        liveness.beat(EVENT_LOOP)  # the uplink stays silent: it hangs
        got = await _ticks(watchdog, 3, manager)
        assert PET not in got
        assert got[0] == "STATUS=HUNG: uplink silent 11 s (limit 10 s); link up"
        assert [item.name for item in liveness.stale()] == [UPLINK]
        assert watchdog.withheld >= 3

        liveness.beat(UPLINK)
        got = await _ticks(watchdog, 2, manager)
        assert got[0] == "STATUS=2 loop(s) alive; link up"
        assert PET in got

        mark = manager.mark()
        watchdog.stopping()
        checks = watchdog.checks
        await asyncio.sleep(TICK_S * 5)
        assert watchdog.checks == checks  # no more rounds, no more pets
        assert manager.since(mark) == [
            "STOPPING=1\nSTATUS=stopping: committing writes, saying goodbye"
        ]
        task.cancel()

    _run(body)


def test_a_blocked_event_loop_cannot_pet_though_another_thread_beats(manager: Manager) -> None:
    """The loop runs in a thread and is blocked by a callback; the 'writer' keeps beating."""
    liveness = Liveness()
    liveness.register(EVENT_LOOP, 600)  # generous: the block, not a limit, must stop the pets
    liveness.register(STORE_WRITER, 600)
    watchdog = Watchdog(liveness, notifier=manager.notifier(), interval_s=TICK_S)
    loop = asyncio.new_event_loop()
    done = threading.Event()
    beats = 0

    def writer_thread() -> None:
        nonlocal beats
        while not done.is_set():
            liveness.beat(STORE_WRITER)
            beats += 1
            done.wait(TICK_S / 2)

    async def gateway() -> None:
        tasks = [
            asyncio.create_task(heartbeat(liveness, every_s=TICK_S)),
            asyncio.create_task(watchdog.run()),
        ]
        await asyncio.to_thread(done.wait)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def run_loop() -> None:
        loop.run_until_complete(gateway())
        loop.run_until_complete(loop.shutdown_default_executor())

    threads = [threading.Thread(target=run_loop), threading.Thread(target=writer_thread)]
    for thread in threads:
        thread.start()
    blocked, release = threading.Event(), threading.Event()

    def block() -> None:
        blocked.set()
        release.wait(WAIT_S)  # like a time.sleep in a callback: the loop is stuck here

    try:
        assert manager.receive() == "READY=1"
        assert PET in {manager.receive() for _ in range(3)}
        loop.call_soon_threadsafe(block)
        assert blocked.wait(WAIT_S)
        mark = manager.mark()  # what was sent before the block
        seen = beats
        for _ in range(int(WAIT_S / TICK_S)):
            if beats >= seen + 20:
                break
            time.sleep(TICK_S)
        assert beats >= seen + 20, "the other thread stopped beating"
        assert manager.since(mark) == []  # it beat 20 times and not one pet went out
        release.set()
        assert manager.receive() == PET
    finally:
        release.set()
        done.set()
        for thread in threads:
            thread.join(WAIT_S)
        loop.close()


def _event(clock: SystemClock, serial: int) -> OutboxEvent:
    return new_event(EventType.DEVICE_STATUS, clock.now(), 0.0, {"device": f"r{serial}"})


class HangableSource(OutboxSource):
    """The real outbox reader, which can be made to await forever (a stuck read)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hang = False
        self.stuck = False

    async def read_after(self, seq: int, limit: int) -> list[StoredEvent]:
        if self.hang:
            self.stuck = True
            await asyncio.Event().wait()  # an await that never returns
        return await super().read_after(seq, limit)


class UplinkRig:
    """A real writer, outbox, uplink and broker, watched the way the gateway is wired."""

    def __init__(self, tmp_path: Path, broker: LocalBroker, manager: Manager) -> None:
        database = tmp_path / "gw.db"
        conn = connect(database)
        migrate(conn)
        conn.close()
        self.clock = _clock()
        self.wall = SystemClock()
        self.source = HangableSource(database)
        self.writer = Writer(database, on_commit=self._committed)
        settings = BrokerSettings.from_url(broker.url, f"gw-{uuid.uuid4().hex[:8]}")
        self.uplink = Uplink(
            "GW-T1",
            link_factory=lambda will: MqttLink([settings], will),
            source=self.source,
            writer=self.writer,
            clock=self.wall,
        )
        self.liveness = Liveness(self.clock.monotonic)
        self.liveness.register(EVENT_LOOP, 5)
        self.liveness.register(UPLINK, 30)
        self.watchdog = Watchdog(
            self.liveness,
            notifier=manager.notifier(),
            interval_s=TICK_S,
            probes=[uplink_probe(self.liveness, self.uplink, lambda: self.writer.health.head_seq)],
        )
        self.tasks: list[asyncio.Task[None]] = []

    def _committed(self, head: int) -> None:
        self.uplink.notify_threadsafe(head)

    async def start(self) -> None:
        self.writer.start()
        self.tasks = [
            asyncio.create_task(self.uplink.run()),
            asyncio.create_task(self.watchdog.run()),
            asyncio.create_task(heartbeat(self.liveness, every_s=TICK_S)),
        ]

    def append(self, count: int) -> None:
        for serial in range(count):
            self.writer.append(_event(self.wall, serial))

    def silence_for(self, seconds: float) -> None:
        """Move the liveness clock; the loop's heartbeat beats at once (it is not what hangs)."""
        self.clock.advance(seconds)
        self.liveness.beat(EVENT_LOOP)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.to_thread(self.writer.close)
        self.source.close()


def test_watchdog_stops_being_petted_when_the_uplink_hangs(
    tmp_path: Path, broker: LocalBroker, manager: Manager
) -> None:
    async def body() -> None:
        rig = UplinkRig(tmp_path, broker, manager)
        await rig.start()
        try:
            rig.append(5)
            await _until(lambda: rig.uplink.stats.delivered_seq == 5, "events delivered", manager)
            rig.silence_for(31)  # connected with nothing to send: idle is not a hang
            assert PET in await _ticks(rig.watchdog, 3, manager)
            assert rig.watchdog.withheld == 0

            rig.source.hang = True
            rig.append(3)
            await _until(lambda: rig.source.stuck, "the uplink to block on its read", manager)
            await _until(lambda: rig.writer.health.head_seq == 8, "events committed", manager)
            await _ticks(rig.watchdog, 2, manager)  # the probe has seen it stuck
            rig.silence_for(31)
            got = await _ticks(rig.watchdog, 3, manager)
            assert PET not in got
            assert got[0].startswith("STATUS=HUNG: uplink silent 31 s")
            assert [item.name for item in rig.liveness.stale()] == [UPLINK]
            assert rig.uplink.session is not None  # the link is up: only the uplink hangs
        finally:
            await rig.stop()

    _run(body)


def test_a_broker_outage_is_not_a_hang(
    tmp_path: Path, own_broker: LocalBroker, manager: Manager
) -> None:
    async def body() -> None:
        rig = UplinkRig(tmp_path, own_broker, manager)
        await rig.start()
        try:
            rig.append(2)
            await _until(lambda: rig.uplink.stats.delivered_seq == 2, "events delivered", manager)
            own_broker.stop()
            await _until(lambda: rig.uplink.session is None, "the outage noticed", manager)
            rig.append(4)
            await _until(lambda: rig.writer.health.head_seq == 6, "events pending", manager)
            rig.silence_for(31)
            got = await _ticks(rig.watchdog, 3, manager)
            assert got.count(PET) >= 3
            assert rig.watchdog.withheld == 0
            assert rig.uplink.stats.delivered_seq == 2  # still undelivered, still petted
        finally:
            await rig.stop()

    _run(body)


def test_watchdog_stops_being_petted_when_a_store_write_hangs(
    tmp_path: Path, manager: Manager
) -> None:
    database = tmp_path / "gw.db"
    conn = connect(database)
    migrate(conn)
    conn.close()

    async def body() -> None:
        clock = _clock()
        liveness = Liveness(clock.monotonic)
        liveness.register(EVENT_LOOP, 5)
        liveness.register(STORE_WRITER, 30)
        watchdog = Watchdog(liveness, notifier=manager.notifier(), interval_s=TICK_S)
        writer = Writer(database)
        writer.start()
        tasks = [
            asyncio.create_task(writer_pings(liveness, writer, every_s=TICK_S)),
            asyncio.create_task(watchdog.run()),
            asyncio.create_task(heartbeat(liveness, every_s=TICK_S)),
        ]
        entered, release = threading.Event(), threading.Event()

        def stuck_write(_conn: object) -> None:
            entered.set()
            release.wait(WAIT_S)  # the writer thread is inside its transaction and stays there

        try:
            assert PET in await _ticks(watchdog, 3, manager)
            writer.submit(stuck_write)
            assert await asyncio.to_thread(entered.wait, WAIT_S)
            await _ticks(watchdog, 2, manager)
            clock.advance(31)
            liveness.beat(EVENT_LOOP)
            got = await _ticks(watchdog, 3, manager)
            assert PET not in got
            assert got[0].startswith("STATUS=HUNG: store-writer silent 31 s")
            assert [item.name for item in liveness.stale()] == [STORE_WRITER]
            release.set()
            await _until(liveness.alive, "the writer to beat again", manager)
            assert PET in await _ticks(watchdog, 2, manager)
        finally:
            release.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(writer.close)

    _run(body)


# -- rentgate install-service ------------------------------------------------------------------


def _install(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="rentgate")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return run_install_service(parser.parse_args(["install-service", *argv]))


def _tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text() if path.is_file() else "<dir>"
        for path in sorted(root.rglob("*"))
    }


def test_install_service_stages_units_user_and_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "image"
    assert _install("--prefix", str(root), "--config", "/srv/rentgate/gw.toml") == 0
    units = root / "etc/systemd/system"
    for name in UNITS[2:]:
        assert (units / name).read_text() == (UNITS_DIR / name).read_text()
    for name in UNITS[:2]:  # the door core and the web read the same config
        assert (units / name).read_text() == (
            (UNITS_DIR / name)
            .read_text()
            .replace("--config /etc/rentgate/gateway.toml", "--config /srv/rentgate/gw.toml")
        )
    sysusers = root / "usr/lib/sysusers.d/rentgate.conf"
    assert sysusers.read_text() == (UNITS_DIR / "rentgate.sysusers").read_text()
    assert (root / "var/lib/rentgate").is_dir()
    assert oct((units / "rentgate.service").stat().st_mode & 0o777) == "0o644"
    out = capsys.readouterr().out
    assert out.count("new ") == 5
    assert "write /srv/rentgate/gw.toml" in out

    assert _install("--prefix", str(root), "--config", "/srv/rentgate/gw.toml") == 0
    assert capsys.readouterr().out.count("unchanged") == 5


def test_install_service_refuses_to_overwrite_a_changed_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "image"
    assert _install("--prefix", str(root)) == 0
    unit = root / "etc/systemd/system/rentgate.service"
    edited = unit.read_text().replace("WatchdogSec=30s", "WatchdogSec=5min")
    unit.write_text(edited)
    (root / "etc/systemd/system/rentgate-terminal-sync.timer").unlink()
    before = _tree(root)
    capsys.readouterr()

    assert _install("--prefix", str(root)) == 1
    assert _tree(root) == before  # nothing written, not even the missing timer
    captured = capsys.readouterr()
    assert f"CHANGED    {unit}" in captured.out
    assert "installed file differs" in captured.err
    assert "--force" in captured.err

    assert _install("--prefix", str(root), "--force") == 0
    assert unit.read_text() == (UNITS_DIR / "rentgate.service").read_text()
    assert (root / "etc/systemd/system/rentgate-terminal-sync.timer").is_file()


def test_install_service_dry_run_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "image"
    root.mkdir()
    assert _install("--prefix", str(root), "--dry-run") == 0
    assert _tree(root) == {}
    assert "dry run: nothing written" in capsys.readouterr().out


def test_install_service_dry_run_at_the_root_names_the_account_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    installed = Path("/etc/systemd/system/rentgate.service")
    existed = installed.exists()
    assert _install("--dry-run") == 0
    assert installed.exists() == existed
    out = capsys.readouterr().out
    assert "would run: " in out
    assert "/usr/lib/sysusers.d/rentgate.conf" in out or "useradd --system" in out


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--config", "gateway.toml"], "unusable --config path"),
        (["--config", "/home/pi/gateway.toml"], "unusable --config path"),
        (["--config", "/etc/../root/gateway.toml"], "unusable --config path"),
        (["--config", "/etc/rentgate/my gateway.toml"], "unusable --config path"),
        (["--units", "/nonexistent"], "unit files not found"),
    ],
)
def test_install_service_bad_arguments_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], why: str
) -> None:
    root = tmp_path / "image"
    root.mkdir()
    assert _install("--prefix", str(root), *argv) == 2
    assert _tree(root) == {}
    assert why in capsys.readouterr().err


def test_rentgate_run_tells_systemd_it_is_ready_pets_the_watchdog_and_says_goodbye(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """The real main job under a notify socket, as systemd runs it (Type=notify, WatchdogSec)."""
    socket_path = tmp_path / "notify.sock"
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(socket_path))
    manager.settimeout(0.2)
    config = support_write_config(tmp_path, broker.url, gateway_id="GW-SYSTEMD")
    environment = {
        **os.environ,
        "NOTIFY_SOCKET": str(socket_path),
        "WATCHDOG_USEC": "2000000",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    received: list[str] = []

    def drain() -> None:
        with contextlib.suppress(TimeoutError):
            while True:
                received.append(manager.recv(4096).decode())

    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in received) < 2:
            drain()
        assert any("READY=1" in m for m in received), received
        assert sum("WATCHDOG=1" in m for m in received) >= 2, received
        child.terminate()
        assert child.wait(60) == 0
        drain()
        assert any("STOPPING=1" in m for m in received), received
    finally:
        if child.poll() is None:
            child.kill()
        manager.close()
