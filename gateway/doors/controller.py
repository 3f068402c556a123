"""What happens at a door when a reader reports: decide, act, record.

The order is the point: the lock is commanded first, from the in-memory index,
and only then is the event handed to the store writer, which never blocks.
Nothing here waits on the disk, the network or the platform.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

from gateway.clock import Clock
from gateway.devices.protocols import CardRead, DoorSignal, Lock, Reader
from gateway.domain.credentials import Credential, CredentialKind, RejectReason
from gateway.domain.events import EventType, OutboxEvent, new_event
from gateway.doors.access import AccessIndex, Decision, DecisionReason
from gateway.doors.latency import DecisionLatency
from gateway.doors.readers import ReaderHealthBoard
from gateway.doors.supervision import AlarmChange, DoorSupervisor
from gateway.store.crypto import KeyRing

log = logging.getLogger(__name__)

SATURATED_AT = 64
"""Events waiting for their commit at which readers stop taking more input."""

HASH_HEX_CHARS = 32
"""Length of the keyed credential hash carried in events (128 bits)."""


@dataclass
class DoorCounters:
    decisions: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    signals: Counter[str] = field(default_factory=Counter)
    alarms: Counter[str] = field(default_factory=Counter)
    latency: DecisionLatency = field(default_factory=DecisionLatency)


@dataclass(frozen=True)
class VoucherOutcome:
    """A presented voucher checked offline: its id when valid, else why not."""

    voucher_id: str | None
    problem: str | None = None


def no_vouchers(_text: str, _today: date) -> VoucherOutcome:
    return VoucherOutcome(None, "unknown_key")


@dataclass(frozen=True)
class DoorSetup:
    lock: Lock
    unlock_seconds: float


class DoorController:
    """The gateway's `ReadSink`: every reader reports here."""

    def __init__(
        self,
        index: AccessIndex,
        *,
        doors: Mapping[str, DoorSetup],
        readers: Mapping[str, Reader],
        keys: KeyRing,
        clock: Clock,
        record: Callable[[OutboxEvent], None],
        unrecorded: Callable[[], int] = lambda: 0,
        observe: Callable[[CardRead, Decision], None] | None = None,
        supervisors: Mapping[str, DoorSupervisor] | None = None,
        vouchers: Callable[[str, date], VoucherOutcome] = no_vouchers,
        capture: Callable[[CardRead], bool] | None = None,
    ) -> None:
        self.index = index
        self._doors = doors
        self._readers = readers
        self._keys = keys
        self._clock = clock
        self._record = record
        self._unrecorded = unrecorded
        self._observe = observe
        self.supervisors = dict(supervisors or {})
        self._vouchers = vouchers
        self._capture = capture
        self.counters = DoorCounters()
        self.reader_health = ReaderHealthBoard(readers)
        self._last_reject_log = 0.0

    def accepted(self, read: CardRead) -> None:
        credential = read.credential
        lookup = self._keys.lookup(credential.kind.value, credential.value)
        if self._capture is not None and not self.index.knows(lookup) and self._capture(read):
            # Enrol by tap takes only a card the gateway does not know: however often a door
            # is armed, a resident's card is decided as usual.
            return
        now = self._clock.now()
        voucher_problem = None
        if credential.kind is CredentialKind.VOUCHER and credential.value.startswith("RV1:"):
            # Verified offline against the platform's keys; decided by its voucher id.
            checked = self._vouchers(credential.value, now.date())
            if checked.voucher_id is None:
                voucher_problem = checked.problem or "invalid"
            else:
                credential = Credential(CredentialKind.VOUCHER, checked.voucher_id)
                lookup = self._keys.lookup(credential.kind.value, credential.value)
        if voucher_problem is not None:
            decision = Decision(False, DecisionReason.INVALID_VOUCHER)
        else:
            decision = self.index.decide(lookup, read.door, now.timestamp())
        if decision.allowed:
            door = self._doors[read.door]
            door.lock.unlock(door.unlock_seconds)
            self.released(read.door, door.unlock_seconds)
        reader = self._readers.get(read.reader)
        if reader is not None:
            reader.indicate(decision.allowed)
        self.counters.decisions[decision.reason.value] += 1
        self._record(self._decision_event(read, lookup, decision, now, voucher_problem))
        if self._observe is not None:
            self._observe(read, decision)
        self.counters.latency.observe(time.perf_counter() - read.read_at)

    def set_doors(self, doors: Mapping[str, DoorSetup]) -> None:
        """Replace door settings (unlock time) between decisions."""
        self._doors = doors

    def _decision_event(
        self,
        read: CardRead,
        lookup: bytes,
        decision: Decision,
        now: datetime,
        voucher_problem: str | None,
    ) -> OutboxEvent:
        entry = decision.entry
        body: dict[str, object] = {
            "door": read.door,
            "reader": read.reader,
            "result": "allow" if decision.allowed else "deny",
            "reason": decision.reason.value,
            "credential": {
                "kind": read.credential.kind.value,
                "masked": read.credential.masked,
                "hash": lookup.hex()[:HASH_HEX_CHARS],
            },
            "person": entry.person_id if entry else None,
        }
        if decision.status_detail is not None:
            body["credential_status"] = decision.status_detail
        if decision.reason is DecisionReason.INVALID_VOUCHER:
            body["voucher_problem"] = voucher_problem
        return new_event(EventType.ACCESS_DECISION, now, self._clock.monotonic(), body)

    def saturated(self) -> bool:
        return self._unrecorded() >= SATURATED_AT

    def door_signal(self, device: str, door: str, signal: DoorSignal) -> None:
        self.counters.signals[signal.value] += 1
        supervisor = self.supervisors.get(door)
        if supervisor is not None:
            self._alarms(supervisor.signal(device, signal, self._clock.monotonic()))

    def device_status(self, device: str, door: str, online: bool, detail: str | None) -> None:
        self.reader_health.report(device, online, detail)
        body = {"device": device, "door": door, "online": online, "error": detail}
        now = self._clock.now()
        self._record(new_event(EventType.DEVICE_STATUS, now, self._clock.monotonic(), body))
        supervisor = self.supervisors.get(door)
        if supervisor is not None:
            self._alarms(supervisor.device_status(device, online, detail))

    def released(self, door: str, seconds: float) -> None:
        """A door was released by other means than a card (remote unlock)."""
        supervisor = self.supervisors.get(door)
        if supervisor is not None:
            supervisor.granted(self._clock.monotonic(), seconds)

    def tick(self) -> None:
        """Let time-based alarms (held open) fire; called a few times a second."""
        now = self._clock.monotonic()
        for supervisor in self.supervisors.values():
            self._alarms(supervisor.tick(now))

    def _alarms(self, changes: list[AlarmChange]) -> None:
        for change in changes:
            supervisor = self.supervisors[change.door]
            state = "raised" if change.raised else "cleared"
            self.counters.alarms[f"{change.alarm.value}:{state}"] += 1
            body = {
                "door": change.door,
                "alarm": change.alarm.value,
                "state": state,
                "device": change.device,
                "detail": change.detail,
                "fail_mode": supervisor.fail_mode.value,
            }
            log.warning(
                "door %s: %s %s%s",
                change.door,
                change.alarm.value,
                body["state"],
                f" ({change.detail})" if change.detail else "",
            )
            now = self._clock.now()
            self._record(new_event(EventType.DOOR_ALARM, now, self._clock.monotonic(), body))

    def rejected(self, reader: str, door: str, reason: RejectReason) -> None:
        self.counters.rejected[reason.value] += 1
        moment = time.monotonic()
        if moment - self._last_reject_log >= 1.0:  # at most one line a second under a flood
            self._last_reject_log = moment
            log.warning(
                "reader %s at door %s: input rejected (%s); %d rejected so far",
                reader,
                door,
                reason.value,
                sum(self.counters.rejected.values()),
            )
