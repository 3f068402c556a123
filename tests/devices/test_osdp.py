"""The OSDP driver against real libosdp peripheral devices on a pty, secure channel on."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import stat
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.devices.osdp.keys import load_key, pending_path
from gateway.devices.osdp.reader import (
    OfflineReason,
    OsdpBus,
    OsdpDeviceConfig,
    OsdpReader,
    OutputMode,
    card_value,
)
from gateway.devices.osdp.simulator import OsdpSimBus, SimCommand, card_bytes, wiegand26
from gateway.devices.protocols import CardRead, DoorSignal, DoorState, ReaderError
from gateway.domain.credentials import CredentialError, RejectReason
from tests.support.devices import (
    OSDP_BAUD,
    OSDP_KEY,
    osdp_bus,
    osdp_key_file,
    reading,
    uid,
    until,
)

OTHER_KEY = bytes.fromhex("f0e0d0c0b0a090807060504030201000")
KNOWN = wiegand26(12, 3456)
UNKNOWN = wiegand26(12, 999)
UNLOCK_S = 3.0


@dataclass
class DoorSink:
    """Decides like the gateway's DoorController: lock first, then the reader's feedback."""

    allowed: set[str]
    readers: dict[str, OsdpReader] = field(default_factory=dict)
    reads: list[CardRead] = field(default_factory=list)
    rejections: list[RejectReason] = field(default_factory=list)
    signals: list[DoorSignal] = field(default_factory=list)
    statuses: list[tuple[str, bool, str | None]] = field(default_factory=list)

    def accepted(self, read: CardRead) -> None:
        self.reads.append(read)
        reader = self.readers[read.reader]
        allowed = read.credential.value in self.allowed
        if allowed:
            reader.unlock(UNLOCK_S)
        reader.indicate(allowed)

    def rejected(self, reader: str, door: str, reason: RejectReason) -> None:
        self.rejections.append(reason)

    def door_signal(self, device: str, door: str, signal: DoorSignal) -> None:
        self.signals.append(signal)

    def device_status(self, device: str, door: str, online: bool, detail: str | None) -> None:
        self.statuses.append((device, online, detail))

    def saturated(self) -> bool:
        return False


async def commands(pd_wait: Callable[[], object]) -> None:
    await asyncio.to_thread(pd_wait)


@contextlib.asynccontextmanager
async def running(bus: OsdpBus, sink: DoorSink) -> AsyncIterator[list[asyncio.Task[None]]]:
    """The bus's readers at work for the block, deciding through `sink`."""
    sink.readers.update({reader.name: reader for reader in bus.readers})
    async with reading(bus.readers, sink) as tasks:
        yield tasks


@pytest.fixture
def sim() -> Iterator[OsdpSimBus]:
    with OsdpSimBus() as bus:
        yield bus


def test_allowed_card_releases_the_relay_with_green_light_over_a_secure_channel(
    sim: OsdpSimBus, tmp_path: Path
) -> None:
    pd = sim.add(1, OSDP_KEY)
    sim.start()
    bus = osdp_bus(sim.path, osdp_key_file(tmp_path))
    sink = DoorSink({uid(KNOWN)})

    async def scenario() -> None:
        async with running(bus, sink):
            await until(lambda: bus.readers[0].online, "the reader online", 10)
            pd.present_card(KNOWN, 26)
            await commands(lambda: pd.wait_for(lambda c: len(c) >= 3))

    asyncio.run(scenario())
    assert pd.sc_active
    assert [read.credential.value for read in sink.reads] == [uid(KNOWN)]
    assert uid(KNOWN) == f"{KNOWN:07X}"
    output, led, buzzer = pd.commands[:3]
    assert output.kind is SimCommand.OUTPUT
    assert output.fields["control_code"] == 5  # temporary on, the reader's timer ends it
    assert output.fields["timer_count"] == UNLOCK_S * 10
    assert led.kind is SimCommand.LED
    assert led.fields["temporary"] is True
    assert led.fields["on_color"] == 2  # green
    assert buzzer.kind is SimCommand.BUZZER
    assert buzzer.fields["rep_count"] == 1
    assert sink.statuses == [("front-osdp", True, None)]


