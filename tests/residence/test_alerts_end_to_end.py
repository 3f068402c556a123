"""Residence alerts end to end, with the gateway's clock under the test's control."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.cli import main
from gateway.clock import ManualClock
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    load,
    wait_until,
    write_config,
    write_taps,
)
from tests.support.platform import Platform, key_file, person_entry

GW = "GW-ALERTS"
DAY = 24 * 3600
START = datetime(2026, 2, 27, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
"""Day 1 is 27 February, so day 4 (the first overdue day) is 2 March: across a month end."""


@dataclass
class Scene:
    running: InProcessGateway
    platform: Platform
    subscriber: Subscriber
    clock: ManualClock
    fifo: Path
    config_path: Path

    def alerts(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.subscriber.events() if e["type"] == kind]

    def wait_alert(self, kind: str, rule: str) -> dict[str, Any]:
        wait_until(lambda: any(a["rule"] == rule for a in self.alerts(kind)), 15, f"{kind} {rule}")
        return next(a for a in self.alerts(kind) if a["rule"] == rule)


@pytest.fixture
def scene(tmp_path: Path, broker: LocalBroker) -> Iterator[Scene]:
    key, public = key_file(tmp_path / "platform")
    path = write_config(
        tmp_path,
        f"mqtt://127.0.0.1:{broker.port}",
        gateway_id=GW,
        extra=f'[platform]\nkeys = ["{public}"]\n\n[residence]\nbuilding = "B-7"\n'
        'check_at = "00:00:00"\n',
    )
    clock = ManualClock(START)
    subscriber = Subscriber(broker.port, f"rentgate/v1/{GW}/#", client_id="alerts-test")
    running = InProcessGateway(load(path), clock=clock, alert_poll_s=0.05).start()
    platform = Platform(broker, GW, key, clock)
    running.wait_connected()
    try:
        yield Scene(running, platform, subscriber, clock, tmp_path / "front.reader", path)
    finally:
        platform.close()
        running.stop()
        subscriber.close()


def _caught_up(scene: Scene, cards: int) -> None:
    wait_until(lambda: len(scene.running.gateway.doors.index) == cards, 15, "allowlist in index")


def test_unregistered_newcomer_is_alerted_on_day_4_and_cleared_when_registered(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    people = [person_entry(1, ["C00001"]), person_entry(2, ["C00002"])]
    assert scene.platform.send("allowlist.snapshot", {"version": 1, "people": people})["ok"]
    local = {
        "person": "P-2",
        "as_of": 1,
        "household_address": "浙江省杭州市西湖区文三路 1 号",
    }
    assert scene.platform.send("person.status", local)["ok"]
    _caught_up(scene, 2)
    write_taps(scene.fifo, ["C00001", "C00002"])  # day 1: both move in
    due = scene.wait_alert("alert.raised", "registration.due")
    assert (due["person"] is not None, due["severity"], due["deadline"]) == (
        True,
        "notice",
        "2026-03-01",
    )
    assert due["building"] == "B-7"
    assert due["id_masked"].count("*") == 11

    scene.clock.advance(2 * DAY)  # day 3: still on time
    wait_until(
        lambda: scene.running.gateway.parts.alerts._last_sweep == scene.clock.now().date(),
        15,
        "day 3 sweep",
    )
    assert not any(a["rule"] == "registration.overdue" for a in scene.alerts("alert.raised"))

    scene.clock.advance(DAY)  # day 4: overdue
    overdue = scene.wait_alert("alert.raised", "registration.overdue")
    assert (overdue["severity"], overdue["person"]) == ("alarm", due["person"])
    assert "2026-03-02" in overdue["action"]
    cleared_due = scene.wait_alert("alert.cleared", "registration.due")
    assert cleared_due["alert"] == due["alert"]
    assert [a["person"] for a in scene.alerts("alert.raised")] == [due["person"]] * 2  # P-2 local

    assert main(["alerts", "--config", str(scene.config_path)]) == 0
    listed = capsys.readouterr().out
    assert "registration.overdue" in listed
    assert "1 open alert(s)" in listed

    registered = {
        "person": "P-1",
        "as_of": 1,
        "registration": {"state": "registered", "building": "B-7", "registered_on": "2026-03-02"},
    }
    assert scene.platform.send("person.status", registered)["ok"]
    cleared = scene.wait_alert("alert.cleared", "registration.overdue")
    assert (cleared["alert"], cleared["reason"]) == (overdue["alert"], "resolved")
    stale = scene.platform.send("person.status", {**registered, "as_of": 1})
    assert (stale["ok"], stale["reason"]) == (False, "stale_version")
    assert main(["alerts", "--config", str(scene.config_path)]) == 0
    assert "no open alerts" in capsys.readouterr().out


def test_permit_endorsement_window_and_suspension(scene: Scene) -> None:
    assert scene.platform.send(
        "allowlist.snapshot", {"version": 1, "people": [person_entry(5, ["C00005"])]}
    )["ok"]
    _caught_up(scene, 1)
    status = {
        "person": "P-5",
        "as_of": 1,
        "registration": {"state": "registered", "building": "B-7"},
        "permit": {"issued_on": "2025-03-10", "endorsed_on": []},
    }
    assert scene.platform.send("person.status", status)["ok"]
    window = scene.wait_alert("alert.raised", "permit.endorsement_due")  # opens 10 Feb
    assert window["deadline"] == "2026-03-10"
    scene.clock.advance(12 * DAY)  # 11 March: the anniversary passed unendorsed
    suspended = scene.wait_alert("alert.raised", "permit.suspended")
    assert suspended["severity"] == "alarm"
    scene.wait_alert("alert.cleared", "permit.endorsement_due")
    late = {
        **status,
        "as_of": 2,
        "permit": {"issued_on": "2025-03-10", "endorsed_on": ["2026-03-11"]},
    }
    assert scene.platform.send("person.status", late)["ok"]
    scene.wait_alert("alert.cleared", "permit.suspended")
