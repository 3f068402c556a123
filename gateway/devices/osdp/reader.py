"""OSDP readers (IEC 60839-11-5), the gateway their control panel: reads in; LED, buzzer, relay out.

An `OsdpBus` is one RS-485 line (a serial port) and the readers on it, each
at its own address with its own secure-channel key; one libosdp control panel
serves them all (`gateway.devices.osdp.control_panel`). Each reader is an `OsdpReader`,
which is at once the door's `Reader`, its `Lock` (the reader's relay drives
the strike) and its `DoorSensor` (input 0 the door contact, input 1 the
exit button, by default). The line is opened when the first reader runs and
closed when the last one stops.

Card data becomes a `card_uid`: the raw bits, parity included, as hex,
right-aligned and zero-padded to a digit per started 4 bits. A 64-bit chip
serial thus reads as the same 16 digits a serial reader prints, and the
digit count keeps formats of different lengths apart (26 bits: 7 digits,
34 bits: 9).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from gateway.devices.osdp.control_panel import PanelThread
from gateway.devices.osdp.keys import OsdpKeyFileError, load_key
from gateway.devices.osdp.line_events import (
    CardData,
    CardFormat,
    Feedback,
    InputReport,
    LineFailed,
    LinkChange,
    LocalReport,
    OfflineReason,
    PanelEvent,
    PdSetup,
    Release,
)
from gateway.devices.protocols import (
    CardRead,
    DoorSignal,
    DoorState,
    ReaderError,
    ReadSink,
)
from gateway.devices.serial_port import SUPPORTED_BAUD, open_line_device
from gateway.domain.credentials import (
    CredentialError,
    CredentialKind,
    RejectReason,
    parse_credential,
)

__all__ = ["OfflineReason", "OsdpBus", "OsdpDeviceConfig", "OsdpReader", "OutputMode", "card_value"]

log = logging.getLogger(__name__)

MAX_ADDRESS = 126
_RESUME_CHECK_S = 0.001


class OutputMode(StrEnum):
    PULSE = "pulse"
    """The reader's own output timer ends the release: the door locks even if the gateway
    dies meanwhile (releases past 25.5 s are renewed pulses)."""
    LATCH = "latch"
    """On, then off again from the gateway when the time is up: for readers without a
    working output timer; a gateway that dies meanwhile leaves the door released."""


@dataclass(frozen=True, slots=True)
class OsdpDeviceConfig:
    """One reader on an OSDP line."""

    name: str
    door: str
    address: int
    key_file: Path
    install: bool = False
    """Without a key file, provision a new key into a reader that accepts SCBK-D."""
    output_no: int = 0
    output_mode: OutputMode = OutputMode.PULSE
    led_number: int = 0
    contact_input: int | None = 0
    exit_input: int | None = 1
    contact_open_level: int = 1
    """The contact input's level while the door is open (1: normally closed contact)."""

    def __post_init__(self) -> None:
        if not 0 <= self.address <= MAX_ADDRESS:
            raise ValueError(f"OSDP address must be 0-{MAX_ADDRESS}, not {self.address}")
        if self.contact_open_level not in (0, 1):
            raise ValueError("contact_open_level must be 0 or 1")
        for field in ("output_no", "led_number", "contact_input", "exit_input"):
            value = getattr(self, field)
            if value is not None and not 0 <= value < 256:
                raise ValueError(f"{field} must be 0-255")


def card_value(bits: int, data: bytes) -> str:
    """Raw card bits as upper-case hex, right-aligned, one digit per started 4 bits."""
    size = (bits + 7) // 8
    if bits <= 0 or len(data) != size:
        raise CredentialError(RejectReason.BAD_FORMAT, f"{len(data)} bytes for {bits} bits")
    value = int.from_bytes(data, "big") >> (size * 8 - bits)
    return f"{value:0{(bits + 3) // 4}X}"


