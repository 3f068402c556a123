"""Enrol by tap cannot be turned against residents or another landlord (issue 13).

Real readers behind the API (FIFO line readers): a tap goes through the door
controller, so "swallowed" or "decided" is what the gateway recorded, not what
the API said.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx

from tests.support.gateway import wait_until
from tests.support.web import TENANT_A, WebGateway


def _arm(client: httpx.Client, door: str) -> httpx.Response:
    return client.post("/api/v1/captures", json={"door": door})


def _state(client: httpx.Client, capture: str, wait_s: float = 0) -> dict[str, Any]:
    reply = client.get(f"/api/v1/captures/{capture}", params={"wait_s": wait_s})
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    return found


def _fulfil(web: WebGateway, client: httpx.Client, capture: str, door: str, card: str) -> None:
    """Tap an unknown card at `door` and see `capture` take it."""
    threading.Timer(0.2, web.tap, (door, card)).start()
    assert _state(client, capture, wait_s=10)["state"] == "captured"


def _decisions(client: httpx.Client, person: str) -> list[dict[str, Any]]:
    params = {"person": person, "type": "access.decision"}
    events: list[dict[str, Any]] = client.get("/api/v1/events", params=params).json()["events"]
    return events


def test_a_landlord_arms_only_doors_serving_their_own_units(web: WebGateway) -> None:
    """Before: landlord A armed the shared front door (201) and could swallow every tap there."""
    with web.login("landlord_a") as a:
        shared = _arm(a, "front")
        assert shared.status_code == 403, shared.text
        assert shared.json()["detail"]["error"] == "forbidden"
        assert _arm(a, "unit-202").status_code == 404, "B's door is not A's to know"
        own = _arm(a, "unit-101")
        assert own.status_code == 201, own.text
        _fulfil(web, a, own.json()["id"], "unit-101", "0D0D0D01")
    with web.login("admin") as admin:
        front = _arm(admin, "front")
        assert front.status_code == 201, "a shared door is an admin's to arm"
        _fulfil(web, admin, front.json()["id"], "front", "0D0D0D02")
    with web.login("landlord_a") as a:
        page = a.get("/ui/tenants/new")
        assert page.status_code == 200
        assert 'value="unit-101"' in page.text
        assert 'value="front"' not in page.text, "the form offers only doors A may arm"


def test_a_second_arming_is_refused_and_names_who_armed_the_first(web: WebGateway) -> None:
    """Before: arming replaced the capture waiting at the door, silently, and the second
    caller took the card the first one's tenant tapped."""
    with web.login("landlord_a") as a, web.login("admin") as admin:
        first = _arm(a, "unit-101")
        assert first.status_code == 201, first.text
        for client in (admin, a):
            busy = _arm(client, "unit-101")
            assert busy.status_code == 409, busy.text
            assert busy.json()["detail"]["error"] == "conflict"
            assert busy.json()["detail"]["owner"] == "landlord_a"
        assert web.gateway.api.state.refused["conflict"] >= 2
        capture = first.json()["id"]
        assert _state(a, capture)["state"] == "waiting", "the first capture is still A's"
        _fulfil(web, a, capture, "unit-101", "0D0D0D03")
        again = _arm(admin, "unit-101")
        assert again.status_code == 201, "once taken, the door may be armed again"
        _fulfil(web, admin, again.json()["id"], "unit-101", "0D0D0D04")


def test_a_known_card_tapped_while_a_capture_waits_is_decided_as_usual(web: WebGateway) -> None:
    """Before: every tap at an armed door was swallowed: no decision, no event, door shut."""
    tenant = web.seeded["landlord_a"]["person_id"]
    with web.login("landlord_a") as a:
        armed = _arm(a, "unit-101")
        assert armed.status_code == 201, armed.text
        before = len(_decisions(a, tenant))
        web.tap("unit-101", TENANT_A["card"])
        wait_until(lambda: len(_decisions(a, tenant)) > before, 10, "the resident's tap decided")
        assert _decisions(a, tenant)[0]["data"]["reason"] == "granted"
        assert _state(a, armed.json()["id"])["state"] == "waiting"
        _fulfil(web, a, armed.json()["id"], "unit-101", "0D0D0D05")


def test_every_arming_and_every_captured_tap_is_audited_and_recorded(web: WebGateway) -> None:
    """Before: a capture left no trace at all, in the audit log or in the outbox."""
    with web.login("landlord_a") as a:
        armed = _arm(a, "unit-101")
        assert armed.status_code == 201, armed.text
        capture = armed.json()["id"]
        _fulfil(web, a, capture, "unit-101", "0D0D0D06")
    subject = f"capture:{capture}"
    with web.login("admin") as admin:

        def audited() -> list[tuple[str, str, str | None]]:
            entries = admin.get("/api/v1/audit", params={"limit": 500}).json()["entries"]
            return [
                (e["actor"], e["action"], e["detail"]) for e in entries if e["subject"] == subject
            ]

        wait_until(lambda: len(audited()) == 2, 10, "the tap audited")
        assert audited() == [
            ("landlord_a", "capture.arm", "door unit-101"),
            ("landlord_a", "capture.tap", "0D0*0D06"),
        ]
        events = admin.get("/api/v1/events", params={"type": "enrol.capture", "limit": 50})
        mine = [e for e in events.json()["events"] if e["data"]["capture"] == capture]
    assert [(e["door"], e["data"]["stage"], e["data"]["owner"]) for e in reversed(mine)] == [
        ("unit-101", "armed", "landlord_a"),
        ("unit-101", "captured", "landlord_a"),
    ]
    assert mine[0]["data"]["credential"] == {"kind": "card_uid", "masked": "0D0*0D06"}
    assert "0D0D0D06" not in str(mine), "the card's value stays in the capture"
