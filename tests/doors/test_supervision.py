"""Door supervision as a table: signals and time in, alarms raised and cleared out."""

from __future__ import annotations

from gateway.devices.protocols import DoorSignal
from gateway.doors.supervision import GRANT_GRACE_S, DoorAlarm, DoorSupervisor, FailMode

OPEN, CLOSED = DoorSignal.CONTACT_OPEN, DoorSignal.CONTACT_CLOSED


def changes(result: list[object]) -> list[tuple[str, bool]]:
    return [(c.alarm.value, c.raised) for c in result]  # type: ignore[attr-defined]


def test_opened_after_a_grant_is_no_alarm_and_held_open_fires_once() -> None:
    door = DoorSupervisor("front", held_open_s=30)
    door.granted(100.0, 5.0)
    assert changes(door.signal("r", OPEN, 103.0)) == []
    assert changes(door.tick(132.9)) == []
    assert changes(door.tick(133.0)) == [("held_open", True)]
    assert changes(door.tick(140.0)) == []
    assert changes(door.signal("r", CLOSED, 150.0)) == [("held_open", False)]
    assert door.active == {}


def test_opened_without_a_grant_is_forced_open_until_closed() -> None:
    door = DoorSupervisor("front")
    door.granted(100.0, 5.0)
    late = 100.0 + 5.0 + GRANT_GRACE_S + 0.1
    assert changes(door.signal("r", OPEN, late)) == [("forced_open", True)]
    assert changes(door.signal("r", OPEN, late + 1)) == []  # a repeated report
    assert changes(door.signal("r", CLOSED, late + 2)) == [("forced_open", False)]


def test_exit_button_makes_opening_from_inside_legitimate() -> None:
    door = DoorSupervisor("front")
    assert changes(door.signal("r", DoorSignal.EXIT_REQUEST, 10.0)) == []
    assert changes(door.signal("r", OPEN, 11.0)) == []
    assert changes(door.signal("r", CLOSED, 12.0)) == []
    assert changes(door.signal("r", OPEN, 30.0)) == [("forced_open", True)]


def test_reader_offline_clears_only_when_every_reader_is_back() -> None:
    door = DoorSupervisor("front")
    assert changes(door.device_status("a", False, "key mismatch")) == [("reader_offline", True)]
    assert changes(door.device_status("b", False, None)) == []
    assert changes(door.device_status("a", True, None)) == []
    assert changes(door.device_status("b", True, None)) == [("reader_offline", False)]
    assert door.device_status("b", True, None) == []


def test_tamper_and_power_with_the_fail_mode_in_the_detail() -> None:
    safe = DoorSupervisor("exit", fail_mode=FailMode.SAFE)
    (power,) = safe.signal("r", DoorSignal.POWER_FAILURE, 1.0)
    assert power.alarm is DoorAlarm.POWER_FAILURE
    assert power.detail is not None
    assert "unlocked" in power.detail
    assert changes(safe.signal("r", DoorSignal.POWER_RESTORED, 2.0)) == [("power_failure", False)]
    secure = DoorSupervisor("unit")
    (power,) = secure.signal("r", DoorSignal.POWER_FAILURE, 1.0)
    assert power.detail is not None
    assert "stays locked" in power.detail
    assert changes(secure.signal("r", DoorSignal.TAMPER, 1.0)) == [("tamper", True)]
    assert changes(secure.signal("r", DoorSignal.TAMPER_CLEARED, 2.0)) == [("tamper", False)]
