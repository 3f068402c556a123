"""The ID-card reader with a SAM module, on a serial port: find, select, read, decide.

The reader only speaks when spoken to, so the driver polls find-card at a
modest interval (each poll is a 10-byte write and a 15-byte reply: idle cost is
a few wake-ups a second). A card found is selected and read once; the same
card is not read again until find has reported an empty field twice in a row
(some readers miss a card that is still there for one poll after a read).

Credentials: resident cards and Hong Kong/Macao/Taiwan residence permits
carry an 18-character ID number and become `CredentialKind.ID_NUMBER`. A
foreigner's permanent residence card carries a 15-character permit number that
is no ID number and there is no credential kind for it yet: it is rejected
(`unsupported_card`), unless it is a newer 18-character number that passes the
ID number check. These readers have no LED or buzzer protocol to rely on, so
`indicate` does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import termios
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from gateway.devices.protocols import CardRead, ReaderError, ReadSink
from gateway.devices.sam.frames import (
    FOUND,
    NO_CARD,
    OK,
    Frame,
    FrameDecoder,
    Reply,
    SamCommand,
    SamError,
    SamReason,
    SamRejection,
    encode_command,
    parse_base_info,
)
from gateway.devices.serial_port import SUPPORTED_BAUD, open_line_device
from gateway.domain.credentials import Credential, CredentialKind, RejectReason
from gateway.domain.idcard import CardKind, IdCard
from gateway.domain.ids import IdNumber

log = logging.getLogger(__name__)

_READ_CHUNK = 4096
DEFAULT_POLL_S = 0.25
"""Find-card every 250 ms: a card is noticed within a quarter second, and four idle readers
cost 16 small round trips a second."""

REJECT_REASONS: dict[SamReason, RejectReason] = {
    SamReason.BAD_PREAMBLE: RejectReason.FRAME_ERROR,
    SamReason.BAD_LENGTH: RejectReason.FRAME_ERROR,
    SamReason.BAD_CHECKSUM: RejectReason.FRAME_ERROR,
    SamReason.TRUNCATED: RejectReason.FRAME_ERROR,
    SamReason.OVERSIZED: RejectReason.FRAME_ERROR,
    SamReason.SELECT_FAILED: RejectReason.CARD_READ_FAILED,
    SamReason.READ_FAILED: RejectReason.CARD_READ_FAILED,
    SamReason.RANDOM_FAILED: RejectReason.CARD_READ_FAILED,
    SamReason.UNKNOWN_CARD_TYPE: RejectReason.CARD_READ_FAILED,
    SamReason.CARD_AUTH_FAILED: RejectReason.CARD_NOT_GENUINE,
    SamReason.SAM_AUTH_FAILED: RejectReason.CARD_NOT_GENUINE,
    SamReason.VERIFY_FAILED: RejectReason.CARD_NOT_GENUINE,
    SamReason.UNSUPPORTED_CARD: RejectReason.UNSUPPORTED_CARD,
    SamReason.UNKNOWN_CARD_KIND: RejectReason.UNSUPPORTED_CARD,
    SamReason.BAD_ID_CHECK: RejectReason.BAD_CHECK,
    SamReason.BAD_TEXT: RejectReason.BINARY,
}
"""The shared reason (what status and metrics group by) for each of ours; the reader's own
`errors` counter keeps the fine-grained one. Everything else is the device's fault."""

_NO_ANSWER = frozenset({SamReason.TIMEOUT, SamReason.TRUNCATED})
_DEVICE_FAULTS = frozenset({SamReason.SAM_SELF_TEST_FAILED, SamReason.SAM_UNAUTHORIZED})
_CARD_CONTENT = frozenset(
    {
        SamReason.BAD_TEXT,
        SamReason.BAD_FIELD,
        SamReason.BAD_ID_NUMBER,
        SamReason.BAD_ID_CHECK,
        SamReason.UNKNOWN_CARD_KIND,
        SamReason.UNSUPPORTED_CARD,
    }
)
"""Reading the card again gives the same answer: one rejection per presentation."""


