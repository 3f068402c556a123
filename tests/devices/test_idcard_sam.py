"""The SAM card reader driver on real pseudo-terminals: against the simulator, and replaying
recorded conversations (tests/devices/data/sam/*.hex) through a peer that checks every command."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import select
import threading
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path

import pytest

from gateway.devices.protocols import ReaderError
from gateway.devices.sam.frames import SamCommand, SamReason
from gateway.devices.sam.reader import SamCardReader, reject_reason
from gateway.devices.sam.simulator import Fault, FaultKind, SamSimulator
from gateway.domain.credentials import CredentialKind, RejectReason
from gateway.domain.idcard import CardKind, IdCard
from tests.support.devices import WAIT_S, RecordingSink, id_card, reading, sam_reader, until

DATA = Path(__file__).resolve().parent / "data" / "sam"
NO_CARD = bytes.fromhex("aaaaaa9669 0004 000080 84")
FIND = bytes.fromhex("aaaaaa9669 0003 2001 22")


def drive(
    path: Path,
    scenario: Callable[[SamCardReader, RecordingSink], Awaitable[None]],
    sink: RecordingSink | None = None,
) -> tuple[SamCardReader, RecordingSink]:
    """Run the reader on `path` while `scenario` acts; then stop it (it must not have failed)."""
    reader = sam_reader(path)
    sink = sink or RecordingSink()

    async def main() -> None:
        async with reading([reader], sink, sink.ready):
            await until(lambda: sink.ready_calls > 0, "the device open")
            await scenario(reader, sink)

    asyncio.run(main())
    assert sink.sources() <= {("desk", "front")}
    assert sink.signals == [], "an ID-card reader has no door inputs"
    assert sink.statuses == [], "nor a link state of its own"
    return reader, sink


# --- against the simulator -----------------------------------------------------------------


def test_a_card_is_read_once_and_again_only_after_it_left_the_field() -> None:
    person = id_card()
    with SamSimulator() as sim:

        async def scenario(reader: SamCardReader, sink: RecordingSink) -> None:
            sim.present(person)
            await until(lambda: len(sink.reads) == 1, "the first read")
            polls = sim.replies["find_found"]
            await until(lambda: sim.replies["find_found"] >= polls + 10, "ten more polls")
            assert len(sink.reads) == 1, "not read again while it stays"
            empty = sim.replies["find_no_card"]
            sim.remove()
            await until(lambda: sim.replies["find_no_card"] >= empty + 2, "the field seen empty")
            sim.present(person)
            await until(lambda: len(sink.reads) == 2, "the second read")

        reader, sink = drive(sim.path, scenario)
    first = sink.reads[0]
    assert (first.reader, first.door) == ("desk", "front")
    assert first.credential.kind is CredentialKind.ID_NUMBER
    assert first.credential.value == person.id_number
    assert first.card == person, "every field and the photo blob, as on the chip"
    assert sim.replies["read"] == 2
    assert sink.rejections == []
    assert reader.errors == {}


def test_a_hong_kong_permit_opens_by_its_id_like_number() -> None:
    permit = id_card(CardKind.HMT_PERMIT, seed=5)
    assert permit.id_number[:2] in {"81", "82", "83"}
    with SamSimulator() as sim:

        async def scenario(reader: SamCardReader, sink: RecordingSink) -> None:
            sim.present(permit)
            await until(lambda: len(sink.reads) == 1, "the read")

        _, sink = drive(sim.path, scenario)
    read = sink.reads[0]
    assert read.credential.value == permit.id_number
    assert read.card is not None
    assert read.card.pass_number == permit.pass_number


def test_a_foreigners_card_is_refused_once_per_presentation() -> None:
    with SamSimulator() as sim:

        async def scenario(reader: SamCardReader, sink: RecordingSink) -> None:
            sim.present(id_card(CardKind.FOREIGNER, seed=3))
            await until(lambda: sink.rejections != [], "the refusal")
            polls = sim.replies["find_found"]
            await until(lambda: sim.replies["find_found"] >= polls + 5, "more polls")

        reader, sink = drive(sim.path, scenario)
    assert sink.reads == []
    assert sink.rejections == [RejectReason.UNSUPPORTED_CARD]
    assert reader.errors == {"unsupported_card": 1}
    assert sim.replies["read"] == 1


@pytest.mark.parametrize(
    ("fault", "reason", "rejected"),
    [
        (
            Fault(FaultKind.BAD_CHECKSUM, SamCommand.READ_BASE),
            "bad_checksum",
            RejectReason.FRAME_ERROR,
        ),
        (Fault(FaultKind.TRUNCATE, SamCommand.READ_BASE), "truncated", RejectReason.FRAME_ERROR),
        (Fault(FaultKind.TRUNCATE, SamCommand.FIND, keep=6), "truncated", RejectReason.FRAME_ERROR),
        (
            Fault(FaultKind.STATUS, SamCommand.READ_BASE),
            "read_failed",
            RejectReason.CARD_READ_FAILED,
        ),
        (
            Fault(FaultKind.STATUS, SamCommand.SELECT, 0x81),
            "select_failed",
            RejectReason.CARD_READ_FAILED,
        ),
        (
            Fault(FaultKind.STATUS, SamCommand.READ_BASE, 0x32),
            "sam_auth_failed",
            RejectReason.CARD_NOT_GENUINE,
        ),
        (Fault(FaultKind.GARBAGE, SamCommand.READ_BASE), "bad_preamble", RejectReason.FRAME_ERROR),
        (Fault(FaultKind.SILENCE, SamCommand.SELECT), "timeout", None),
    ],
)
def test_a_fault_is_counted_rejected_and_the_card_still_read(
    fault: Fault, reason: str, rejected: RejectReason | None
) -> None:
    person = id_card(seed=2)
    with SamSimulator() as sim:
        sim.inject(fault)
        sim.present(person)

        async def scenario(reader: SamCardReader, sink: RecordingSink) -> None:
            await until(lambda: len(sink.reads) == 1, "the read")

        reader, sink = drive(sim.path, scenario)
    assert reader.errors == {reason: 1}
    assert sink.rejections == ([rejected] if rejected else [])
    assert sink.reads[0].card == person


def test_after_three_failed_reads_the_card_must_leave_first() -> None:
    person = id_card(seed=4)
    with SamSimulator() as sim:
        sim.inject(Fault(FaultKind.STATUS, SamCommand.READ_BASE, 0x41), times=3)

        async def scenario(reader: SamCardReader, sink: RecordingSink) -> None:
            sim.present(person)
            await until(lambda: len(sink.rejections) == 3, "three refusals")
            polls = sim.replies["find_found"]
            await until(lambda: sim.replies["find_found"] >= polls + 10, "ten more polls")
            assert sim.replies["status_41"] == 3, "no fourth try while the card stays"
            assert sink.reads == []
            empty = sim.replies["find_no_card"]
            sim.remove()
            await until(lambda: sim.replies["find_no_card"] >= empty + 2, "the field seen empty")
            sim.present(person)
            await until(lambda: len(sink.reads) == 1, "the read")

        reader, _ = drive(sim.path, scenario)
    assert reader.errors == {"read_failed": 3}


def test_a_card_with_a_bad_id_number_is_refused_once() -> None:
    person = id_card(seed=6)
    bad = person.id_number[:17] + ("0" if person.id_number[17] != "0" else "1")
    forged = dataclasses.replace(person, id_number=bad)
    with SamSimulator() as sim:

        async def scenario(reader: SamCardReader, sink: RecordingSink) -> None:
            sim.present(forged)
            await until(lambda: sink.rejections != [], "the refusal")
            polls = sim.replies["find_found"]
            await until(lambda: sim.replies["find_found"] >= polls + 5, "more polls")

        reader, sink = drive(sim.path, scenario)
    assert sink.rejections == [RejectReason.BAD_CHECK]
    assert reader.errors == {"bad_id_check": 1}


def test_a_silent_device_raises_reader_error() -> None:
    with SamSimulator() as sim:
        reader = sam_reader(sim.path)
        sim.silence()
        sink = RecordingSink()
        opened: list[bool] = []
        with pytest.raises(ReaderError, match="timeout"):
            asyncio.run(asyncio.wait_for(reader.run(sink, lambda: opened.append(True)), WAIT_S))
    assert opened == [True]
    assert reader.errors == {"timeout": 3}
    assert sink.rejections == [], "silence is not input to reject"


def test_a_reader_whose_line_goes_away_raises_reader_error() -> None:
    sim = SamSimulator().start()
    reader = sam_reader(sim.path)

    async def main() -> None:
        task = asyncio.create_task(reader.run(RecordingSink(), lambda: None))
        await until(lambda: sim.replies["find_no_card"] >= 1, "a poll")
        sim.stop()  # closes both ends: the device is gone
        await asyncio.wait_for(task, WAIT_S)

    with pytest.raises(ReaderError):
        asyncio.run(main())


def test_a_missing_device_or_bad_speed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="cannot open"):
        asyncio.run(sam_reader(tmp_path / "ttyNONE").run(RecordingSink(), lambda: None))
    with pytest.raises(ValueError, match="baud"):
        SamCardReader("desk", "front", tmp_path, baud=12345)


def test_no_card_is_read_while_the_store_is_behind() -> None:
    person = id_card(seed=8)
    with SamSimulator() as sim:
        sim.present(person)

        async def scenario(reader: SamCardReader, sink: RecordingSink) -> None:
            await asyncio.sleep(0.3)  # fifteen poll intervals
            assert sim.replies.total() == 0, "the card waits in the field"
            sink.behind = False
            await until(lambda: len(sink.reads) == 1, "the read once the store caught up")

        behind = RecordingSink()
        behind.behind = True
        drive(sim.path, scenario, behind)


def test_logs_never_carry_the_name_or_the_full_id_number(caplog: pytest.LogCaptureFixture) -> None:
    person = id_card(seed=9)
    caplog.set_level(logging.DEBUG)
    with SamSimulator() as sim:
        sim.inject(Fault(FaultKind.BAD_CHECKSUM, SamCommand.READ_BASE))
        sim.present(person)

        async def scenario(reader: SamCardReader, sink: RecordingSink) -> None:
            await until(lambda: len(sink.reads) == 1, "the read")

        drive(sim.path, scenario)
    assert "read resident card" in caplog.text
    assert person.masked_id in caplog.text
    assert person.id_number not in caplog.text
    assert person.name not in caplog.text


def test_the_simulator_answers_bad_commands_like_a_reader() -> None:
    with SamSimulator() as sim:
        fd = os.open(sim.path, os.O_RDWR | os.O_NOCTTY)
        try:
            answers = []
            for command in (
                bytes.fromhex("aaaaaa9669 0003 2001 23"),  # find, wrong checksum
                bytes.fromhex("aaaaaa9669 0003 4001 42"),  # no such command
                FIND,
            ):
                os.write(fd, command)
                readable, _, _ = select.select([fd], [], [], WAIT_S)
                assert readable, "the simulator did not answer"
                answers.append(os.read(fd, 64))
        finally:
            os.close(fd)
    assert answers == [
        bytes.fromhex("aaaaaa9669 0004 000010 14"),
        bytes.fromhex("aaaaaa9669 0004 000021 25"),
        NO_CARD,
    ]


def test_indicate_does_nothing_and_says_so() -> None:
    reader = SamCardReader("desk", "front", Path("/dev/null"))
    reader.indicate(True)  # no LED protocol to rely on: must simply not fail
    reader.indicate(False)
    assert (reader.name, reader.door) == ("desk", "front")


# --- replaying recorded conversations ------------------------------------------------------


def load_transcript(path: Path) -> list[tuple[bytes, bytes]]:
    """(command, reply) pairs from a `>`/`<` hex transcript."""
    exchanges: list[tuple[bytes, bytes]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        mark, hexes = line[0], bytes.fromhex(line[1:])
        if mark == ">":
            exchanges.append((hexes, b""))
        else:
            command, reply = exchanges[-1]
            exchanges[-1] = (command, reply + hexes)
    return exchanges


class ReplayPeer:
    """The reader's side of a pty, answering from a transcript and checking each command."""

    def __init__(self, exchanges: list[tuple[bytes, bytes]]) -> None:
        self.exchanges = list(exchanges)
        self.master, self.slave = os.openpty()
        self.path = Path(os.ttyname(self.slave))
        self.mismatch: bytes | None = None
        self.empty_answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        pending = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            pending += os.read(self.master, 4096)
            while len(pending) >= len(FIND):  # every command we send is 10 bytes
                command, pending = pending[: len(FIND)], pending[len(FIND) :]
                if self.exchanges:
                    expected, reply = self.exchanges.pop(0)
                    if command != expected:
                        self.mismatch = command
                        return
                    os.write(self.master, reply)
                elif command == FIND:
                    os.write(self.master, NO_CARD)
                    self.empty_answers += 1
                else:
                    self.mismatch = command
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)
        os.close(self.slave)


