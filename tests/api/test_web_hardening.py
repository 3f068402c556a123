"""Issue 13's web findings against a running gateway: headers, schema, dates, audit, proxies,
login CSRF.

One gateway for the module (tests/support/web.py); every request comes from
loopback, as the tester's did.
"""

from __future__ import annotations

import re
import warnings
from contextlib import closing

import httpx
from fastapi import FastAPI

from gateway.api import auth
from gateway.api.headers import SecurityHeaders
from gateway.store import users
from gateway.store.db import connect
from tests.support.terminal import record_json
from tests.support.web import PASSWORD, WebGateway

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from fastapi.testclient import TestClient

EXPECTED = {
    "strict-transport-security": "max-age=31536000",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def _assert_secured(reply: httpx.Response) -> None:
    where = f"{reply.request.method} {reply.request.url.path} ({reply.status_code})"
    for name, value in EXPECTED.items():
        assert reply.headers.get(name) == value, f"{where}: {name}"
    assert "frame-ancestors 'none'" in reply.headers["content-security-policy"], where


# -- security headers, /docs -------------------------------------------------


def test_every_kind_of_response_carries_the_security_headers(web: WebGateway) -> None:
    with web.anonymous() as anonymous:
        for reply in (
            anonymous.get("/api/v1/me"),  # a JSON refusal
            anonymous.post("/api/v1/login", json={"name": "x"}),  # a validation error
            anonymous.get("/healthz"),
            anonymous.get("/ui/login"),  # a page
            anonymous.get("/ui/static/app.css"),
            anonymous.get("/no/such/path"),
            anonymous.get("/ui/tenants"),  # a redirect to the login page
        ):
            _assert_secured(reply)
    with web.login("landlord_a") as client:
        _assert_secured(client.get("/api/v1/people"))
        _assert_secured(client.get("/api/v1/people/nobody"))
        _assert_secured(client.get("/ui/tenants"))


def test_a_crash_is_a_500_with_the_security_headers() -> None:
    app = FastAPI()
    app.add_middleware(SecurityHeaders)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        reply = client.get("/boom")
    assert reply.status_code == 500
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["cache-control"] == "no-store"


def test_the_api_document_needs_a_login_and_no_cdn_ui_is_served(web: WebGateway) -> None:
    with web.anonymous() as anonymous:
        refused = anonymous.get("/api/openapi.json")
        assert (refused.status_code, refused.json()["detail"]["error"]) == (
            401,
            "not_authenticated",
        )
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            reply = anonymous.get(path)
            assert reply.status_code == 404, path
            assert "cdn" not in reply.text.lower(), path
    with web.login("coordinator") as client:
        document = client.get("/api/openapi.json")
        assert document.status_code == 200
        assert "/api/v1/people" in document.json()["paths"]


# -- dates out of range ------------------------------------------------------

FAR = "9999-12-31T23:59:59-14:00"


def test_times_out_of_range_are_422_and_the_tenant_page_still_answers(web: WebGateway) -> None:
    mine = web.seeded["landlord_a"]
    refused_before = web.gateway.api.state.refused["bad_request"]
    with web.login("landlord_a") as client:
        before = client.get(f"/api/v1/people/{mine['person_id']}").json()
        for path, body in (
            (f"/api/v1/tenancies/{mine['tenancy_id']}/extend", {"valid_to": FAR}),
            (f"/api/v1/cards/{mine['card_id']}/extend", {"valid_to": FAR}),
            (f"/api/v1/tenancies/{mine['tenancy_id']}/end", {"moved_out_at": FAR}),
            (f"/api/v1/cards/{mine['card_id']}/extend", {"valid_to": "1999-12-31T00:00:00Z"}),
            ("/api/v1/people", {"id_number": "110101199001011237", "name": "x", "unit": "101",
                                "valid_from": FAR}),
        ):  # fmt: skip
            reply = client.post(path, json=body)
            assert reply.status_code == 422, f"{path}: {reply.status_code} {reply.text}"
            assert "the year must be 2000 to 2100" in reply.text
        reply = client.get("/api/v1/events", params={"since": FAR})
        assert reply.status_code == 422
        page = client.post(
            f"/ui/tenancies/{mine['tenancy_id']}/extend",
            data={"valid_to": "9999-12-31", "csrf_token": client.headers["X-CSRF-Token"]},
        )
        assert page.status_code == 422
        assert client.get(f"/ui/tenants/{mine['person_id']}").status_code == 200
        assert client.get(f"/api/v1/people/{mine['person_id']}").json() == before  # unchanged
    assert web.gateway.api.state.refused["bad_request"] >= refused_before + 6


def test_a_terminal_record_from_year_9999_is_rejected(web: WebGateway) -> None:
    far = record_json(
        terminal="hh-01",
        serial=7,
        captured_at=FAR,
        moved_in_on="9999-12-30",
        building="GW-WEB",
        unit="101",
    )
    with web.terminal() as client:
        reply = client.post("/api/v1/terminal/records", json={"records": [far]})
    assert reply.status_code == 422
    assert reply.json()["results"][0]["outcome"] == "rejected"


# -- every view of personal data is audited ----------------------------------


def _audit_of(web: WebGateway, actor: str, after_id: int = 0) -> list[users.AuditEntry]:
    with closing(connect(web.config.gateway.database, readonly=True)) as conn:
        entries = users.audit_entries(conn, after_id=after_id, limit=10_000)
    return [entry for entry in entries if entry.actor == actor]


def _open_stream(client: httpx.Client, headers: dict[str, str], until: str) -> str:
    """What the stream sends up to the first line starting with `until`; then it is closed."""
    text = ""
    with client.stream("GET", "/api/v1/events/stream", headers=headers) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            text += line + "\n"
            if line.startswith(until):
                break
    return text


def test_the_stream_its_replay_alerts_and_dashboard_are_audited(web: WebGateway) -> None:
    mine = web.seeded["landlord_a"]
    with web.login("landlord_a") as client:
        start = _audit_of(web, "landlord_a")[-1].id
        _open_stream(client, {}, "retry:")
        replayed = _open_stream(client, {"Last-Event-ID": "0"}, "data:")
        assert '"door":' in replayed  # the replay showed door history
        assert mine["alert_id"] in client.get("/api/v1/alerts").text
        assert client.get("/ui/alerts").status_code == 200
        assert client.get("/ui/").status_code == 200
    with web.login("admin") as admin:
        assert admin.get("/api/v1/audit").status_code == 200
    seen = [(e.action, e.detail) for e in _audit_of(web, "landlord_a", start)]
    assert ("events.stream", "live") in seen
    assert any(a == "events.stream" and (d or "").startswith("live, replaying") for a, d in seen)
    assert [a for a, _d in seen].count("alerts.list") == 2
    assert "dashboard.view" in [a for a, _d in seen]
    assert [e.action for e in _audit_of(web, "admin")][-1] == "audit.view"


# -- X-Forwarded-For ---------------------------------------------------------


def test_x_forwarded_for_from_loopback_is_not_believed(web: WebGateway) -> None:
    with web.anonymous() as client:
        start = _audit_of(web, "landlord_b")[-1].id
        reply = client.post(
            "/api/v1/login",
            json={"name": "landlord_b", "password": "not the password"},
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
        assert reply.status_code == 401
    [failed] = _audit_of(web, "landlord_b", start)
    assert failed.action == "login.failed"
    assert failed.detail == "wrong password, from 127.0.0.1"


# -- login CSRF --------------------------------------------------------------

EVIL = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}


def _login_token(page: httpx.Response) -> str:
    found = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert found, "the login form carries a token"
    return found.group(1)


def test_a_cross_site_login_post_gets_no_session(web: WebGateway) -> None:
    """Issue 13: a form on another site posting to /ui/login got a session cookie."""
    form = {"name": "landlord_a", "password": PASSWORD}
    with web.anonymous() as client:
        forged = client.post("/ui/login", data=form, headers=EVIL)  # what the tester sent
        assert (forged.status_code, auth.SESSION_COOKIE in forged.cookies) == (403, False)
        token = _login_token(client.get("/ui/login"))
        for headers, data in (
            (EVIL, form | {"login_token": token}),  # a browser on another site, token or not
            ({"Origin": "null"}, form | {"login_token": token}),
            ({"Sec-Fetch-Site": "same-site"}, form | {"login_token": token}),
            ({}, form),  # a browser sending neither header: the token is missing
            ({}, form | {"login_token": token[:-2] + "xx"}),
        ):
            reply = client.post("/ui/login", data=data, headers=headers)
            assert reply.status_code == 403, (headers, reply.status_code)
            assert auth.SESSION_COOKIE not in reply.cookies
            assert "此请求并非来自本网关的页面" in reply.text
        api = client.post("/api/v1/login", json=form, headers=EVIL)
        assert (api.status_code, api.json()["detail"]["error"]) == (403, "cross_site")
        assert auth.SESSION_COOKIE not in api.cookies
        assert client.get("/api/v1/me").status_code == 401


def test_the_login_form_from_this_gateway_still_logs_in(web: WebGateway) -> None:
    with web.anonymous() as client:
        page = client.get("/ui/login")
        same_origin = {"Origin": web.url, "Sec-Fetch-Site": "same-origin"}
        reply = client.post(
            "/ui/login",
            data={"name": "landlord_a", "password": PASSWORD, "login_token": _login_token(page)},
            headers=same_origin,
        )
        assert (reply.status_code, reply.headers["location"]) == (303, "/ui/")
        assert auth.SESSION_COOKIE in reply.cookies
        assert client.get("/api/v1/me").json()["name"] == "landlord_a"


def test_a_session_form_posted_from_another_site_is_refused(web: WebGateway) -> None:
    with web.login("landlord_a") as client:
        reply = client.post("/api/v1/logout", headers=EVIL)
        assert (reply.status_code, reply.json()["detail"]["error"]) == (403, "cross_site")
        assert client.get("/api/v1/me").status_code == 200  # still logged in
