"""Simulated OSDP readers: real libosdp PeripheralDevices on one pseudo-terminal.

An `OsdpSimBus` is an RS-485 bus: one pty whose other end the gateway opens
as its serial port, and one or more peripheral devices (PDs) on it at their
own addresses, each with its own secure-channel key (none: install mode, the
PD accepts SCBK-D once and takes the key the panel sends with KEYSET). A
thread reads the pty, hands every byte to every PD as a shared bus does, and
runs their state machines. Tests and benchmarks present cards, press the exit
button, open the door and set tamper; each PD records what the panel told it
(LED, buzzer, output, KEYSET) stamped with `time.perf_counter()`.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

import osdp  # type: ignore[import-untyped]
import osdp_sys  # type: ignore[import-not-found]

from gateway.devices.osdp.keys import KEY_BYTES

_TICK_S = 0.02
"""The PD's own timers (secure-channel session timeout) need a refresh now and then."""


class SimCommand(StrEnum):
    OUTPUT = "output"
    LED = "led"
    BUZZER = "buzzer"
    KEYSET = "keyset"
    OTHER = "other"


_KINDS = {
    osdp.Command.Output: SimCommand.OUTPUT,
    osdp.Command.LED: SimCommand.LED,
    osdp.Command.Buzzer: SimCommand.BUZZER,
    osdp.Command.Keyset: SimCommand.KEYSET,
}


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    """A command the panel sent, as the PD's application saw it."""

    kind: SimCommand
    fields: dict[str, Any]
    at: float
    """`time.perf_counter()` when the PD handed it to its application."""


def wiegand26(facility: int, card: int) -> int:
    """A 26-bit Wiegand frame: even parity, 8-bit facility, 16-bit card number, odd parity."""
    if not (0 <= facility < 256 and 0 <= card < 65536):
        raise ValueError("facility is 8 bits and card 16 bits")
    body = facility << 16 | card
    first, second = body >> 12, body & 0xFFF
    even = bin(first).count("1") % 2
    odd = 1 - bin(second).count("1") % 2
    return even << 25 | body << 1 | odd


def card_bytes(value: int, bits: int) -> bytes:
    """`value`'s low `bits` bits, left-aligned in bytes as OSDP carries raw card data."""
    if bits <= 0 or value >> bits:
        raise ValueError(f"value does not fit {bits} bits")
    size = (bits + 7) // 8
    return (value << (size * 8 - bits)).to_bytes(size, "big")


class _Channel:
    """A PD's view of the bus: bytes fanned out to it, replies written to the pty."""

    def __init__(self, fd: int) -> None:
        self.id = 1
        self._fd = fd
        self.rx = bytearray()

    def read(self, max_bytes: int) -> bytes:
        chunk = bytes(self.rx[:max_bytes])
        del self.rx[:max_bytes]
        return chunk

    def write(self, buf: bytes) -> int:
        try:
            return os.write(self._fd, buf)
        except OSError:
            return 0

    def flush(self) -> None:
        self.rx.clear()