def replay(name: str) -> tuple[SamCardReader, RecordingSink]:
    peer = ReplayPeer(load_transcript(DATA / f"{name}.hex"))
    try:

        async def scenario(reader: SamCardReader, sink: RecordingSink) -> None:
            await until(lambda: peer.empty_answers >= 2 or peer.mismatch is not None, "the end")

        result = drive(peer.path, scenario)
    finally:
        peer.close()
    assert peer.mismatch is None, f"unexpected command {peer.mismatch!r}"
    assert peer.exchanges == []
    return result


def test_replay_resident_card() -> None:
    _, sink = replay("resident")
    assert sink.rejections == []
    read = sink.reads[0]
    assert read.credential.value == "330106199003071236"
    assert read.card == IdCard(
        kind=CardKind.RESIDENT,
        name="张伟",
        sex="男",
        ethnicity="汉",
        birth_date=date(1990, 3, 7),
        address="浙江省杭州市西湖区文三路398号5幢302室",
        id_number="330106199003071236",
        issuing_authority="杭州市公安局西湖分局",
        valid_from=date(2015, 6, 1),
        valid_to=date(2035, 6, 1),
        photo=read.card.photo if read.card else b"",
    )
    assert read.card is not None
    assert len(read.card.photo) == 1024


def test_replay_card_valid_for_life() -> None:
    _, sink = replay("resident_permanent")
    card = sink.reads[0].card
    assert card is not None
    assert (card.name, card.sex, card.ethnicity, card.valid_to) == ("李秀英", "女", "回", None)
    assert card.valid_from == date(2012, 4, 15)


