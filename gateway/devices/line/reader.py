"""The `line` reader: newline-delimited credential values from a FIFO, pty or serial port.

This is how keyboard-wedge readers (through a small bridge), serial readers
that print card numbers, and the simulator are attached. The device is opened
read-write and non-blocking: read-write so that a FIFO never reports EOF when
its writer goes away, non-blocking so the event loop watches it with
`add_reader` instead of parking a thread on it. A terminal device (pty, serial
port) is put into raw mode at the configured speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from gateway.devices.line.framing import LineFramer
from gateway.devices.protocols import CardRead, ReaderError, ReadSink
from gateway.devices.serial_port import SUPPORTED_BAUD, open_line_device
from gateway.domain.credentials import (
    MAX_CREDENTIAL_LENGTH,
    CredentialError,
    CredentialKind,
    RejectReason,
    parse_credential,
)

log = logging.getLogger(__name__)

_RESUME_CHECK_S = 0.001
_READ_CHUNK = 512
"""Small reads leave a backlog in the kernel's buffer, where a crash cannot lose it:
only what was read and not yet committed (a few ms of taps) is at risk."""


class LineReader:
    """A `Reader` for newline-delimited values of one credential kind."""

    def __init__(
        self,
        name: str,
        door: str,
        path: Path,
        kind: CredentialKind,
        *,
        baud: int | None = None,
        max_line: int = MAX_CREDENTIAL_LENGTH,
    ) -> None:
        if baud is not None and baud not in SUPPORTED_BAUD:
            raise ValueError(f"unsupported baud rate {baud}")
        self.name = name
        self.door = door
        self._path = path
        self._kind = kind
        self._baud = baud
        self._max_line = max_line

    def indicate(self, allowed: bool) -> None:
        """A plain line reader has no LED or buzzer to drive."""

    async def run(self, sink: ReadSink, ready: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        fd = open_line_device(self._path, self._baud)
        framer = LineFramer(self._max_line)
        failed: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                # EIO: the other end of a pty went away; anything else is a device fault.
                if not failed.done():
                    failed.set_exception(
                        ReaderError(f"{self._path}: {os.strerror(exc.errno or errno.EIO)}")
                    )
                loop.remove_reader(fd)
                return
            if not chunk:
                if not failed.done():
                    failed.set_exception(ReaderError(f"{self._path}: end of input"))
                loop.remove_reader(fd)
                return
            self._deliver(framer, chunk, sink)
            if sink.saturated():
                loop.remove_reader(fd)
                loop.call_later(_RESUME_CHECK_S, resume)

        def resume() -> None:
            if failed.done():
                return
            if sink.saturated():
                loop.call_later(_RESUME_CHECK_S, resume)
            else:
                loop.add_reader(fd, readable)

        loop.add_reader(fd, readable)
        ready()
        log.info("reader %s listening on %s for door %s", self.name, self._path, self.door)
        try:
            await failed
        finally:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(fd)
            os.close(fd)

    def _deliver(self, framer: LineFramer, chunk: bytes, sink: ReadSink) -> None:
        for frame in framer.feed(chunk):
            if isinstance(frame, RejectReason):
                sink.rejected(self.name, self.door, frame)
                continue
            try:
                credential = parse_credential(self._kind, frame)
            except CredentialError as exc:
                sink.rejected(self.name, self.door, exc.reason)
                continue
            sink.accepted(CardRead(self.name, self.door, credential, time.perf_counter()))
