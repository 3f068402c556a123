"""A wall clock that jumps is noticed and announced; seq keeps its order whatever the clock does."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from gateway.clock import ManualClock, SystemClock
from gateway.ops.clock_watch import ClockWatch
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    access_decisions,
    load,
    wait_until,
    write_config,
    write_taps,
)

GW = "GW-CLOCK"


class SteppedClock(ManualClock):
    """Real time passing, plus wall-clock steps the test makes (NTP arriving late)."""

    def __init__(self) -> None:
        self._real = SystemClock()
        self._offset = timedelta(0)
        super().__init__(self._real.now())

    def now(self) -> datetime:
        return self._real.now() + self._offset

    def monotonic(self) -> float:
        return self._real.monotonic()

    def step(self, seconds: float) -> None:
        self._offset += timedelta(seconds=seconds)


def test_clock_watch_tells_a_jump_from_time_passing() -> None:
    changes: list[tuple[str, bool]] = []
    clock = ManualClock(datetime.now().astimezone())
    watch = ClockWatch(clock, lambda kind, active, _detail: changes.append((kind, active)))
    assert watch.check() is None
    clock.advance(60)  # both clocks move: no jump
    assert watch.check() is None
    clock._now += timedelta(hours=-1)  # the wall clock alone goes back an hour
    assert watch.check() == -3600
    assert watch.check() is None
    assert changes == [("clock_jump", False), ("clock_jump", True), ("clock_jump", False)]


def test_a_jump_is_announced_and_seq_stays_in_order(tmp_path: Path, broker: LocalBroker) -> None:
    clock = SteppedClock()
    config = load(write_config(tmp_path, broker.url, gateway_id=GW))
    subscriber = Subscriber(broker.port, f"rentgate/v1/{GW}/events", client_id="clock")
    try:
        with InProcessGateway(config, clock=clock) as running:
            write_taps(tmp_path / "front.reader", ["0C000001"])
            wait_until(lambda: running.gateway.doors.counters.decisions.total() == 1, 10, "tap")
            clock.step(-3600)  # NTP arrives and sets the clock an hour back
            wait_until(lambda: running.gateway.parts.clock_watch.jumps >= 1, 10, "jump noticed")
            write_taps(tmp_path / "front.reader", ["0C000002"])
            wait_until(
                lambda: len(subscriber.decisions()) == 2,
                15,
                "both decisions",
            )
            wait_until(
                lambda: any(e["type"] == "gateway.alarm" for e in subscriber.events()),
                10,
                "the alarm",
            )
    finally:
        subscriber.close()
    events = subscriber.events()
    alarm = next(e for e in events if e["type"] == "gateway.alarm")
    assert alarm["alarm"] == "clock_jump"
    assert "-3600" in alarm["detail"]
    first, second = access_decisions(events)
    assert second["seq"] > first["seq"]
    assert second["ts"] < first["ts"]  # the wall clock went back...
    assert second["mono"] > first["mono"]  # ...the monotonic reading did not