class OsdpReader:
    """A reader on an OSDP line: `Reader`, `Lock` and `DoorSensor` for its door."""

    def __init__(self, bus: OsdpBus, index: int, config: OsdpDeviceConfig) -> None:
        self.name = config.name
        self.door = config.door
        self.config = config
        self._bus = bus
        self._index = index
        self._contact: DoorState | None = None
        self._exit_level = 0
        self._tamper = False
        self._power_failure = False
        self.online = False
        self.offline_reason: OfflineReason | None = None
        self.detail: str | None = None

    async def run(self, sink: ReadSink, ready: Callable[[], None]) -> None:  # noqa: ARG002
        """Attach to the line (opening it if first); `ReaderError` when the line fails."""
        failed = self._bus._attach(self._index, sink)
        try:  # `ready` is not called: the reader reports its own link state (see `_link`)
            if self.online or self.offline_reason is not None:
                sink.device_status(self.name, self.door, self.online, self.detail)
            await failed
        finally:
            await self._bus._detach(self._index)

    def indicate(self, allowed: bool) -> None:
        """Green LED and one beep, or flashing red and three."""
        self._bus._submit(Feedback(self._index, allowed))

    def unlock(self, seconds: float) -> None:
        """Pulse the relay for `seconds` (queued for the line's thread; never blocks)."""
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"unlock time must be a positive number of seconds, not {seconds}")
        self._bus._submit(Release(self._index, seconds))

    def state(self) -> DoorState:
        """The contact's last report; closed until the reader has reported one."""
        return self._contact or DoorState.CLOSED

    def _inputs(self, levels: bytes, sink: ReadSink) -> None:
        config = self.config
        wanted = max(i for i in (config.contact_input, config.exit_input, -1) if i is not None)
        if wanted >= len(levels):
            self._bus.counters["input_reports_too_short"] += 1
        if config.contact_input is not None and config.contact_input < len(levels):
            is_open = levels[config.contact_input] == config.contact_open_level
            state = DoorState.OPEN if is_open else DoorState.CLOSED
            if state is not self._contact:
                self._contact = state
                signal = DoorSignal.CONTACT_OPEN if is_open else DoorSignal.CONTACT_CLOSED
                sink.door_signal(self.name, self.door, signal)
        if config.exit_input is not None and config.exit_input < len(levels):
            level = levels[config.exit_input]
            if level and not self._exit_level:
                sink.door_signal(self.name, self.door, DoorSignal.EXIT_REQUEST)
            self._exit_level = level

    def _local(self, report: LocalReport, sink: ReadSink) -> None:
        if report.tamper != self._tamper:
            self._tamper = report.tamper
            signal = DoorSignal.TAMPER if report.tamper else DoorSignal.TAMPER_CLEARED
            sink.door_signal(self.name, self.door, signal)
        if report.power_failure != self._power_failure:
            self._power_failure = report.power_failure
            failed = report.power_failure
            signal = DoorSignal.POWER_FAILURE if failed else DoorSignal.POWER_RESTORED
            sink.door_signal(self.name, self.door, signal)

    def _card(self, card: CardData, sink: ReadSink) -> None:
        try:
            if card.format is CardFormat.OTHER:
                raise CredentialError(RejectReason.BAD_FORMAT, "unsupported card data format")
            credential = parse_credential(CredentialKind.CARD_UID, card_value(card.bits, card.data))
        except CredentialError as exc:
            sink.rejected(self.name, self.door, exc.reason)
            return
        log.debug("reader %s: %d-bit card %s", self.name, card.bits, credential.masked)
        sink.accepted(CardRead(self.name, self.door, credential, card.at))

    def _link(self, change: LinkChange, sink: ReadSink | None) -> None:
        self.online, self.offline_reason, self.detail = change.online, change.reason, change.detail
        if sink is not None:
            sink.device_status(self.name, self.door, change.online, change.detail)


