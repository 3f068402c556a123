"""Reader drivers under test: a sink that records what a reader reports, running readers for
the length of a block, bounded waits, and the set-up of the shipped simulators (the SAM ID-card
reader's and OSDP readers')."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date
from pathlib import Path

from gateway.devices.osdp.keys import write_key
from gateway.devices.osdp.reader import OsdpBus, OsdpDeviceConfig, OutputMode, card_value
from gateway.devices.osdp.simulator import card_bytes
from gateway.devices.protocols import CardRead, DoorSignal, Reader, ReadSink
from gateway.devices.sam.reader import SamCardReader
from gateway.devices.sam.simulator import make_card
from gateway.domain.credentials import RejectReason
from gateway.domain.idcard import CardKind, IdCard

WAIT_S = 15.0
"""Bound on any wait: generous, for a shared machine; never a performance claim."""


class RecordingSink:
    """A `ReadSink` that keeps everything a reader reports; it can claim the store is behind."""

    def __init__(self) -> None:
        self.reads: list[CardRead] = []
        self.rejected_by: list[tuple[str, str, RejectReason]] = []
        """(reader, door, reason) of every rejection, in order."""
        self.signals: list[tuple[str, str, DoorSignal]] = []
        self.statuses: list[tuple[str, str, bool, str | None]] = []
        self.ready_calls = 0
        self.behind = False

    @property
    def rejections(self) -> list[RejectReason]:
        return [reason for _, _, reason in self.rejected_by]

    def sources(self) -> set[tuple[str, str]]:
        """Every (reader, door) that reported a read or a rejection here."""
        return {(r.reader, r.door) for r in self.reads} | {(r, d) for r, d, _ in self.rejected_by}

    def ready(self) -> None:
        """The `ready` callback a reader's `run` is given."""
        self.ready_calls += 1

    def accepted(self, read: CardRead) -> None:
        self.reads.append(read)

    def rejected(self, reader: str, door: str, reason: RejectReason) -> None:
        self.rejected_by.append((reader, door, reason))

    def door_signal(self, device: str, door: str, signal: DoorSignal) -> None:
        self.signals.append((device, door, signal))

    def device_status(self, device: str, door: str, online: bool, detail: str | None) -> None:
        self.statuses.append((device, door, online, detail))

    def saturated(self) -> bool:
        return self.behind


async def until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll `predicate` on the running loop until it holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def reading(
    readers: Sequence[Reader], sink: ReadSink, ready: Callable[[], None] = lambda: None
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run `readers` while the block runs, then cancel them.

    A reader that stopped by itself meanwhile fails the test with its own error, and so does
    one that does not end by raising `CancelledError` when cancelled.
    """
    tasks = [asyncio.create_task(reader.run(sink, ready)) for reader in readers]
    try:
        yield tasks
    finally:
        ended = [task.done() for task in tasks]
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for task, stopped, outcome in zip(tasks, ended, outcomes, strict=True):
        if stopped:
            task.result()  # the reader's own error
            raise AssertionError("a reader stopped by itself")
        assert isinstance(outcome, asyncio.CancelledError), f"cancelled, it ended: {outcome!r}"


# --- the SAM ID-card reader ----------------------------------------------------------------


def sam_reader(path: Path) -> SamCardReader:
    """The ID-card reader `desk` at door `front`, polling quickly."""
    return SamCardReader("desk", "front", path, poll_interval=0.02, timeout=1.0, read_timeout=1.0)


def id_card(kind: CardKind = CardKind.RESIDENT, seed: int = 1) -> IdCard:
    """A plausible card, the same for the same seed, valid on 1 June 2026."""
    return make_card(random.Random(seed), kind, date(2026, 6, 1))


# --- OSDP readers --------------------------------------------------------------------------

OSDP_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
"""The secure-channel key the readers in these tests share with the gateway."""
OSDP_BAUD = 115200


def osdp_key_file(directory: Path, key: bytes | None = OSDP_KEY, name: str = "front.key") -> Path:
    """A key file holding `key` (0600); with `key=None` only its path (install mode makes it)."""
    path = directory / name
    if key is not None:
        write_key(path, key)
    return path


def osdp_bus(
    device: Path,
    key_file: Path,
    *,
    install: bool = False,
    output_mode: OutputMode = OutputMode.PULSE,
) -> OsdpBus:
    """An OSDP line on `device` with one reader, `front-osdp` at door `front`, address 1."""
    config = OsdpDeviceConfig(
        "front-osdp", "front", 1, key_file, install=install, output_mode=output_mode
    )
    return OsdpBus(device, OSDP_BAUD, [config])


def uid(value: int, bits: int = 26) -> str:
    """The card_uid the gateway makes of a card's raw bits."""
    return card_value(bits, card_bytes(value, bits))