def reject_reason(reason: SamReason) -> RejectReason:
    if reason in (SamReason.BAD_FIELD, SamReason.BAD_ID_NUMBER):
        return RejectReason.BAD_FORMAT
    return REJECT_REASONS.get(reason, RejectReason.DEVICE_FAULT)


def credential_of(card: IdCard) -> Credential:
    """The door credential a card presents; `SamError(unsupported_card)` if none."""
    try:
        return Credential(CredentialKind.ID_NUMBER, IdNumber(card.id_number).value)
    except ValueError as exc:
        if card.kind is CardKind.FOREIGNER:
            raise SamError(SamReason.UNSUPPORTED_CARD, "foreigner's permit number") from exc
        raise SamError(SamReason.BAD_ID_NUMBER, str(exc)) from exc


class _Link:
    """Command/reply over the non-blocking device, watched by the event loop."""

    def __init__(self, fd: int, path: Path, stray: Callable[[SamReason, str], None]) -> None:
        self._fd = fd
        self._path = path
        self._stray = stray
        self._loop = asyncio.get_running_loop()
        self._decoder = FrameDecoder()
        self._pending: asyncio.Future[Frame] | None = None
        self._error: ReaderError | None = None
        self._loop.add_reader(fd, self._readable)

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._fd)

    def _fail(self, error: ReaderError) -> None:
        self.close()
        self._error = error
        if self._pending is not None and not self._pending.done():
            self._pending.set_exception(error)

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(ReaderError(f"{self._path}: {os.strerror(exc.errno or errno.EIO)}"))
            return
        if not chunk:
            self._fail(ReaderError(f"{self._path}: end of input"))
            return
        for item in self._decoder.feed(chunk):
            self._deliver(item)

    def _deliver(self, item: Frame | SamRejection) -> None:
        pending = self._pending
        waiting = pending is not None and not pending.done()
        if isinstance(item, Frame):
            if waiting and pending is not None:
                pending.set_result(item)
            else:
                self._stray(SamReason.UNEXPECTED_REPLY, "a frame nobody asked for")
        elif waiting and pending is not None and item.reason is not SamReason.BAD_PREAMBLE:
            pending.set_exception(SamError(item.reason, item.detail))
        else:  # garbage before a reply is reported, and the reply still awaited
            self._stray(item.reason, item.detail)

    async def transact(self, command: SamCommand, timeout: float) -> Reply:
        if self._error is not None:
            raise self._error
        for item in self._decoder.expire():  # the tail of a reply that came too late
            self._deliver(item)
        pending: asyncio.Future[Frame] = self._loop.create_future()
        self._pending = pending
        try:
            try:
                os.write(self._fd, encode_command(command))
            except BlockingIOError:
                raise SamError(SamReason.TIMEOUT, f"{command.name}: output buffer full") from None
            except OSError as exc:
                raise ReaderError(f"{self._path}: {exc.strerror}") from exc
            try:
                async with asyncio.timeout(timeout):
                    frame = await pending
            except TimeoutError:
                raise self._timed_out(command, timeout) from None
        finally:
            self._pending = None
        return Reply.of(frame)

    def _timed_out(self, command: SamCommand, timeout: float) -> SamError:
        truncated: SamRejection | None = None
        for item in self._decoder.expire():
            cut = isinstance(item, SamRejection) and item.reason is SamReason.TRUNCATED
            if cut and truncated is None and isinstance(item, SamRejection):
                truncated = item
                continue
            self._deliver(item)  # the awaited reply is gone: these count as strays
        if truncated is not None:
            return SamError(truncated.reason, f"{command.name}: {truncated.detail}")
        return SamError(SamReason.TIMEOUT, f"no reply to {command.name} in {timeout} s")


class _Presence:
    """Whether the card in the field has been dealt with (read, or refused for good)."""

    def __init__(self) -> None:
        self.done = False
        self.attempts = 0
        self.misses = 0

    def absent(self) -> None:
        self.misses += 1
        if self.misses >= 2:
            self.done = False
            self.attempts = 0


