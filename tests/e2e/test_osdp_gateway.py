"""An OSDP reader (a real libosdp peripheral on a pty) at a running gateway's door, end to end:
card → decision → relay pulse at the reader; held-open, forced-open and offline alarms at a
Mosquitto subscriber."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.devices.osdp.keys import write_key
from gateway.devices.osdp.simulator import OsdpSimBus, SimCommand, SimPeripheral
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import InProcessGateway, Subscriber, enrol_cards, load, wait_until

GW = "GW-OSDP"
KEY = bytes(range(16))
CARD = 0x04A1B2C3D4  # enrolled as card_uid 04A1B2C3D4 (40 raw bits)
HELD_OPEN_S = 1.0


@dataclass
class Door:
    reader: SimPeripheral
    sim: OsdpSimBus
    subscriber: Subscriber
    running: InProcessGateway

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.subscriber.events() if e["type"] == kind]

    def alarm(self, alarm: str, state: str) -> dict[str, Any]:
        wait_until(
            lambda: any(
                e["alarm"] == alarm and e["state"] == state for e in self.events("door.alarm")
            ),
            15,
            f"door.alarm {alarm} {state}",
        )
        return next(
            e for e in self.events("door.alarm") if e["alarm"] == alarm and e["state"] == state
        )


@pytest.fixture
def door(tmp_path: Path, broker: LocalBroker) -> Iterator[Door]:
    key_file = tmp_path / "front.key"
    write_key(key_file, KEY)
    with OsdpSimBus() as sim:
        reader = sim.add(1, KEY)
        sim.start()
        path = tmp_path / "gateway.toml"
        path.write_text(
            f"""
[gateway]
id = "{GW}"
data_dir = "{tmp_path / "data"}"

[mqtt]
url = "{broker.url}"
reconnect_max_s = 1

[api]
listen = "127.0.0.1:0"

[[doors]]
name = "front"
held_open_s = {HELD_OPEN_S}
unlock_seconds = 2

[[devices]]
kind = "osdp"
door = "front"
path = "{sim.path}"
address = 1
key_file = "{key_file}"
name = "front-osdp"
""",
            encoding="utf-8",
        )
        config = load(path)
        enrol_cards(config, ["04A1B2C3D4"])
        subscriber = Subscriber(broker.port, f"rentgate/v1/{GW}/#", client_id="osdp-gw-test")
        with InProcessGateway(config) as running:
            wait_until(lambda: reader.sc_active, 20, "secure channel up")
            try:
                yield Door(reader, sim, subscriber, running)
            finally:
                subscriber.close()


def test_card_opens_the_relay_then_held_open_then_closed(door: Door) -> None:
    door.reader.present_card(CARD, 40)
    wait_until(lambda: len(door.events("access.decision")) == 1, 15, "the decision")
    decision = door.events("access.decision")[0]
    assert (decision["result"], decision["reader"], decision["credential"]["masked"]) == (
        "allow",
        "front-osdp",
        "04A***C3D4",
    )
    door.reader.wait_for(lambda cs: any(c.kind is SimCommand.OUTPUT for c in cs), 10)
    door.reader.wait_for(lambda cs: any(c.kind is SimCommand.LED for c in cs), 10)
    door.reader.set_contact(open_=True)  # within the grant: no forced-open
    held = door.alarm("held_open", "raised")
    assert (held["door"], held["fail_mode"]) == ("front", "secure")
    door.reader.set_contact(open_=False)
    door.alarm("held_open", "cleared")
    assert not any(e["alarm"] == "forced_open" for e in door.events("door.alarm"))
    status = door.running.gateway.status()
    assert status.readers["front-osdp"].online is True
    assert status.doors["front"].alarms == ()


def test_door_opened_without_a_grant_is_forced_open(door: Door) -> None:
    door.reader.set_contact(open_=True)
    forced = door.alarm("forced_open", "raised")
    assert forced["device"] == "front-osdp"
    door.reader.set_contact(open_=False)
    door.alarm("forced_open", "cleared")
    door.reader.press_exit()  # leaving from inside is not forced
    door.reader.set_contact(open_=True)
    door.reader.set_contact(open_=False)
    wait_until(lambda: door.running.gateway.doors.counters.signals["exit_request"] >= 1, 10, "REX")
    assert len([e for e in door.events("door.alarm") if e["alarm"] == "forced_open"]) == 2


def test_a_silent_reader_raises_an_offline_alarm_and_clears_it_when_back(door: Door) -> None:
    door.sim.stop()
    offline = door.alarm("reader_offline", "raised")
    assert offline["device"] == "front-osdp"
    assert offline["detail"]
    door.sim.start()
    door.alarm("reader_offline", "cleared")
    status = door.running.gateway.status()
    assert os.getpid() == status.pid
    assert status.doors["front"].alarms == ()