def test_unknown_card_gets_red_light_and_no_release(sim: OsdpSimBus, tmp_path: Path) -> None:
    pd = sim.add(1, OSDP_KEY)
    sim.start()
    bus = osdp_bus(sim.path, osdp_key_file(tmp_path))
    sink = DoorSink({uid(KNOWN)})

    async def scenario() -> None:
        async with running(bus, sink):
            await until(lambda: bus.readers[0].online, "the reader online", 10)
            pd.present_card(UNKNOWN, 26)
            await commands(lambda: pd.wait_for(lambda c: len(c) >= 2))

    asyncio.run(scenario())
    led, buzzer = pd.commands[:2]
    assert led.kind is SimCommand.LED
    assert led.fields["on_color"] == 1  # red
    assert buzzer.kind is SimCommand.BUZZER
    assert buzzer.fields["rep_count"] == 3
    assert pd.received(SimCommand.OUTPUT) == [], "commands go in order: a release would lead"


def test_door_contact_exit_button_tamper_and_power_reach_the_sink(
    sim: OsdpSimBus, tmp_path: Path
) -> None:
    pd = sim.add(1, OSDP_KEY)
    sim.start()
    bus = osdp_bus(sim.path, osdp_key_file(tmp_path))
    sink = DoorSink(set())
    reader = bus.readers[0]
    seen: list[DoorState] = []

    async def scenario() -> None:
        async with running(bus, sink):
            await until(lambda: reader.online, "the reader online", 10)
            pd.set_contact(open_=True)
            await until(lambda: DoorSignal.CONTACT_OPEN in sink.signals, "contact open", 5)
            seen.append(reader.state())
            pd.press_exit()
            pd.set_contact(open_=False)
            pd.set_tamper(True)
            pd.set_tamper(False)
            pd.set_power_failure(True)
            pd.set_power_failure(False)
            await until(lambda: len(sink.signals) == 7, "all signals", 5)
            seen.append(reader.state())

    asyncio.run(scenario())
    assert sink.signals == [
        DoorSignal.CONTACT_OPEN,
        DoorSignal.EXIT_REQUEST,
        DoorSignal.CONTACT_CLOSED,
        DoorSignal.TAMPER,
        DoorSignal.TAMPER_CLEARED,
        DoorSignal.POWER_FAILURE,
        DoorSignal.POWER_RESTORED,
    ]
    assert seen == [DoorState.OPEN, DoorState.CLOSED]


def test_wrong_key_raises_an_offline_alarm_that_names_the_mismatch(
    sim: OsdpSimBus, tmp_path: Path
) -> None:
    pd = sim.add(1, OTHER_KEY)
    sim.start()
    bus = osdp_bus(sim.path, osdp_key_file(tmp_path))
    sink = DoorSink({uid(KNOWN)})

    async def scenario() -> None:
        async with running(bus, sink):
            await until(lambda: sink.statuses, "a status report", 15)
            pd.present_card(KNOWN, 26)
            bus.readers[0].unlock(UNLOCK_S)

    asyncio.run(scenario())
    [(device, online, detail)] = sink.statuses
    assert (device, online) == ("front-osdp", False)
    assert detail is not None
    assert "key mismatch" in detail
    assert "300 s" in detail
    assert bus.readers[0].offline_reason is OfflineReason.KEY_MISMATCH
    assert sink.reads == []
    assert not pd.sc_active


def test_silent_reader_raises_an_offline_alarm_and_comes_back(
    sim: OsdpSimBus, tmp_path: Path
) -> None:
    pd = sim.add(1, OSDP_KEY)
    sim.start()
    bus = osdp_bus(sim.path, osdp_key_file(tmp_path))
    sink = DoorSink({uid(KNOWN)})
    reader = bus.readers[0]

    async def scenario() -> None:
        async with running(bus, sink):
            await until(lambda: reader.online, "the reader online", 10)
            sim.stop()
            await until(lambda: not reader.online, "the reader offline", 30)
            reader.unlock(UNLOCK_S)  # dropped: nothing to send it to
            sim.start()
            await until(lambda: reader.online, "the reader back online", 60)
            pd.present_card(KNOWN, 26)
            await commands(lambda: pd.wait_for(lambda c: len(c) >= 3))

    asyncio.run(scenario())
    online, offline, again = sink.statuses
    assert online == ("front-osdp", True, None)
    assert offline[1] is False
    assert offline[2] is not None
    assert "no reply" in offline[2]
    assert again == ("front-osdp", True, None)
    assert [c.kind for c in pd.commands] == [SimCommand.OUTPUT, SimCommand.LED, SimCommand.BUZZER]
    assert bus.counters["commands_dropped_offline"] == 1