class SamCardReader:
    """A `Reader` for a second-generation ID-card reader with a SAM, on a serial port."""

    def __init__(
        self,
        name: str,
        door: str,
        path: Path,
        baud: int = 115200,
        *,
        poll_interval: float = DEFAULT_POLL_S,
        timeout: float = 0.5,
        read_timeout: float = 2.0,
        max_silent: int = 3,
        max_attempts: int = 3,
    ) -> None:
        if baud not in SUPPORTED_BAUD:
            raise ValueError(f"unsupported baud rate {baud}")
        self.name = name
        self.door = door
        self._path = path
        self._baud = baud
        self._poll = poll_interval
        self._timeout = timeout
        self._read_timeout = read_timeout
        self._max_silent = max_silent
        self._max_attempts = max_attempts
        self.errors: Counter[str] = Counter()
        """Everything that went wrong, by `SamReason` value."""
        self._unknown_statuses: set[int] = set()

    def indicate(self, allowed: bool) -> None:
        """SAM readers have no LED or buzzer protocol one can rely on: nothing to drive."""

    async def run(self, sink: ReadSink, ready: Callable[[], None]) -> None:
        fd = open_line_device(self._path, self._baud)
        try:
            with contextlib.suppress(termios.error):
                termios.tcflush(fd, termios.TCIFLUSH)  # what came before we asked is no reply
            link = _Link(fd, self._path, lambda reason, detail: self._report(sink, reason, detail))
            try:
                ready()
                log.info("SAM reader %s on %s for door %s", self.name, self._path, self.door)
                await self._poll_loop(link, sink)
            finally:
                link.close()
        finally:
            os.close(fd)

    async def _poll_loop(self, link: _Link, sink: ReadSink) -> None:
        presence = _Presence()
        silent = 0
        while True:
            if not sink.saturated():  # else the card waits in the field, where nothing is lost
                try:
                    await self._cycle(link, sink, presence)
                    silent = 0
                except SamError as exc:
                    self._failed(sink, presence, exc)
                    no_answer = exc.reason in _NO_ANSWER or exc.reason in _DEVICE_FAULTS
                    silent = silent + 1 if no_answer else 0
                    if silent >= self._max_silent:
                        raise ReaderError(f"{self._path}: {exc}") from exc
            await asyncio.sleep(self._poll)

    async def _cycle(self, link: _Link, sink: ReadSink, presence: _Presence) -> None:
        found = await link.transact(SamCommand.FIND, self._timeout)
        if found.sw3 == NO_CARD:
            presence.absent()
            return
        found.expect(FOUND, SamCommand.FIND)
        presence.misses = 0
        if presence.done:
            return
        presence.attempts += 1
        (await link.transact(SamCommand.SELECT, self._timeout)).expect(OK, SamCommand.SELECT)
        reply = await link.transact(SamCommand.READ_BASE, self._read_timeout)
        card = parse_base_info(reply)
        credential = credential_of(card)
        presence.done = True
        log.debug("SAM reader %s read %s", self.name, card)
        sink.accepted(CardRead(self.name, self.door, credential, time.perf_counter(), card))

    def _failed(self, sink: ReadSink, presence: _Presence, exc: SamError) -> None:
        if exc.reason is SamReason.TIMEOUT:
            self.errors[exc.reason.value] += 1  # nothing arrived: nothing to reject
        else:
            self._report(sink, exc.reason, str(exc))
        if presence.attempts and (
            exc.reason in _CARD_CONTENT or presence.attempts >= self._max_attempts
        ):
            presence.done = True  # the card must leave the field before it is tried again
        if exc.reason is SamReason.UNKNOWN_STATUS and exc.status not in self._unknown_statuses:
            self._unknown_statuses.add(exc.status or 0)
            log.warning("SAM reader %s: unknown status %s", self.name, exc)

    def _report(self, sink: ReadSink, reason: SamReason, detail: str) -> None:
        self.errors[reason.value] += 1
        log.debug("SAM reader %s: %s (%s)", self.name, reason.value, detail)
        sink.rejected(self.name, self.door, reject_reason(reason))
