"""The REST API a landlord's and co-ordinator's tools use, against a running gateway.

Real doors behind it: taps go through FIFO line readers to the real decision
path, so an operation is checked by what the door then does, not only by
what the API answers.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import httpx

from tests.support.gateway import wait_until
from tests.support.web import WebGateway

BAD_CHECK = "110105194912310021"  # the check character should be X


def _enrol(client: httpx.Client, id_number: str, card: str, unit: str = "101") -> dict[str, Any]:
    reply = client.post(
        "/api/v1/people",
        json={
            "id_number": id_number,
            "name": "测试租户",
            "unit": unit,
            "cards": [{"card_uid": card}],
        },
    )
    assert reply.status_code == 201, reply.text
    person: dict[str, Any] = reply.json()["person"]
    return person


def _decisions(client: httpx.Client, person: str) -> list[dict[str, Any]]:
    reply = client.get("/api/v1/events", params={"person": person, "type": "access.decision"})
    assert reply.status_code == 200
    events: list[dict[str, Any]] = reply.json()["events"]
    return events


def _tap_and_decide(web: WebGateway, client: httpx.Client, person: str, card: str) -> str:
    """Tap at unit-101; the reason the door gave."""
    before = len(_decisions(client, person))
    web.tap("unit-101", card)
    wait_until(lambda: len(_decisions(client, person)) > before, 10, "the tap decided")
    return str(_decisions(client, person)[0]["data"]["reason"])


def test_a_bad_id_number_is_refused_counted_and_not_echoed(web: WebGateway) -> None:
    refused_before = web.gateway.api.state.refused["bad_request"]
    with web.login("landlord_a") as client:
        reply = client.post(
            "/api/v1/people", json={"id_number": BAD_CHECK, "name": "x", "unit": "101"}
        )
        assert reply.status_code == 422
        assert reply.json()["detail"]["error"] == "bad_request"
        assert "check character" in reply.json()["detail"]["message"]
        assert BAD_CHECK not in reply.text
        reply = client.post("/api/v1/people", json={"id_number": 12, "unexpected": True})
        assert reply.status_code == 422
        assert reply.json()["detail"]["errors"]
        assert web.gateway.api.state.refused["bad_request"] >= refused_before + 2
        metrics = client.get("/metrics").text
        assert 'rentgate_api_refused_total{reason="bad_request"}' in metrics


def test_a_cards_life_lost_unblocked_returned_cancelled_as_the_door_sees_it(
    web: WebGateway,
) -> None:
    with web.login("landlord_a") as client:
        person = _enrol(client, "110101199001011237", "0A1B2C3D")
        card = person["cards"][0]["id"]
        web.wait_for_index()
        assert _tap_and_decide(web, client, person["id"], "0A1B2C3D") == "granted"

        def act(action: str) -> httpx.Response:
            return client.post(f"/api/v1/cards/{card}/action", json={"action": action})

        assert act("report_lost").json()["cards"][0]["status"] == "lost"
        web.wait_for_index()
        assert _tap_and_decide(web, client, person["id"], "0A1B2C3D") == "revoked"
        assert act("unblock").status_code == 200
        web.wait_for_index()
        assert _tap_and_decide(web, client, person["id"], "0A1B2C3D") == "granted"
        assert act("return").json()["cards"][0]["status"] == "returned"
        refused = act("unblock")
        assert refused.status_code == 409
        assert "returned" in refused.json()["detail"]["message"]
        assert act("cancel").json()["cards"][0]["status"] == "cancelled"
        web.wait_for_index()
        assert _tap_and_decide(web, client, person["id"], "0A1B2C3D") == "revoked"
        rules = [a["rule"] for a in client.get("/api/v1/alerts").json()["alerts"]]
        wait_until(
            lambda: (
                "credential.cancelled_used"
                in [
                    a["rule"]
                    for a in client.get("/api/v1/alerts").json()["alerts"]
                    if a["person"] == person["id"]
                ]
            ),
            10,
            "the cancelled card's use alerted",
        )
        del rules


def test_extending_and_moving_out(web: WebGateway) -> None:
    with web.login("landlord_a") as client:
        person = _enrol(client, "110101199001021232", "0A0A0A01")
        card, tenancy = person["cards"][0]["id"], person["tenancies"][0]["id"]
        too_early = client.post(
            f"/api/v1/tenancies/{tenancy}/extend", json={"valid_to": "2001-01-01T00:00:00+08:00"}
        )
        assert too_early.status_code == 422
        naive = client.post(f"/api/v1/cards/{card}/extend", json={"valid_to": "2030-01-01T00:00"})
        assert naive.status_code == 422, "a time without an offset names no instant"
        extended = client.post(
            f"/api/v1/cards/{card}/extend", json={"valid_to": "2030-01-01T00:00:00+08:00"}
        )
        assert extended.json()["cards"][0]["valid_to"].startswith("2030-01-01T00:00:00")
        web.wait_for_index()
        assert _tap_and_decide(web, client, person["id"], "0A0A0A01") == "granted"
        moved = client.post(f"/api/v1/tenancies/{tenancy}/end", json={})
        assert moved.status_code == 200
        assert moved.json()["tenancies"][0]["valid_to"] is not None
        web.wait_for_index()
    with web.login("admin") as admin:  # a former tenant's taps are no longer their landlord's
        assert _tap_and_decide(web, admin, person["id"], "0A0A0A01") != "granted"


def test_revealing_an_id_number_is_an_admins_audited_act(web: WebGateway) -> None:
    person = web.seeded["landlord_a"]["person_id"]
    with web.login("landlord_a") as landlord:
        assert landlord.post(f"/api/v1/people/{person}/reveal").status_code == 403
        assert landlord.get("/api/v1/people").status_code == 200
    with web.login("admin") as admin:
        revealed = admin.post(f"/api/v1/people/{person}/reveal")
        assert revealed.status_code == 200
        assert revealed.json()["id_number"] == "11010519491231002X"
        entries = admin.get("/api/v1/audit", params={"limit": 500}).json()["entries"]
    actions = {(e["actor"], e["action"]) for e in entries if e["subject"] == f"person:{person}"}
    assert ("admin", "id_number.reveal") in actions
    assert ("landlord_a", "person.enrol") in actions
    everything = json.dumps(entries, ensure_ascii=False)
    assert "11010519491231002X" not in everything, "the audit log names people, not numbers"
    assert any(e["action"] == "people.list" for e in entries)


def test_enrol_by_tap_takes_the_card_instead_of_deciding_it(web: WebGateway) -> None:
    with web.login("landlord_a") as client:
        armed = client.post("/api/v1/captures", json={"door": "unit-101"})
        assert armed.status_code == 201
        capture = armed.json()["id"]
        assert client.post("/api/v1/captures", json={"door": "unit-202"}).status_code == 404
        head_before = client.get("/api/v1/sync").json()["head_seq"]
        threading.Timer(0.3, web.tap, ("unit-101", "0F0F0F0F")).start()
        got = client.get(f"/api/v1/captures/{capture}", params={"wait_s": 10}).json()
        assert got["state"] == "captured"
        assert got["masked"] == "0F0*0F0F"
        time.sleep(0.3)
        recorded = client.get("/api/v1/events", params={"door": "unit-101", "limit": 5}).json()
        new = [e for e in recorded["events"] if e["seq"] > head_before]
        assert [(e["type"], e["data"]["stage"]) for e in new] == [("enrol.capture", "captured")]
        assert new[0]["data"]["capture"] == capture, "recorded as taken, not decided"
        person = client.post(
            "/api/v1/people",
            json={
                "id_number": "110101199001031238",
                "name": "刷卡登记",
                "unit": "101",
                "cards": [{"capture": capture}],
            },
        )
        assert person.status_code == 201, person.text
        assert person.json()["person"]["cards"][0]["masked"] == "0F0*0F0F"
        again = client.post(
            "/api/v1/people/" + person.json()["person"]["id"] + "/cards",
            json={"cards": [{"capture": capture}]},
        )
        assert again.status_code == 422, "a capture is used once"
        web.wait_for_index()
        pid = person.json()["person"]["id"]
        assert _tap_and_decide(web, client, pid, "0F0F0F0F") == "granted"


def test_the_live_stream_sends_new_events_and_resumes_after_a_gap(web: WebGateway) -> None:
    mine = web.seeded["landlord_a"]
    with web.login("landlord_a") as client:
        received: list[dict[str, Any]] = []
        with client.stream("GET", "/api/v1/events/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            threading.Timer(0.5, web.tap, ("unit-101", "04A1B2C3")).start()
            event_id = None
            for line in stream.iter_lines():
                if line.startswith("id: "):
                    event_id = int(line[4:])
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
                    if received[-1]["type"] == "access.decision":
                        break
        tap = received[-1]
        assert tap["person"] == mine["person_id"]
        assert tap["seq"] == event_id
        assert "mono" not in tap["data"]
        web.tap("unit-202", "0B0B0B0B")  # landlord B's tenant: never in A's stream
        web.tap("unit-101", "04A1B2C3")
        resumed: list[dict[str, Any]] = []
        headers = {"Last-Event-ID": str(event_id)}
        wait_until(
            lambda: len(_decisions(client, mine["person_id"])) >= 2, 10, "the second tap decided"
        )
        with client.stream("GET", "/api/v1/events/stream", headers=headers) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    resumed.append(json.loads(line[6:]))
                    if resumed[-1]["type"] == "access.decision":
                        break
        assert resumed[-1]["seq"] > event_id
        assert all(event["person"] in (None, mine["person_id"]) for event in resumed)
        assert all(event["door"] != "unit-202" for event in resumed)


def test_the_setup_page_is_closed_once_an_admin_exists(web: WebGateway) -> None:
    with web.anonymous() as client:
        page = client.get("/ui/setup")
        assert page.status_code == 200
        assert "设置码" in page.text
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None
        form = {"code": "whatever", "name": "intruder", "password": "a long enough passphrase"}
        refused = client.post("/ui/setup", data=form | {"login_token": token.group(1)})
        assert refused.status_code == 409
        assert "already has an admin" in refused.text


def test_enrolling_another_landlords_tenant_leaves_their_record_as_it_was(
    web: WebGateway,
) -> None:
    """Landlord B's tenant moves into landlord A's unit too: A may enrol them (the ID number
    is what A was shown) and sees the name A typed; the name B sees stays B's, and nothing
    of B's letting reaches A (tests/api/test_landlord_isolation.py for the rest)."""
    theirs = web.seeded["landlord_b"]
    with web.login("landlord_a") as client:
        reply = client.post(
            "/api/v1/people",
            json={"id_number": "440524188001010014", "name": "改名", "unit": "101"},
        )
        assert reply.status_code == 201, reply.text
        assert reply.json()["new_person"] is True, "new to A: whether B lets them is B's"
        assert reply.json()["person"]["name"] == "改名"
    with web.login("landlord_b") as client:
        person = client.get(f"/api/v1/people/{theirs['person_id']}").json()
        assert person["name"] == theirs["name"]
        assert {t["unit"] for t in person["tenancies"]} == {"202"}, "A's letting is A's"
    with web.login("admin") as client:
        person = client.get(f"/api/v1/people/{theirs['person_id']}").json()
        assert {t["unit"] for t in person["tenancies"]} == {"101", "202"}