class OsdpBus:
    """The readers on one serial line, served by one libosdp control panel."""

    def __init__(self, path: Path, baud: int, devices: Sequence[OsdpDeviceConfig]) -> None:
        if baud not in SUPPORTED_BAUD:
            raise ValueError(f"unsupported baud rate {baud}")
        if not devices:
            raise ValueError("an OSDP line needs at least one reader")
        if len({d.address for d in devices}) != len(devices):
            raise ValueError(f"{path}: two readers share an OSDP address")
        if len({d.name for d in devices}) != len(devices):
            raise ValueError(f"{path}: two readers share a name")
        self.path = path
        self.baud = baud
        self.readers = tuple(OsdpReader(self, i, d) for i, d in enumerate(devices))
        self.counters: Counter[str] = Counter()
        """What was dropped or refused, and why (commands for an offline reader, ...)."""
        self._sinks: dict[int, ReadSink] = {}
        self._panel: PanelThread | None = None
        self._fd = -1
        self._failed: asyncio.Future[None] | None = None
        self._paused = False
        self._recheck_pending = False
        self._session = 0
        """Which opening of the line a batch belongs to: a closed one's stragglers are dropped."""

    def _attach(self, index: int, sink: ReadSink) -> asyncio.Future[None]:
        if self._panel is None:
            self._open()
        assert self._failed is not None
        self._sinks[index] = sink
        return self._failed

    async def _detach(self, index: int) -> None:
        self._sinks.pop(index, None)
        if self._sinks or self._panel is None:
            return
        panel, fd, self._panel, self._fd = self._panel, self._fd, None, -1
        self._failed = None
        self._session += 1
        await asyncio.to_thread(_stop_and_close, panel, fd)

    def _open(self) -> None:
        loop = asyncio.get_running_loop()
        setups = []
        for config in (reader.config for reader in self.readers):
            try:
                key = load_key(config.key_file, install=config.install)
            except (OsdpKeyFileError, OSError) as exc:
                raise ReaderError(f"OSDP reader {config.name}: {exc}") from exc
            setups.append(
                PdSetup(
                    config.name,
                    config.address,
                    key.key,
                    key.installing,
                    config.key_file,
                    config.output_no,
                    config.led_number,
                    config.output_mode is OutputMode.LATCH,
                )
            )
        fd = open_line_device(self.path, self.baud)
        self._session += 1
        try:
            panel = PanelThread(
                fd, str(self.path), setups, self._deliver_threadsafe(loop), self.counters
            )
        except ReaderError:
            os.close(fd)
            raise
        self._panel, self._fd = panel, fd
        self._failed = loop.create_future()
        self._paused = False
        for reader in self.readers:
            reader._link(LinkChange(reader._index, False, None, None), None)
        panel.start()
        log.info("OSDP line %s open: %d reader(s)", self.path, len(setups))

    def _deliver_threadsafe(
        self, loop: asyncio.AbstractEventLoop
    ) -> Callable[[list[PanelEvent]], None]:
        session = self._session

        def deliver(batch: list[PanelEvent]) -> None:
            loop.call_soon_threadsafe(self._deliver, session, batch)

        return deliver

    def _submit(self, command: Feedback | Release) -> None:
        if self._panel is None:
            self.counters["commands_without_line"] += 1
            return
        self._panel.submit(command)

    def _deliver(self, session: int, batch: list[PanelEvent]) -> None:
        if session != self._session:
            self.counters["events_after_close"] += len(batch)
            return
        for event in batch:
            if isinstance(event, LineFailed):
                if self._failed is not None and not self._failed.done():
                    self._failed.set_exception(ReaderError(event.error))
                continue
            try:
                self._dispatch(event)
            except Exception:  # one faulty sink call must not cost the rest of the batch
                self.counters["sink_errors"] += 1
                log.exception(
                    "OSDP line %s: the sink failed on %s", self.path, type(event).__name__
                )
        self._check_saturation()

    def _dispatch(self, event: CardData | InputReport | LocalReport | LinkChange) -> None:
        reader = self.readers[event.pd]
        sink = self._sinks.get(event.pd)
        if isinstance(event, LinkChange):
            reader._link(event, sink)
        elif sink is None:
            self.counters["events_without_reader"] += 1
        elif isinstance(event, CardData):
            reader._card(event, sink)
        elif isinstance(event, InputReport):
            reader._inputs(event.levels, sink)
        else:
            reader._local(event, sink)

    def _check_saturation(self) -> None:
        """While the store is behind, the line pauses and the readers keep their reads."""
        saturated = any(sink.saturated() for sink in self._sinks.values())
        if saturated != self._paused and self._panel is not None:
            self._paused = saturated
            self._panel.pause(saturated)
        if saturated and not self._recheck_pending:
            self._recheck_pending = True
            asyncio.get_running_loop().call_later(_RESUME_CHECK_S, self._recheck)

    def _recheck(self) -> None:
        self._recheck_pending = False
        self._check_saturation()


def _stop_and_close(panel: PanelThread, fd: int) -> None:
    panel.stop()
    os.close(fd)
