"""One contract for every reader family (gateway/devices/protocols.py: Reader, ReadSink).

The same tests run against the line reader, the SAM ID-card reader and the OSDP reader, each on
its shipped simulator over a real pseudo-terminal:

- once its device works, a reader says so: by calling `ready()`, or by reporting
  `device_status(name, door, True, None)` (OSDP reports its own link state; either is accepted
  for every family, as that detail is about to change for OSDP);
- a valid credential reaches `accepted` with the reader's name and door, kind and value;
- garbage reaches `rejected(name, door, reason)` and the next valid read is still accepted;
- a device path that does not exist makes `run()` raise `ReaderError`, and nothing else;
- cancelling `run()` ends it promptly and closes the device: a second reader opens it again;
- `indicate(True/False)` returns at once, before, while and after the reader runs.

Where a family can show a point only in part, its rig's docstring says so and why.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.devices.line.reader import LineReader
from gateway.devices.osdp.simulator import OsdpSimBus, wiegand26
from gateway.devices.protocols import Reader, ReaderError
from gateway.devices.sam.simulator import Fault, FaultKind, SamSimulator
from gateway.domain.credentials import Credential, CredentialKind, RejectReason
from tests.support.devices import (
    OSDP_KEY,
    RecordingSink,
    id_card,
    osdp_bus,
    osdp_key_file,
    reading,
    sam_reader,
    uid,
    until,
)

PROMPT_S = 2.0
"""How soon a cancelled `run()` must have ended and closed its device (a bound, not a claim)."""
INSTANT_S = 0.5
"""How long `indicate` may take at most: it queues or does nothing, never waits on a device."""


class Rig:
    """A reader family on its simulator: `device` is what its readers open."""

    device: Path

    def reader(self, device: Path | None = None) -> Reader:
        raise NotImplementedError

    async def present(self, serial: int) -> Credential:
        """Present the valid credential numbered `serial`; the credential a reader must read."""
        raise NotImplementedError

    async def garble(self) -> RejectReason:
        """Send what is no credential; the reason a reader must reject it with."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class LineRig(Rig):
    """The line reader on a pseudo-terminal: one card serial a line, as a serial reader prints.

    `indicate` is documented to do nothing (no LED or buzzer on a plain line): the contract can
    only show that it returns at once and leaves reading undisturbed.
    """

    def __init__(self, _directory: Path) -> None:
        self._master, self._slave = os.openpty()
        self.device = Path(os.ttyname(self._slave))

    def reader(self, device: Path | None = None) -> Reader:
        return LineReader("front-line", "front", device or self.device, CredentialKind.CARD_UID)

    async def present(self, serial: int) -> Credential:
        value = f"04{serial:08X}"
        os.write(self._master, value.encode() + b"\r\n")
        return Credential(CredentialKind.CARD_UID, value)

    async def garble(self) -> RejectReason:
        os.write(self._master, b"\x00\x13\xaa\x55\xff\r\n")  # line noise
        return RejectReason.BINARY

    def close(self) -> None:
        os.close(self._master)
        os.close(self._slave)


class SamRig(Rig):
    """The SAM ID-card reader against its simulator; garbage is line noise before a reply.

    `indicate` is documented to do nothing (no LED protocol one can rely on), as for the line.
    """

    def __init__(self, _directory: Path) -> None:
        self.sim = SamSimulator().start()
        self.device = self.sim.path

    def reader(self, device: Path | None = None) -> Reader:
        return sam_reader(device or self.device)

    async def present(self, serial: int) -> Credential:
        sim = self.sim
        sim.remove()  # a card is read once per presentation: the field must be seen empty first
        empty = sim.replies["find_no_card"]
        await until(lambda: sim.replies["find_no_card"] >= empty + 2, "the field seen empty")
        card = id_card(seed=serial)
        sim.present(card)
        return Credential(CredentialKind.ID_NUMBER, card.id_number)

    async def garble(self) -> RejectReason:
        self.sim.inject(Fault(FaultKind.GARBAGE))  # noise before whatever reply comes next
        return RejectReason.FRAME_ERROR

    def close(self) -> None:
        self.sim.stop()


class OsdpRig(Rig):
    """An OSDP reader (a libosdp peripheral on the simulated bus), secure channel on.

    Garbage on the wire cannot reach the sink: libosdp's control panel drops bytes that are no
    valid packet and asks again, so no reader ever sees them. What an OSDP reader can be sent
    that is no credential is card data that is no card serial (8 bits: two hex digits), and
    that is what this rig sends.

    `ready()` comes as soon as the line is open, before the reader has answered; the link
    coming up is reported as `device_status(name, door, True, None)`. The contract takes either,
    so for OSDP "the device works" is first shown by the read that follows.
    """

    def __init__(self, directory: Path) -> None:
        self.sim = OsdpSimBus()
        self.pd = self.sim.add(1, OSDP_KEY)
        self.sim.start()
        self.device = self.sim.path
        self._key = osdp_key_file(directory)

    def reader(self, device: Path | None = None) -> Reader:
        return osdp_bus(device or self.device, self._key).readers[0]

    async def present(self, serial: int) -> Credential:
        value = wiegand26(12, serial)
        self.pd.present_card(value, 26)
        return Credential(CredentialKind.CARD_UID, uid(value))

    async def garble(self) -> RejectReason:
        self.pd.present_card(0xAB, 8)
        return RejectReason.BAD_FORMAT

    def close(self) -> None:
        self.sim.close()


RIGS = {"line": LineRig, "sam": SamRig, "osdp": OsdpRig}


