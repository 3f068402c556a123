"""The interfaces every device family implements, and what flows through them.

Readers push what they read into a `ReadSink` (the gateway's decision path),
synchronously on the event loop, so a read reaches the lock without a queue
hop. Locks take commands and return at once; they never block the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from gateway.domain.credentials import Credential, RejectReason
from gateway.domain.idcard import IdCard
from gateway.errors import RentgateError


class DoorSignal(StrEnum):
    """What a door's inputs and a reader's own sensors can report."""

    CONTACT_OPEN = "contact_open"
    CONTACT_CLOSED = "contact_closed"
    EXIT_REQUEST = "exit_request"
    TAMPER = "tamper"
    TAMPER_CLEARED = "tamper_cleared"
    POWER_FAILURE = "power_failure"
    POWER_RESTORED = "power_restored"


@dataclass(frozen=True, slots=True)
class CardRead:
    """A credential presented at a door, stamped with a monotonic reading."""

    reader: str
    door: str
    credential: Credential
    read_at: float
    """`time.perf_counter()` when the reader finished framing the value."""
    card: IdCard | None = None
    """The card's chip fields, when a SAM reader read them (enrolment, R1 locality)."""


class ReaderError(RentgateError):
    """The reader's device cannot be opened or read; the gateway retries it."""


class ReadSink(Protocol):
    def accepted(self, read: CardRead) -> None:
        """A valid credential value was read."""

    def rejected(self, reader: str, door: str, reason: RejectReason) -> None:
        """Something arrived that is not a credential; it is counted and dropped."""

    def door_signal(self, device: str, door: str, signal: DoorSignal) -> None:
        """A door input changed or the device reported a condition (contact, exit button,
        tamper, power). Door supervision turns these into `door.alarm` events."""

    def device_status(self, device: str, door: str, online: bool, detail: str | None) -> None:
        """A device that stays attached went online or offline (an OSDP reader that stopped
        answering, a secure-channel key mismatch); `detail` says why, for the installer."""

    def saturated(self) -> bool:
        """True while many reads are decided but not yet durably recorded.

        A reader then leaves further input in its device's buffer, where a crash
        cannot lose it, until the store has caught up.
        """


class Reader(Protocol):
    """A credential reader at one door."""

    name: str
    door: str

    async def run(self, sink: ReadSink, ready: Callable[[], None]) -> None:
        """Read until cancelled; raise `ReaderError` if the device cannot be opened or fails.

        Call `ready` once the device is open. A reader whose device can be open while
        the reader behind it is silent (OSDP on a bus) reports its own state through
        `sink.device_status` instead and does not call `ready`."""

    def indicate(self, allowed: bool) -> None:
        """Feedback to the person at the door (LED, buzzer); may do nothing."""


class Lock(Protocol):
    """A door strike or magnetic lock."""

    door: str

    def unlock(self, seconds: float) -> None:
        """Release the door for `seconds`, then secure it again. Never blocks."""


class DoorState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class DoorSensor(Protocol):
    """A door contact (and, where fitted, a request-to-exit input)."""

    door: str

    def state(self) -> DoorState:
        """The contact's last known state."""