def test_replay_hong_kong_permit() -> None:
    _, sink = replay("hmt_permit")
    read = sink.reads[0]
    assert read.credential.value == "810000198507011233"
    assert read.card is not None
    assert read.card.kind is CardKind.HMT_PERMIT
    assert (read.card.pass_number, read.card.ethnicity) == ("H12345678", "")
    assert read.card.valid_to == date(2027, 9, 1)


@pytest.mark.parametrize(
    ("name", "errors", "rejections", "reads"),
    [
        ("foreigner", {"unsupported_card": 1}, [RejectReason.UNSUPPORTED_CARD], 0),
        ("bad_id_check", {"bad_id_check": 1}, [RejectReason.BAD_CHECK], 0),
        ("bad_checksum", {"bad_checksum": 1}, [RejectReason.FRAME_ERROR], 0),
        ("truncated", {"truncated": 1}, [RejectReason.FRAME_ERROR], 0),
        ("garbage_before", {"bad_preamble": 1}, [RejectReason.FRAME_ERROR], 1),
        ("status_80", {}, [], 0),
    ],
)
def test_replay_bad_input(
    name: str, errors: dict[str, int], rejections: list[RejectReason], reads: int
) -> None:
    reader, sink = replay(name)
    assert reader.errors == errors
    assert sink.rejections == rejections
    assert len(sink.reads) == reads


