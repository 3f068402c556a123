"""An ID card at a SAM reader, through a running gateway, to a Mosquitto subscriber."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from gateway.devices.sam.simulator import SamSimulator, make_card
from gateway.domain.idcard import CardKind
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import InProcessGateway, Subscriber, load, wait_until, write_config
from tests.support.platform import Platform, key_file, person_entry

GW = "GW-IDCARD"


def test_id_card_opens_the_door_and_its_number_never_travels_in_full(
    tmp_path: Path, broker: LocalBroker
) -> None:
    rng = random.Random(11)
    local = dataclasses.replace(
        make_card(rng, CardKind.RESIDENT), address="浙江省杭州市西湖区文三路1号"
    )
    outsider = dataclasses.replace(
        make_card(rng, CardKind.RESIDENT), address="安徽省合肥市蜀山区长江西路2号"
    )
    stranger = make_card(rng, CardKind.RESIDENT)
    key, public = key_file(tmp_path / "platform")
    with SamSimulator() as reader:
        path = write_config(
            tmp_path,
            f"mqtt://127.0.0.1:{broker.port}",
            gateway_id=GW,
            reader_path=Path("/nonexistent"),
            extra=f'[platform]\nkeys = ["{public}"]\n\n[[devices]]\nkind = "idcard-sam"\n'
            f'door = "front"\npath = "{reader.path}"\nname = "desk"\n',
        )
        subscriber = Subscriber(broker.port, f"rentgate/v1/{GW}/#", client_id="idcard-test")
        with InProcessGateway(load(path)) as running:
            platform = Platform(broker, GW, key, running.gateway.clock)
            running.wait_connected()
            people = []
            for serial, card in enumerate((local, outsider)):
                entry = person_entry(serial, [])
                entry["id_number"] = card.id_number
                entry["credentials"] = [{"kind": "id_number", "value": card.id_number}]
                people.append(entry)
            try:
                assert platform.send_snapshot(1, people)["ok"]
            finally:
                platform.close()
            wait_until(lambda: len(running.gateway.doors.index) == 2, 15, "allowlist")
            for card in (local, outsider, stranger):
                count = len(subscriber.decisions())
                reader.present(card)
                wait_until(lambda c=count: len(subscriber.decisions()) > c, 15, "decision")
                reader.remove()
                gone = reader.replies["find_no_card"] + 2  # the driver's "card has left" rule
                wait_until(lambda g=gone: reader.replies["find_no_card"] >= g, 15, "card gone")
            wait_until(
                lambda: any(e["type"] == "alert.raised" for e in subscriber.events()),
                15,
                "the outsider's registration alert",
            )
        subscriber.close()
    decisions = subscriber.decisions()
    assert [(d["result"], d["reason"], d["reader"]) for d in decisions] == [
        ("allow", "granted", "desk"),
        ("allow", "granted", "desk"),
        ("deny", "unknown", "desk"),
    ]
    for decision, card in zip(decisions, (local, outsider, stranger), strict=True):
        credential = decision["credential"]
        assert credential["kind"] == "id_number"
        assert credential["masked"] == card.id_number[:3] + "*" * 11 + card.id_number[-4:]
        assert len(credential["hash"]) == 32
    published = [m for m in subscriber.snapshot() if "/cmd/" not in m.topic]  # the gateway's own
    traffic = json.dumps([m.payload.decode() for m in published], ensure_ascii=False)
    for card in (local, outsider, stranger):
        assert card.id_number not in traffic
        assert card.name not in traffic
        assert card.address not in traffic
    alerts = [e for e in subscriber.events() if e["type"] == "alert.raised"]
    assert [a["rule"] for a in alerts] == ["registration.due"]  # the local tenant owes nothing
    assert alerts[0]["person"] == decisions[1]["person"]