def test_a_burst_of_300_reads_arrives_complete_and_in_order(
    sim: OsdpSimBus, tmp_path: Path
) -> None:
    pd = sim.add(1, OSDP_KEY)
    sim.start()
    bus = osdp_bus(sim.path, osdp_key_file(tmp_path))
    cards = [wiegand26(7, n) for n in range(300)]
    sink = DoorSink({uid(card) for card in cards[::2]})

    async def scenario() -> None:
        async with running(bus, sink):
            await until(lambda: bus.readers[0].online, "the reader online", 10)
            for card in cards:
                pd.present_card(card, 26)
            await until(lambda: len(sink.reads) >= len(cards), "all reads", 120)
            await commands(lambda: pd.wait_for(lambda c: len(c) >= 750, 30))

    asyncio.run(scenario())
    assert [read.credential.value for read in sink.reads] == [uid(card) for card in cards]
    assert len(pd.received(SimCommand.OUTPUT)) == 150
    assert len(pd.received(SimCommand.LED)) == 300


def test_install_mode_sets_a_new_key_persists_it_and_a_restart_uses_it(
    tmp_path: Path,
) -> None:
    path = osdp_key_file(tmp_path, None)
    sink = DoorSink({uid(KNOWN)})
    with OsdpSimBus() as first:
        pd = first.add(1, None)  # a new reader: accepts the install key SCBK-D once
        first.start()
        bus = osdp_bus(first.path, path, install=True)

        async def install() -> None:
            async with running(bus, sink):
                await until(lambda: bus.readers[0].online, "the reader online", 20)

        asyncio.run(install())
        installed = pd.key
    assert installed is not None
    assert pd.received(SimCommand.KEYSET)
    assert path.read_text().strip() == installed.hex()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not pending_path(path).exists()

    with OsdpSimBus() as second:
        again = second.add(1, installed)  # powered up again, holding the key it was given
        second.start()
        bus = osdp_bus(second.path, path)  # install mode off: the key file must be used

        async def restart() -> None:
            async with running(bus, sink):
                await until(lambda: bus.readers[0].online, "the reader online", 10)
                again.present_card(KNOWN, 26)
                await commands(lambda: again.wait_for(lambda c: len(c) >= 3))

        asyncio.run(restart())
        assert again.sc_active
    assert again.received(SimCommand.KEYSET) == []
    assert again.received(SimCommand.OUTPUT)


def test_two_readers_on_one_line_are_served_by_one_panel(sim: OsdpSimBus, tmp_path: Path) -> None:
    entry, exit_ = sim.add(1, OSDP_KEY), sim.add(2, OTHER_KEY)
    sim.start()
    configs = [
        OsdpDeviceConfig("lobby-in", "lobby", 1, osdp_key_file(tmp_path, OSDP_KEY, "in.key")),
        OsdpDeviceConfig("lobby-out", "lobby", 2, osdp_key_file(tmp_path, OTHER_KEY, "out.key")),
    ]
    bus = OsdpBus(sim.path, OSDP_BAUD, configs)
    sink = DoorSink({uid(KNOWN)})

    async def scenario() -> None:
        async with running(bus, sink):
            await until(lambda: all(r.online for r in bus.readers), "both readers online", 10)
            exit_.present_card(KNOWN, 26)
            await commands(lambda: exit_.wait_for(lambda c: len(c) >= 3))
            entry.present_card(UNKNOWN, 26)
            await commands(lambda: entry.wait_for(lambda c: len(c) >= 2))

    asyncio.run(scenario())
    assert [(read.reader, read.credential.value) for read in sink.reads] == [
        ("lobby-out", uid(KNOWN)),
        ("lobby-in", uid(UNKNOWN)),
    ]
    assert len(exit_.received(SimCommand.OUTPUT)) == 1
    assert entry.received(SimCommand.OUTPUT) == []