@pytest.fixture(params=sorted(RIGS))
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    made: Rig = RIGS[request.param](tmp_path)
    try:
        yield made
    finally:
        made.close()


def working(sink: RecordingSink, reader: Reader) -> bool:
    """Whether `reader` said its device works, in either of the ways the contract allows."""
    return sink.ready_calls > 0 or (reader.name, reader.door, True, None) in sink.statuses


def read_of(sink: RecordingSink, credential: Credential) -> bool:
    return any(read.credential == credential for read in sink.reads)


def holders(device: Path) -> int:
    """How many of this process's descriptors have `device` open."""
    target = os.stat(device)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            held = os.stat(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the descriptor listdir itself used, closed by now
        count += (held.st_dev, held.st_ino) == (target.st_dev, target.st_ino)
    return count


def indicate_at_once(reader: Reader) -> None:
    for allowed in (True, False):
        started = time.monotonic()
        reader.indicate(allowed)
        took = time.monotonic() - started
        assert took < INSTANT_S, f"indicate({allowed}) took {took:.3f} s"


def test_a_working_device_is_reported(rig: Rig) -> None:
    reader = rig.reader()
    sink = RecordingSink()

    async def scenario() -> None:
        async with reading([reader], sink, sink.ready):
            await until(lambda: working(sink, reader), "the reader to say its device works")

    asyncio.run(scenario())
    for name, door, online, detail in sink.statuses:
        assert (name, door) == (reader.name, reader.door)
        assert online is (detail is None), "a status names a reason exactly when offline"


def test_a_valid_credential_is_accepted_with_the_readers_name_and_door(rig: Rig) -> None:
    reader = rig.reader()
    sink = RecordingSink()

    async def scenario() -> Credential:
        async with reading([reader], sink, sink.ready):
            await until(lambda: working(sink, reader), "the device working")
            credential = await rig.present(1)
            await until(lambda: read_of(sink, credential), "the read")
        return credential

    credential = asyncio.run(scenario())
    read = next(read for read in sink.reads if read.credential == credential)
    assert (read.reader, read.door) == (reader.name, reader.door)
    assert read.credential.kind is credential.kind
    assert read.credential.value == credential.value
    assert 0 < read.read_at <= time.perf_counter()
    assert sink.sources() == {(reader.name, reader.door)}
    assert sink.rejected_by == []


def test_garbage_is_rejected_and_the_next_valid_read_accepted(rig: Rig) -> None:
    reader = rig.reader()
    sink = RecordingSink()

    async def scenario() -> tuple[RejectReason, Credential]:
        async with reading([reader], sink, sink.ready):
            await until(lambda: working(sink, reader), "the device working")
            reason = await rig.garble()
            await until(lambda: bool(sink.rejected_by), "the garbage rejected")
            credential = await rig.present(2)
            await until(lambda: read_of(sink, credential), "the next valid read")
        return reason, credential

    reason, credential = asyncio.run(scenario())
    assert sink.rejected_by[0] == (reader.name, reader.door, reason)
    assert set(sink.rejected_by) == {(reader.name, reader.door, reason)}
    assert sink.reads[-1].credential == credential


def test_a_device_that_does_not_exist_raises_reader_error(rig: Rig, tmp_path: Path) -> None:
    reader = rig.reader(tmp_path / "no-such-device")
    sink = RecordingSink()

    async def scenario() -> None:
        await asyncio.wait_for(reader.run(sink, sink.ready), PROMPT_S)

    with pytest.raises(ReaderError):
        asyncio.run(scenario())
    assert sink.ready_calls == 0
    assert not any(online for _, _, online, _ in sink.statuses)


def test_cancelling_run_ends_it_promptly_and_frees_the_device(rig: Rig) -> None:
    held_before = holders(rig.device)
    first, second = rig.reader(), rig.reader()
    sink, again = RecordingSink(), RecordingSink()

    async def scenario() -> tuple[float, int, Credential]:
        task = asyncio.create_task(first.run(sink, sink.ready))
        await until(lambda: working(sink, first), "the device working")
        assert holders(rig.device) == held_before + 1, "the reader holds its device open"
        started = time.monotonic()
        task.cancel()
        await asyncio.wait({task}, timeout=PROMPT_S)
        took = time.monotonic() - started
        assert task.done(), f"run() still going {PROMPT_S} s after it was cancelled"
        with pytest.raises(asyncio.CancelledError):
            task.result()
        held_after = holders(rig.device)
        async with reading([second], again, again.ready):
            await until(lambda: working(again, second), "a second reader working")
            credential = await rig.present(3)
            await until(lambda: read_of(again, credential), "a read by the second reader")
        return took, held_after, credential

    took, held_after, credential = asyncio.run(scenario())
    assert took < PROMPT_S
    assert held_after == held_before, "the device was closed"
    assert again.reads[-1].credential == credential


def test_indicate_never_raises_or_blocks(rig: Rig) -> None:
    reader = rig.reader()
    sink = RecordingSink()
    indicate_at_once(reader)  # before its device is open

    async def scenario() -> Credential:
        async with reading([reader], sink, sink.ready):
            await until(lambda: working(sink, reader), "the device working")
            indicate_at_once(reader)
            credential = await rig.present(4)
            await until(lambda: read_of(sink, credential), "a read after the feedback")
            indicate_at_once(reader)
        return credential

    credential = asyncio.run(scenario())
    indicate_at_once(reader)  # after its device was closed
    assert sink.reads[-1].credential == credential
