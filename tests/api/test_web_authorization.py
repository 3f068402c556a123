"""Who may call what, generated from the app's route table: a new route is covered when added.

Every route either has a `require` gate (whose roles these tests read) or is
named below as public, terminal-only or session-only, with a reason; a route
that is neither fails `test_every_route_says_who_may_call_it`. Then, for every
gated route: anonymous callers get 401 (pages: a redirect to the login page),
a terminal's token gets nothing, a role the gate does not name gets 403, and
landlord A reaching for anything of landlord B's (path ids, query filters,
bodies naming B's unit) gets no B data and changes nothing of B's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.responses import StreamingResponse

from gateway.api.auth import Role
from gateway.api.security import gate_roles
from tests.support.web import WebGateway

PUBLIC = {
    ("GET", "/"): "redirects to the UI",
    ("POST", "/api/v1/login"): "logging in",
    ("POST", "/api/v1/setup"): "first run, guarded by the setup code",
    ("GET", "/ui/login"): "the login page",
    ("POST", "/ui/login"): "logging in",
    ("GET", "/ui/lang"): "sets the language cookie only",
    ("GET", "/ui/setup"): "first run, guarded by the setup code",
    ("POST", "/ui/setup"): "first run, guarded by the setup code",
    ("GET", "/metrics"): "probes: counts, no personal data",
    ("GET", "/healthz"): "probes",
    ("GET", "/readyz"): "probes",
}
SESSION_ONLY = {
    ("POST", "/api/v1/logout"): "anyone logged in ends their own session",
    ("GET", "/api/v1/me"): "anyone logged in sees who they are",
}
TERMINAL_PREFIX = "/api/v1/terminal/"
ENDS_SESSION = {("POST", "/ui/logout")}
"""Gated, but acts on the caller's own session only: called last or not at all."""
HUMAN_ROLES = (Role.ADMIN, Role.LANDLORD, Role.COORDINATOR)
ACCOUNT_OF = {Role.ADMIN: "admin", Role.LANDLORD: "landlord_a", Role.COORDINATOR: "coordinator"}


def _gate(route: APIRoute) -> frozenset[Role] | None:
    found: list[frozenset[Role]] = []

    def walk(dependant: Any) -> None:
        for dependency in dependant.dependencies:
            roles = gate_roles(dependency.call)
            if roles is not None:
                found.append(roles)
            walk(dependency)

    walk(route.dependant)
    return found[0] if found else None


