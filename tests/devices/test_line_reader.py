"""The line reader on a real pseudo-terminal and a real FIFO, with bad input thrown at it;
and its framing (gateway/devices/line/framing.py) table-tested."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from gateway.devices.line.framing import LineFramer
from gateway.devices.line.reader import LineReader
from gateway.domain.credentials import CredentialKind, RejectReason
from gateway.ops.status import ReaderStatus
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    enrol_cards,
    load,
    wait_until,
    write_config,
)

GOOD = "04A1B2C3D4"


def test_pty_reader_rejects_bad_input_counts_it_and_keeps_going(
    broker: LocalBroker, tmp_path: Path
) -> None:
    master, slave = os.openpty()
    slave_path = Path(os.ttyname(slave))
    config = load(write_config(tmp_path, broker.url, gateway_id="GW-PTY", reader_path=slave_path))
    enrol_cards(config, [GOOD])
    platform = Subscriber(broker.port, "rentgate/v1/GW-PTY/events", "pty-platform")
    try:
        with InProcessGateway(config) as running:
            gateway = running.gateway
            wait_until(
                lambda: all(h.online for h in gateway.doors.reader_health.values()), 5, "online"
            )
            garbage = [
                b"\x00\x01\x02\xff\n",  # binary
                b"Z" * 5000 + b"\n",  # over-long, arriving in pieces
                "卡号".encode() + b"\n",  # non-ASCII
                b"not-a-card\n",  # wrong format
                b"\n",  # empty
                b"\x1b[A\x1b[B\r\n",  # terminal escape noise
            ]
            for chunk in garbage:
                os.write(master, chunk)
            os.write(master, GOOD.encode() + b"\r\n")
            wait_until(
                lambda: gateway.doors.counters.decisions["granted"] == 1,
                10,
                "the good tap",
            )
            rejected = dict(gateway.doors.counters.rejected)
            wait_until(lambda: bool(platform.decisions()), 10, "event")
            assert len(gateway.parts.devices.locks["front"].commands) == 1
    finally:
        os.close(master)
        os.close(slave)
        platform.close()
    assert rejected == {"binary": 3, "too_long": 1, "bad_format": 1, "empty": 1}
    decisions = platform.decisions()
    assert len(decisions) == 1, "rejected input records no decision"


def test_reader_offline_until_its_device_appears_then_online(
    broker: LocalBroker, tmp_path: Path
) -> None:
    fifo = tmp_path / "late.reader"
    config = load(write_config(tmp_path, broker.url, gateway_id="GW-LATE", reader_path=fifo))
    enrol_cards(config, [GOOD])
    platform = Subscriber(broker.port, "rentgate/v1/GW-LATE/events", "late-platform")
    try:
        with InProcessGateway(config) as running:
            gateway = running.gateway

            def health() -> ReaderStatus:
                return next(iter(gateway.status().readers.values()))

            wait_until(lambda: health().error is not None, 5, "reader reported offline")
            assert not health().online
            assert "cannot open" in (health().error or "")
            os.mkfifo(fifo, 0o600)
            wait_until(lambda: health().online, 10, "reader online once the FIFO exists")
            writer = os.open(fifo, os.O_WRONLY)
            os.write(writer, GOOD.encode() + b"\n")
            os.close(writer)
            wait_until(lambda: gateway.doors.counters.decisions["granted"] == 1, 10, "tap")
            wait_until(lambda: len(platform.events()) >= 3, 10, "status and decision events")
    finally:
        platform.close()
    statuses = [e for e in platform.events() if e["type"] == "device.status"]
    assert [s["online"] for s in statuses[:2]] == [False, True]
    assert statuses[0]["error"]
    assert "cannot open" in statuses[0]["error"]


def test_a_regular_file_is_not_a_reader(broker: LocalBroker, tmp_path: Path) -> None:
    plain = tmp_path / "cards.txt"
    plain.write_text(GOOD + "\n")
    config = load(write_config(tmp_path, broker.url, gateway_id="GW-FILE", reader_path=plain))
    with InProcessGateway(config) as running:

        def error() -> str | None:
            return next(iter(running.gateway.status().readers.values())).error

        wait_until(lambda: error() is not None, 5, "refusal")
        assert "not a FIFO, pty or serial port" in (error() or "")


class CountingSink:
    """A ReadSink that counts what arrives and can claim the store is behind."""

    def __init__(self) -> None:
        self.accepted_reads = 0
        self.behind = True

    def accepted(self, read: object) -> None:
        self.accepted_reads += 1

    def rejected(self, reader: str, door: str, reason: object) -> None:
        raise AssertionError(f"unexpected rejection: {reason}")

    def saturated(self) -> bool:
        return self.behind


def test_reader_leaves_input_in_the_device_while_the_store_is_behind(tmp_path: Path) -> None:
    """Backpressure: unrecorded reads are what a crash loses, so the reader stops taking more."""
    fifo = tmp_path / "burst.reader"
    os.mkfifo(fifo, 0o600)
    sink = CountingSink()
    reader = LineReader("burst", "front", fifo, CredentialKind.CARD_UID)
    taps = [f"04{n:08X}" for n in range(200)]  # 2,200 bytes: several reads' worth

    async def scenario() -> tuple[int, int]:
        ready = asyncio.Event()
        task = asyncio.create_task(reader.run(sink, ready.set))
        await asyncio.wait_for(ready.wait(), 5)
        writer = os.open(fifo, os.O_WRONLY)
        os.write(writer, "".join(t + "\n" for t in taps).encode())
        os.close(writer)
        await asyncio.sleep(0.2)
        while_behind = sink.accepted_reads
        sink.behind = False
        for _ in range(200):
            if sink.accepted_reads == len(taps):
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return while_behind, sink.accepted_reads

    while_behind, in_the_end = asyncio.run(scenario())
    assert 0 < while_behind < len(taps), "one read taken, the rest left in the FIFO"
    assert in_the_end == len(taps), "all of it read once the store caught up"


# --- framing ---------------------------------------------------------------------------------


def frames(framer: LineFramer, *chunks: bytes) -> list[object]:
    return [frame for chunk in chunks for frame in framer.feed(chunk)]


def test_framer_splits_lines_across_chunks() -> None:
    framer = LineFramer(max_line=16)
    assert frames(framer, b"04A1", b"B2\r\n04", b"C3D4\n") == ["04A1B2", "04C3D4"]


def test_framer_rejects_binary_and_recovers() -> None:
    framer = LineFramer(max_line=16)
    assert frames(framer, b"\xff\xfe\n\x00\x01\nOK12\n") == [
        RejectReason.BINARY,
        RejectReason.BINARY,
        "OK12",
    ]


def test_framer_discards_an_over_long_line_in_bounded_memory() -> None:
    framer = LineFramer(max_line=16)
    result = frames(framer, b"A" * 10, b"B" * 10, b"C" * 5000, b"D\nAFTER1\n")
    assert result == [RejectReason.TOO_LONG, "AFTER1"]
    assert not framer.discarding
    assert frames(framer, b"X" * 40 + b"\n") == [RejectReason.TOO_LONG]