def test_latch_mode_switches_the_relay_on_then_off(sim: OsdpSimBus, tmp_path: Path) -> None:
    pd = sim.add(1, OSDP_KEY)
    sim.start()
    bus = osdp_bus(sim.path, osdp_key_file(tmp_path), output_mode=OutputMode.LATCH)
    sink = DoorSink(set())

    async def scenario() -> None:
        async with running(bus, sink):
            await until(lambda: bus.readers[0].online, "the reader online", 10)
            bus.readers[0].unlock(0.2)
            await commands(lambda: pd.wait_for(lambda c: len(c) >= 2))

    asyncio.run(scenario())
    assert [c.fields["control_code"] for c in pd.received(SimCommand.OUTPUT)] == [2, 1]


@pytest.mark.slow  # waits out one 25.5 s pulse
def test_a_release_longer_than_one_pulse_is_renewed_not_latched(
    sim: OsdpSimBus, tmp_path: Path
) -> None:
    pd = sim.add(1, OSDP_KEY)
    sim.start()
    bus = osdp_bus(sim.path, osdp_key_file(tmp_path))
    sink = DoorSink(set())

    async def scenario() -> None:
        async with running(bus, sink):
            await until(lambda: bus.readers[0].online, "the reader online", 10)
            bus.readers[0].unlock(26.0)  # one timed pulse lasts 25.5 s at most
            await commands(lambda: pd.wait_for(lambda c: len(c) >= 2, 40))

    asyncio.run(scenario())
    first, renewal = ((c.fields["control_code"], c.fields["timer_count"]) for c in pd.commands)
    assert first == (5, 255)
    assert renewal[0] == 5
    assert 5 <= renewal[1] <= 10, "the rest of the 26 s, counted from the renewal"


def test_install_after_a_crash_before_the_commit_finishes_with_the_pending_key(
    sim: OsdpSimBus, tmp_path: Path
) -> None:
    path = osdp_key_file(tmp_path, None)
    pending = load_key(path, install=True).key  # offered, KEYSET accepted, then a crash
    pd = sim.add(1, pending)
    sim.start()
    bus = osdp_bus(sim.path, path, install=True)

    async def scenario() -> None:
        async with running(bus, DoorSink(set())):
            await until(lambda: bus.readers[0].online, "the reader online", 10)

    asyncio.run(scenario())
    assert pd.received(SimCommand.KEYSET) == []
    assert path.read_text().strip() == pending.hex()
    assert not pending_path(path).exists()


def test_install_mode_never_talks_in_the_clear_to_a_reader_that_refuses_both_keys(
    sim: OsdpSimBus, tmp_path: Path
) -> None:
    pd = sim.add(1, OTHER_KEY)  # not in install mode, and not our key either
    sim.start()
    path = osdp_key_file(tmp_path, None)
    bus = osdp_bus(sim.path, path, install=True)
    sink = DoorSink({uid(KNOWN)})

    async def scenario() -> None:
        async with running(bus, sink):
            await until(lambda: sink.statuses, "a status report", 15)
            pd.present_card(KNOWN, 26)
            await asyncio.sleep(0.3)

    asyncio.run(scenario())
    [(_, online, detail)] = sink.statuses
    assert online is False
    assert detail is not None
    assert "install mode" in detail
    assert bus.readers[0].offline_reason is OfflineReason.INSTALL_FAILED
    assert sink.reads == []
    assert pd.commands == []
    assert not path.exists()


def test_events_leave_no_memory_behind(sim: OsdpSimBus, tmp_path: Path) -> None:
    """libosdp 3.2.9 leaks every event's dict (~125-430 bytes) unless the panel releases it."""
    pd = sim.add(1, OSDP_KEY)
    sim.start()
    bus = osdp_bus(sim.path, osdp_key_file(tmp_path))
    sink = DoorSink(set())
    retained: list[int] = []
    count = 100

    async def scenario() -> None:
        async with running(bus, sink):
            await until(lambda: bus.readers[0].online, "the reader online", 10)
            pd.present_card(KNOWN, 26)
            await until(lambda: len(sink.reads) == 1, "a first read", 5)
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.take_snapshot()
                for serial in range(count):
                    pd.set_contact(open_=serial % 2 == 0)
                await until(lambda: len(sink.signals) == count, "the contact changes", 60)
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            osdpcp = after.compare_to(before, "filename")
            retained.append(sum(d.size_diff for d in osdpcp if "osdpcp" in str(d.traceback)))

    asyncio.run(scenario())
    assert retained[0] < count * 50, f"{retained[0] / count:.0f} bytes kept per event"


