"""Landlords stay in their own houses: one person let by two landlords (the same ID number
enrolled by each) gives neither anything of the other's letting.

The rule under test (gateway/api/directory.py): a landlord sees the name they
entered, the cards enrolled for their units, and the person's alerts and door
events only during their own tenancy, at the doors serving their units;
enrolling a known ID number answers as for a newcomer. Admins see everything.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import httpx

from gateway.store import residents
from tests.support.gateway import SH, wait_until
from tests.support.web import TENANT_B, WebGateway

NEWCOMER = "110101199001041233"
SEEN_LONG_AGO = "11010119900107123X"
NEVER_SEEN = "110101199001051239"
LONG_AGO = "2001-01-01T00:00:00+08:00"


def _events(client: httpx.Client, person: str) -> list[dict[str, Any]]:
    reply = client.get("/api/v1/events", params={"person": person, "limit": 200})
    assert reply.status_code == 200, reply.text
    events: list[dict[str, Any]] = reply.json()["events"]
    return events


def _decisions(client: httpx.Client, person: str) -> list[dict[str, Any]]:
    return [e for e in _events(client, person) if e["type"] == "access.decision"]


def _enrol(client: httpx.Client, id_number: str, unit: str, **extra: Any) -> dict[str, Any]:
    body = {"id_number": id_number, "name": "王五", "unit": unit, **extra}
    reply = client.post("/api/v1/people", json=body)
    assert reply.status_code == 201, reply.text
    enrolled: dict[str, Any] = reply.json()
    return enrolled


def _as_shown(enrolled: dict[str, Any]) -> dict[str, Any]:
    """An enrolment answer without what differs between any two people (ids, the masked
    number typed, the moment of enrolment)."""
    person = dict(enrolled["person"])
    for key in ("id", "id_masked"):
        del person[key]
    person["tenancies"] = [
        {k: v for k, v in t.items() if k not in ("id", "valid_from")} for t in person["tenancies"]
    ]
    return {**enrolled, "person": person}


def test_enrolling_another_landlords_tenant_answers_as_for_a_newcomer(web: WebGateway) -> None:
    """Before: 201 with new_person false, landlord B's stored name and B's card."""
    with web.login("landlord_b") as b:  # a tenant of B's who was never at the doors
        never_seen = _enrol(b, NEVER_SEEN, "202")
    with web.login("landlord_a") as a:
        fresh = _enrol(a, NEWCOMER, "101")
        seen_elsewhere = _enrol(a, TENANT_B["id_number"], "101")
        unseen_elsewhere = _enrol(a, NEVER_SEEN, "101")
    assert never_seen["new_person"] is True
    for enrolled in (fresh, seen_elsewhere, unseen_elsewhere):
        assert enrolled["new_person"] is True, "new to the caller; elsewhere is not theirs"
        assert enrolled["person"]["name"] == "王五", "the name the caller typed, not B's"
        assert enrolled["person"]["cards"] == []
        assert [t["unit"] for t in enrolled["person"]["tenancies"]] == ["101"]
        assert enrolled["person"]["open_alerts"] == 0
    assert _as_shown(unseen_elsewhere) == _as_shown(fresh)
    shown = _as_shown(seen_elsewhere)
    assert {**shown, "person": {**shown["person"], "registration": None}} == {
        **_as_shown(fresh),
        "person": {**_as_shown(fresh)["person"], "registration": None},
    }, "all but the residence standing, which is the person's at the building (R1)"
    theirs = web.seeded["landlord_b"]
    for marker in (theirs["name"], theirs["card_masked"], theirs["alert_id"]):
        assert marker not in str(seen_elsewhere)
    with web.login("landlord_b") as b:
        person = b.get(f"/api/v1/people/{theirs['person_id']}").json()
        assert person["name"] == theirs["name"], "B's record is as B left it"
        assert [t["unit"] for t in person["tenancies"]] == ["202"]


def test_a_shared_tenants_history_cards_and_alerts_stay_with_each_landlord(
    web: WebGateway,
) -> None:
    """Before: A, having enrolled B's tenant, read their whole door history (B's door
    included), saw B's card and could report it lost, locking the tenant out at B's door."""
    theirs = web.seeded["landlord_b"]
    with web.login("landlord_a") as a:
        enrolled = _enrol(
            a,
            TENANT_B["id_number"],
            "101",
            valid_from=LONG_AGO,  # dating the tenancy back opens no older history
            cards=[{"card_uid": "0A0A0A0A"}],
        )
        person = enrolled["person"]["id"]
        assert person == theirs["person_id"], "the same person: the case under test"
        assert _events(a, person) == [], "nothing from before A's tenancy was recorded"
        for action in ("report_lost", "cancel", "return"):
            reply = a.post(f"/api/v1/cards/{theirs['card_id']}/action", json={"action": action})
            assert reply.status_code == 404, (action, reply.text)
        extend = {"valid_to": "2030-01-01T00:00:00+08:00"}
        assert a.post(f"/api/v1/cards/{theirs['card_id']}/extend", json=extend).status_code == 404
        again = a.post(f"/api/v1/people/{person}/cards", json={"cards": [{"card_uid": "0B0B0B0B"}]})
        assert again.status_code == 409, "B's card is enrolled; its owner is not A's to know"
        assert theirs["alert_id"] not in {x["id"] for x in a.get("/api/v1/alerts").json()["alerts"]}
        web.wait_for_index()
        web.tap("unit-202", TENANT_B["card"])  # B's door, B's card
        web.tap("unit-101", "0A0A0A0A")  # A's door, A's card
        wait_until(lambda: len(_decisions(a, person)) >= 1, 10, "A's tap decided")
    with web.login("admin") as admin:
        wait_until(
            lambda: {"unit-101", "unit-202"} <= {e["door"] for e in _decisions(admin, person)},
            10,
            "both taps recorded",
        )
        cards = {c["masked"] for c in admin.get(f"/api/v1/people/{person}").json()["cards"]}
        assert cards == {theirs["card_masked"], "0A0*0A0A"}, "admins see everything"
    with web.login("landlord_a") as a:
        mine = _decisions(a, person)
        assert {e["door"] for e in mine} == {"unit-101"}
        assert all(e["data"]["credential"]["masked"] == "0A0*0A0A" for e in mine)
        shown = a.get(f"/api/v1/people/{person}").json()
        assert [c["masked"] for c in shown["cards"]] == ["0A0*0A0A"]
        assert a.get("/api/v1/events", params={"door": "unit-202"}).json()["events"] == []
    with web.login("landlord_b") as b:
        theirs_now = _decisions(b, person)
        assert "unit-101" not in {e["door"] for e in theirs_now}, "A's door is not B's"
        assert "unit-202" in {e["door"] for e in theirs_now}
        shown = b.get(f"/api/v1/people/{person}").json()
        assert [c["masked"] for c in shown["cards"]] == [theirs["card_masked"]]
        assert shown["name"] == theirs["name"]
        assert shown["open_alerts"] >= 1, "B's alert about B's tenant is B's"
        lost = b.post(f"/api/v1/cards/{theirs['card_id']}/action", json={"action": "report_lost"})
        assert lost.status_code == 200, "B still controls B's card"
        assert b.post(f"/api/v1/cards/{theirs['card_id']}/action", json={"action": "unblock"})
    with web.login("coordinator") as coordinator:  # co-ordinators see every alert, as before
        assert coordinator.get(f"/api/v1/people/{person}").json()["open_alerts"] >= 1
    with web.login("landlord_a") as a:
        assert a.get(f"/api/v1/people/{person}").json()["open_alerts"] == 0


def test_a_former_tenants_events_after_move_out_are_not_their_landlords(web: WebGateway) -> None:
    with web.login("landlord_a") as a:
        enrolled = _enrol(a, "110101199001061234", "101", cards=[{"card_uid": "0E0E0E0E"}])
        person, tenancy = enrolled["person"]["id"], enrolled["person"]["tenancies"][0]["id"]
        web.wait_for_index()
        web.tap("unit-101", "0E0E0E0E")
        wait_until(lambda: len(_decisions(a, person)) == 1, 10, "the tap while a tenant")
        assert a.post(f"/api/v1/tenancies/{tenancy}/end", json={}).status_code == 200
        web.wait_for_index()
        web.tap("unit-101", "0E0E0E0E")
        web.tap("front", "0E0E0E0E")
    with web.login("admin") as admin:
        wait_until(lambda: len(_decisions(admin, person)) == 3, 10, "the taps after move-out")
        assert all(e["person"] == person for e in _decisions(admin, person))
    with web.login("landlord_a") as a:
        assert len(_decisions(a, person)) == 1, "only what happened during the tenancy"
        for stretch in ("extend", "end"):
            longer = {"valid_to": "2030-01-01T00:00:00+08:00"}
            if stretch == "end":
                longer = {"moved_out_at": longer["valid_to"]}
            reply = a.post(f"/api/v1/tenancies/{tenancy}/{stretch}", json=longer)
            assert reply.status_code == 409, "an ended tenancy is not stretched over the gap"
        assert len(_decisions(a, person)) == 1
        with a.stream("GET", "/api/v1/events/stream", headers={"Last-Event-ID": "0"}) as stream:
            replayed = []
            for line in stream.iter_lines():
                if line.startswith(":"):
                    break
                decision = '"type":"access.decision"' in line
                if line.startswith("data: ") and decision and f'"person":"{person}"' in line:
                    replayed.append(line)
        assert len(replayed) == 1, "the live feed cuts the same way"


def test_a_shared_tenants_standing_shows_no_date_from_before_the_letting(web: WebGateway) -> None:
    """Before: landlord A saw 'overdue since' the day B's tenant first came to the building."""
    with web.login("landlord_b") as b:
        person = _enrol(b, SEEN_LONG_AGO, "202")["person"]["id"]
    today = datetime.now(SH).date()
    long_ago = today - timedelta(days=40)
    web.gateway.writer.submit(
        lambda conn: residents.note_presence(conn, person, long_ago, datetime.now(SH))
    ).result(10)
    with web.login("landlord_b") as b:
        theirs = b.get(f"/api/v1/people/{person}").json()["registration"]
        assert theirs["state"] == "overdue", "B's tenant since 40 days: B sees it all"
    with web.login("landlord_a") as a:
        mine = _enrol(a, SEEN_LONG_AGO, "101")["person"]["registration"]
    assert mine["state"] == "due"
    assert date.fromisoformat(mine["deadline"]) >= today
    assert long_ago.isoformat() not in str(mine)
