"""Door supervision: what a door contact, an exit button and a reader's own sensors mean.

One `DoorSupervisor` per door turns signals into alarms: forced open (the
contact opened with no grant and no exit request in the last few seconds),
held open (open longer than allowed), reader offline, tamper, power failure.
Each alarm is raised once and cleared once; the caller records the changes as
`door.alarm` events. Pure: time comes in as arguments, nothing is awaited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from gateway.devices.protocols import DoorSignal

GRANT_GRACE_S = 3.0
"""A door opened this long after its release ended still counts as opened by that grant."""


class DoorAlarm(StrEnum):
    FORCED_OPEN = "forced_open"
    HELD_OPEN = "held_open"
    READER_OFFLINE = "reader_offline"
    TAMPER = "tamper"
    POWER_FAILURE = "power_failure"


class FailMode(StrEnum):
    SECURE = "secure"
    """Stays locked without power (a strike): the usual for a unit door."""
    SAFE = "safe"
    """Unlocks without power (a magnetic lock on an escape route): open to anyone meanwhile."""


_SENSOR_RAISES = {
    DoorSignal.TAMPER: DoorAlarm.TAMPER,
    DoorSignal.POWER_FAILURE: DoorAlarm.POWER_FAILURE,
}
_SENSOR_CLEARS = {
    DoorSignal.TAMPER_CLEARED: DoorAlarm.TAMPER,
    DoorSignal.POWER_RESTORED: DoorAlarm.POWER_FAILURE,
}


@dataclass(frozen=True)
class AlarmChange:
    door: str
    alarm: DoorAlarm
    raised: bool
    device: str | None = None
    detail: str | None = None


@dataclass
class DoorSupervisor:
    door: str
    held_open_s: float = 60.0
    fail_mode: FailMode = FailMode.SECURE
    open_since: float | None = None
    allowed_until: float = float("-inf")
    active: dict[DoorAlarm, AlarmChange] = field(default_factory=dict)
    offline: set[str] = field(default_factory=set)

    def granted(self, now: float, seconds: float) -> None:
        """The door was released (a grant, a remote unlock) for `seconds` from `now`."""
        self.allowed_until = max(self.allowed_until, now + seconds + GRANT_GRACE_S)

    def signal(self, device: str, signal: DoorSignal, now: float) -> list[AlarmChange]:
        if signal is DoorSignal.EXIT_REQUEST:
            self.granted(now, 0.0)
            return []
        if signal in (DoorSignal.CONTACT_OPEN, DoorSignal.CONTACT_CLOSED):
            return self._contact(device, signal is DoorSignal.CONTACT_OPEN, now)
        if signal in _SENSOR_RAISES:
            alarm = _SENSOR_RAISES[signal]
            return self._raise(alarm, device, self._sensor_detail(alarm))
        return self._clear(_SENSOR_CLEARS[signal])

    def _contact(self, device: str, is_open: bool, now: float) -> list[AlarmChange]:
        if not is_open:
            self.open_since = None
            return self._clear(DoorAlarm.FORCED_OPEN) + self._clear(DoorAlarm.HELD_OPEN)
        if self.open_since is not None:
            return []
        self.open_since = now
        if now > self.allowed_until:
            return self._raise(DoorAlarm.FORCED_OPEN, device, "opened without a grant")
        return []

    def _sensor_detail(self, alarm: DoorAlarm) -> str:
        if alarm is DoorAlarm.TAMPER:
            return "reader housing opened or removed"
        if self.fail_mode is FailMode.SAFE:
            return "fail-safe door: unlocked while the power is off"
        return "fail-secure door: stays locked while the power is off"

    def device_status(self, device: str, online: bool, detail: str | None) -> list[AlarmChange]:
        if online:
            self.offline.discard(device)
            return [] if self.offline else self._clear(DoorAlarm.READER_OFFLINE)
        self.offline.add(device)
        return self._raise(DoorAlarm.READER_OFFLINE, device, detail or "not answering")

    def tick(self, now: float) -> list[AlarmChange]:
        """Called every fraction of a second: raises held-open when its time has come."""
        if self.open_since is not None and now - self.open_since >= self.held_open_s:
            return self._raise(
                DoorAlarm.HELD_OPEN, None, f"open longer than {self.held_open_s:g} s"
            )
        return []

    def _raise(self, alarm: DoorAlarm, device: str | None, detail: str) -> list[AlarmChange]:
        if alarm in self.active:
            return []
        change = AlarmChange(self.door, alarm, True, device, detail)
        self.active[alarm] = change
        return [change]

    def _clear(self, alarm: DoorAlarm) -> list[AlarmChange]:
        raised = self.active.pop(alarm, None)
        if raised is None:
            return []
        return [AlarmChange(self.door, alarm, False, raised.device, None)]