class SimPeripheral:
    """One simulated reader with two inputs (0: door contact, 1: exit button) and one relay."""

    def __init__(self, bus: OsdpSimBus, address: int, key: bytes | None) -> None:
        if key is not None and len(key) != KEY_BYTES:
            raise ValueError(f"a key is {KEY_BYTES} bytes")
        self._bus = bus
        self.address = address
        self.key = key
        """The key the PD holds now (after a KEYSET, the new one); None: install mode."""
        self.commands: list[ReceivedCommand] = []
        self.presented: list[float] = []
        self._inputs = [0, 0]
        self._local = [0, 0]
        self._ctx: Any = None
        self._channel: _Channel | None = None

    # --- what a person or installer does at the reader ---

    def present_card(self, value: int, bits: int, *, fmt: int = osdp.CardFormat.Wiegand) -> float:
        """Queue a card read (raw bits); returns its `perf_counter()` stamp."""
        event = {
            "event": osdp.Event.CardRead,
            "reader_no": 0,
            "format": fmt,
            "direction": 0,
            "length": bits,
            "data": card_bytes(value, bits),
        }
        with self._bus.lock:
            moment = time.perf_counter()
            self._submit(event)
            self.presented.append(moment)
        return moment

    def press_exit(self) -> None:
        """The request-to-exit button: pressed, then released."""
        with self._bus.lock:
            self._set_input(1, 1)
            self._set_input(1, 0)

    def set_contact(self, *, open_: bool) -> None:
        with self._bus.lock:
            self._set_input(0, int(open_))

    def set_tamper(self, tampered: bool) -> None:
        with self._bus.lock:
            self._local[0] = int(tampered)
            self._submit_local()

    def set_power_failure(self, failed: bool) -> None:
        with self._bus.lock:
            self._local[1] = int(failed)
            self._submit_local()

    # --- what tests observe ---

    @property
    def sc_active(self) -> bool:
        with self._bus.lock:
            return self._ctx is not None and bool(self._ctx.is_sc_active())

    def received(self, kind: SimCommand) -> list[ReceivedCommand]:
        with self._bus.lock:
            return [command for command in self.commands if command.kind is kind]

    def wait_for(
        self, predicate: Callable[[list[ReceivedCommand]], bool], timeout: float = 10.0
    ) -> list[ReceivedCommand]:
        """Block until `predicate(commands)` holds; `TimeoutError` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._bus.changed:
            while not predicate(self.commands):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"PD {self.address}: condition not met in {timeout} s")
                self._bus.changed.wait(remaining)
            return list(self.commands)

    # --- the bus thread's side (called with the bus lock held) ---

    def _power_on(self, fd: int) -> None:
        osdp_sys.set_loglevel(osdp.LogLevel.Critical)  # libosdp prints to stdout
        self._channel = _Channel(fd)
        info = osdp.PDInfo(self.address, self._channel, scbk=self.key).get()
        caps = osdp.PDCapabilities(
            [
                (osdp.Capability.ContactStatusMonitoring, 1, len(self._inputs)),
                (osdp.Capability.OutputControl, 1, 1),
                (osdp.Capability.LEDControl, 1, 1),
                (osdp.Capability.AudibleControl, 1, 1),
                (osdp.Capability.CardDataFormat, 1, 0),
                (osdp.Capability.CommunicationSecurity, 1, 1),
            ]
        ).get()
        self._ctx = osdp_sys.PeripheralDevice(info, capabilities=caps)
        self._ctx.set_command_callback(self._on_command)

    def _power_off(self) -> None:
        self._ctx = None
        self._channel = None

    def _feed(self, data: bytes) -> None:
        if self._channel is not None and self._ctx is not None:
            self._channel.rx.extend(data)
            self._ctx.refresh()

    def _on_command(self, command: dict[str, Any]) -> tuple[int, None]:
        kind = _KINDS.get(command.get("command"), SimCommand.OTHER)
        fields = {k: v for k, v in command.items() if k != "command"}
        if kind is SimCommand.KEYSET:
            self.key = bytes(fields["data"])
        self.commands.append(ReceivedCommand(kind, fields, time.perf_counter()))
        self._bus.changed.notify_all()
        # libosdp 3.2.9 releases the returned tuple's second item instead of the tuple.
        # A tuple built here (not the constant `(0, None)` Python would fold, which owns
        # a single reference) holds its own reference to None and so balances that; the
        # tuple itself leaks, ~56 bytes a command, acceptable in a simulator.
        status = 0
        return (status, None)

    def _set_input(self, index: int, value: int) -> None:
        self._inputs[index] = value
        self._submit(
            {
                "event": osdp.Event.Status,
                "type": osdp.StatusReportType.Input,
                "report": bytes(self._inputs),
            }
        )

    def _submit_local(self) -> None:
        self._submit(
            {
                "event": osdp.Event.Status,
                "type": osdp.StatusReportType.Local,
                "report": bytes(self._local),
            }
        )

    def _submit(self, event: dict[str, Any]) -> None:
        if self._ctx is None:
            raise RuntimeError(f"PD {self.address} is not running")
        if not self._ctx.submit_event(event):
            raise RuntimeError(f"PD {self.address} refused the event")


class OsdpSimBus:
    """A pty with simulated OSDP readers on it; `path` is what the gateway opens."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo even before the gateway opens its end
        os.set_blocking(self._master, False)
        self.path = Path(os.ttyname(self._slave))
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.peripherals: dict[int, SimPeripheral] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False

    def add(self, address: int, key: bytes | None = None) -> SimPeripheral:
        """A reader at `address`; `key=None` leaves it in install mode."""
        if address in self.peripherals:
            raise ValueError(f"address {address} is taken")
        peripheral = SimPeripheral(self, address, key)
        self.peripherals[address] = peripheral
        if self._thread is not None:
            with self.lock:
                peripheral._power_on(self._master)
        return peripheral

    def start(self) -> None:
        """Power the readers on (fresh state, current keys) and start answering."""
        if self._thread is not None:
            raise RuntimeError("already running")
        with self.lock:
            for peripheral in self.peripherals.values():
                peripheral._power_on(self._master)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="osdp-sim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Power the readers off: the bus stays, nothing answers (a silent peripheral)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")
        thread.join(5)
        with self.lock:
            for peripheral in self.peripherals.values():
                peripheral._power_off()

    def close(self) -> None:
        if self._closed:
            return
        self.stop()
        self._closed = True
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> OsdpSimBus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._master, self._wake_r], [], [], _TICK_S)
            data = b""
            if self._master in readable:
                data = _read_all(self._master)
            if self._wake_r in readable:
                _read_all(self._wake_r)
            with self.lock:
                for peripheral in self.peripherals.values():
                    peripheral._feed(data)


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
