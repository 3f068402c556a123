"""Reading one ID card on a SAM reader attached to the handheld, with the gateway's own driver."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from gateway.devices.protocols import CardRead, DoorSignal
from gateway.devices.sam.reader import SamCardReader
from gateway.domain.credentials import RejectReason
from gateway.domain.idcard import IdCard


class _FirstCard:
    """A `ReadSink` that keeps the first card read and says why others were refused."""

    def __init__(self) -> None:
        self.card: asyncio.Future[IdCard] = asyncio.get_running_loop().create_future()
        self.refused: list[RejectReason] = []

    def accepted(self, read: CardRead) -> None:
        if read.card is not None and not self.card.done():
            self.card.set_result(read.card)

    def rejected(self, _reader: str, _door: str, reason: RejectReason) -> None:
        self.refused.append(reason)

    def door_signal(self, _device: str, _door: str, _signal: DoorSignal) -> None:
        return None

    def device_status(self, _device: str, _door: str, _online: bool, _detail: str | None) -> None:
        return None

    def saturated(self) -> bool:
        return False


async def read_one_card(path: Path, seconds: float) -> IdCard | None:
    """The first ID card laid on the reader within `seconds`, or None."""
    sink = _FirstCard()
    reader = SamCardReader("handheld", "handheld", path)
    task = asyncio.create_task(reader.run(sink, lambda: None))
    try:
        waiting: set[asyncio.Future[Any]] = {task, sink.card}
        done, _ = await asyncio.wait(waiting, timeout=seconds, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()  # the reader failed: ReaderError with the reason
        return sink.card.result() if sink.card.done() else None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