def test_card_data_that_is_no_card_uid_is_rejected(sim: OsdpSimBus, tmp_path: Path) -> None:
    pd = sim.add(1, OSDP_KEY)
    sim.start()
    bus = osdp_bus(sim.path, osdp_key_file(tmp_path))
    sink = DoorSink(set())

    async def scenario() -> None:
        async with running(bus, sink):
            await until(lambda: bus.readers[0].online, "the reader online", 10)
            pd.present_card(0xAB, 8)  # 2 hex digits: too short for a card serial
            pd.present_card(1 << 95, 96)  # 24 hex digits: too long
            pd.present_card(0x0123456789ABCDEF, 64)
            await until(lambda: len(sink.reads) == 1, "the good read", 5)

    asyncio.run(scenario())
    assert sink.rejections == [RejectReason.BAD_FORMAT, RejectReason.BAD_FORMAT]
    assert sink.reads[0].credential.value == "0123456789ABCDEF"


def test_a_lost_line_fails_the_readers_with_reader_error(tmp_path: Path) -> None:
    sim = OsdpSimBus()
    sim.add(1, OSDP_KEY)
    sim.start()
    bus = osdp_bus(sim.path, osdp_key_file(tmp_path))
    sink = DoorSink(set())

    async def scenario() -> None:
        task = asyncio.create_task(bus.readers[0].run(sink, lambda: None))
        await until(lambda: bus.readers[0].online, "the reader online", 10)
        sim.close()  # both ends of the pty gone: the line reports EIO
        with pytest.raises(ReaderError, match=str(sim.path)):
            await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("content", "mode", "problem"),
    [
        ("00" * 15, 0o600, "must hold 32 hex digits"),
        ("zz" * 16, 0o600, "not hexadecimal"),
        (OSDP_KEY.hex(), 0o644, "must be 0600"),
    ],
)
def test_unusable_key_files_refuse_the_line_with_a_reason(
    sim: OsdpSimBus, tmp_path: Path, content: str, mode: int, problem: str
) -> None:
    path = tmp_path / "front.key"
    path.write_text(content)
    path.chmod(mode)
    bus = osdp_bus(sim.path, path)

    async def scenario() -> ReaderError:
        with pytest.raises(ReaderError, match=problem) as caught:
            await bus.readers[0].run(DoorSink(set()), lambda: None)
        return caught.value

    error = asyncio.run(scenario())
    assert OSDP_KEY.hex() not in str(error), "a key never appears in an error"


def test_a_missing_key_file_without_install_mode_says_how_to_provision(
    sim: OsdpSimBus, tmp_path: Path
) -> None:
    bus = osdp_bus(sim.path, osdp_key_file(tmp_path, None))

    async def scenario() -> None:
        with pytest.raises(ReaderError, match="install mode"):
            await bus.readers[0].run(DoorSink(set()), lambda: None)

    asyncio.run(scenario())


def test_install_keeps_offering_the_pending_key_after_a_crash(tmp_path: Path) -> None:
    path = osdp_key_file(tmp_path, None)
    first = load_key(path, install=True)
    again = load_key(path, install=True)
    assert first.installing
    assert again.key == first.key, "a crash before the commit must not forget the offered key"
    assert stat.S_IMODE(pending_path(path).stat().st_mode) == 0o600
    assert OSDP_KEY.hex() not in repr(first)
    assert first.key.hex() not in repr(first)


def test_card_values_are_right_aligned_hex_one_digit_per_started_nibble() -> None:
    assert card_value(64, bytes.fromhex("04a1b2c3d4e5f607")) == "04A1B2C3D4E5F607"
    assert card_value(26, card_bytes(0x2ABCDEF, 26)) == "2ABCDEF"
    assert card_value(34, card_bytes(5, 34)) == "000000005"
    with pytest.raises(CredentialError):
        card_value(26, b"\x01\x02")