STATUSES = {
    "10": SamReason.DEVICE_CHECKSUM_ERROR,
    "11": SamReason.DEVICE_LENGTH_ERROR,
    "21": SamReason.DEVICE_COMMAND_ERROR,
    "23": SamReason.UNAUTHORIZED,
    "24": SamReason.UNRECOGNISED_ERROR,
    "31": SamReason.CARD_AUTH_FAILED,
    "32": SamReason.SAM_AUTH_FAILED,
    "33": SamReason.VERIFY_FAILED,
    "40": SamReason.UNKNOWN_CARD_TYPE,
    "41": SamReason.READ_FAILED,
    "47": SamReason.RANDOM_FAILED,
    "5a": SamReason.UNKNOWN_STATUS,
    "60": SamReason.SAM_SELF_TEST_FAILED,
    "66": SamReason.SAM_UNAUTHORIZED,
    "81": SamReason.SELECT_FAILED,
    "91": SamReason.NO_CONTENT,
}


def test_every_status_fixture_is_replayed() -> None:
    on_disk = {p.stem.removeprefix("status_") for p in DATA.glob("status_*.hex")}
    assert on_disk == {*STATUSES, "80"}


@pytest.mark.parametrize("code", sorted(STATUSES))
def test_replay_error_status(code: str) -> None:
    reader, sink = replay(f"status_{code}")
    assert reader.errors == {STATUSES[code].value: 1}
    assert sink.rejections == [reject_reason(STATUSES[code])]
    assert sink.rejections != [RejectReason.BAD_FORMAT]
    assert sink.reads == []