def _routes(web: WebGateway) -> Iterator[tuple[str, str, APIRoute]]:
    """Every (method, full path, route), included routers flattened as FastAPI serves them."""
    for context in iter_route_contexts(web.gateway.api.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path and context.methods:
            for method in sorted(context.methods - {"HEAD"}):
                yield method, context.path, route


def _gated(web: WebGateway) -> list[tuple[str, str, APIRoute, frozenset[Role]]]:
    gated = []
    for method, path, route in _routes(web):
        roles = _gate(route)
        if roles is not None:
            gated.append((method, path, route, roles))
    return gated


def _fill(path: str, seeded: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        return seeded[match.group(1)]

    return re.sub(r"\{(\w+)\}", value, path)


def _body(path: str, seeded: dict[str, str]) -> dict[str, Any]:
    """A body that would succeed if the caller were allowed (so refusals are the gate's)."""
    if path.endswith("/people"):
        return {
            "id_number": "11010519491231002X",
            "name": "闯入者",
            "unit": seeded["unit"],
            "cards": [{"card_uid": "0C0C0C0C"}],
        }
    if path.endswith("/cards"):
        return {"cards": [{"card_uid": "0D0D0D0D"}]}
    if path.endswith("/action"):
        return {"action": "cancel"}
    if path.endswith("/extend"):
        return {"valid_to": "2030-01-01T00:00:00+08:00"}
    if path.endswith("/end"):
        return {}
    if path.endswith("/captures"):
        return {"door": seeded["door"]}
    return {}


def _call(
    client: httpx.Client, method: str, path: str, route: APIRoute, seeded: dict[str, str]
) -> httpx.Response:
    url = _fill(path, seeded)
    if route.response_class is StreamingResponse:
        with client.stream(method, url, headers={"Last-Event-ID": "0"}) as reply:
            text = ""
            if reply.status_code == 200:
                for line in reply.iter_lines():  # what the stream replays, up to a keepalive
                    text += line + "\n"
                    if line.startswith(":") or len(text) > 20_000:
                        break
            else:
                text = reply.read().decode()
            return httpx.Response(reply.status_code, headers=reply.headers, text=text)
    if method == "GET":
        return client.get(url)
    if url.startswith("/ui/"):
        form = {key: str(value) for key, value in _body(path, seeded).items() if key != "cards"}
        form["csrf_token"] = client.headers.get("X-CSRF-Token", "")
        return client.post(url, data=form)
    return client.request(method, url, json=_body(path, seeded))


def test_every_route_says_who_may_call_it(web: WebGateway) -> None:
    unknown = []
    for method, path, route in _routes(web):
        known = (method, path) in PUBLIC or (method, path) in SESSION_ONLY
        if not known and not path.startswith(TERMINAL_PREFIX) and _gate(route) is None:
            unknown.append(f"{method} {path}")
    assert unknown == [], "routes without a require() gate or a listed reason"
    assert len(_gated(web)) >= 25


def test_anonymous_callers_are_refused(web: WebGateway) -> None:
    seeded = web.seeded["landlord_a"]
    with web.anonymous() as client:
        for method, path, route, _roles in _gated(web):
            reply = _call(client, method, path, route, seeded)
            if path.startswith("/ui/"):
                assert reply.status_code == 303, f"{method} {path}: {reply.status_code}"
                assert reply.headers["location"] == "/ui/login"
            else:
                assert reply.status_code == 401, f"{method} {path}: {reply.status_code}"
                assert reply.json()["detail"]["error"] == "not_authenticated"
        for method, path, route in _routes(web):
            if path.startswith(TERMINAL_PREFIX) or (method, path) in SESSION_ONLY:
                reply = _call(client, method, path, route, seeded)
                assert reply.status_code == 401, f"{method} {path}: {reply.status_code}"


def test_a_terminal_token_reads_nothing(web: WebGateway) -> None:
    seeded = web.seeded["landlord_a"]
    with web.terminal() as client:
        for method, path, route, _roles in _gated(web):
            reply = _call(client, method, path, route, seeded)
            assert reply.status_code == 403, f"{method} {path}: {reply.status_code}"
            assert seeded["name"] not in reply.text
            assert seeded["id_masked"] not in reply.text
        assert client.get("/api/v1/terminal/ping").status_code == 200


def test_roles_the_gate_does_not_name_get_403(web: WebGateway) -> None:
    for role in HUMAN_ROLES:
        account = ACCOUNT_OF[role]
        seeded = web.seeded["landlord_a"]
        with web.login(account) as client:
            for method, path, route, roles in _gated(web):
                if role in roles:
                    continue
                reply = _call(client, method, path, route, seeded)
                assert reply.status_code == 403, f"{account} {method} {path}: {reply.status_code}"
            for path in ("/api/v1/terminal/ping",):
                assert client.get(path).status_code == 401  # terminals' endpoints take tokens


def test_landlord_a_gets_nothing_of_landlord_bs(web: WebGateway) -> None:
    theirs = web.seeded["landlord_b"]
    markers = [theirs[key] for key in ("person_id", "name", "id_masked", "card_masked")]
    before = _state_of(web, theirs)
    with web.login("landlord_a") as client:
        for method, path, route, roles in _gated(web):
            if Role.LANDLORD not in roles or (method, path) in ENDS_SESSION:
                continue
            reply = _call(client, method, path, route, theirs)
            if "{" in path or method == "POST":
                assert reply.status_code in (403, 404, 422), (
                    f"{method} {path}: {reply.status_code} {reply.text[:200]}"
                )
            shown = reply.text.replace(_fill(path, theirs), "")
            for marker in markers:
                assert marker not in shown, f"{method} {path} showed {marker}"
        for query in (
            f"/api/v1/events?person={theirs['person_id']}",
            f"/api/v1/events?door={theirs['door']}",
            f"/api/v1/people?unit={theirs['unit']}",
            f"/ui/tenants?unit={theirs['unit']}",
            f"/ui/events?door={theirs['door']}",
        ):
            reply = client.get(query)
            assert reply.status_code == 200, query
            for marker in markers:
                assert marker not in reply.text.replace(theirs["person_id"], "", 0), query
            if query.startswith("/api/v1/events"):
                assert reply.json()["events"] == [], query
    assert _state_of(web, theirs) == before


def test_landlord_a_sees_and_changes_their_own(web: WebGateway) -> None:
    mine = web.seeded["landlord_a"]
    with web.login("landlord_a") as client:
        people = client.get("/api/v1/people").json()["people"]
        assert [person["id"] for person in people] == [mine["person_id"]]
        events = client.get("/api/v1/events", params={"person": mine["person_id"]}).json()
        assert events["events"], "the tenant's own tap is visible to their landlord"
        alerts = client.get("/api/v1/alerts").json()["alerts"]
        assert mine["alert_id"] in [alert["id"] for alert in alerts]
        assert {alert["person"] for alert in alerts} == {mine["person_id"]}
        doors = {door["name"] for door in client.get("/api/v1/doors").json()["doors"]}
        assert doors == {"front", "unit-101"}


def _state_of(web: WebGateway, seeded: dict[str, str]) -> dict[str, Any]:
    with web.login("admin") as admin:
        person = admin.get(f"/api/v1/people/{seeded['person_id']}").json()
        alerts = [a["id"] for a in admin.get("/api/v1/alerts").json()["alerts"]]
    return {
        "cards": [(c["id"], c["status"], c["valid_to"]) for c in person["cards"]],
        "tenancies": [(t["id"], t["valid_to"]) for t in person["tenancies"]],
        "name": person["name"],
        "alert_open": seeded["alert_id"] in alerts,
    }


def test_route_table_is_what_this_file_expects(web: WebGateway, tmp_path: Path) -> None:
    """The listed public and session-only routes exist (a rename must update this file)."""
    present = {(method, path) for method, path, _route in _routes(web)}
    assert set(PUBLIC) <= present
    assert set(SESSION_ONLY) <= present
    del tmp_path
