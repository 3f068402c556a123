"""Users, roles, sessions, CSRF, login rate limit, first-run setup and the audit log.

A real store (SQLite file with migration 6, the real writer thread) behind an
app holding only the security router and a few test-only protected routes,
driven through FastAPI's TestClient over https:// (the cookie is Secure).
Time is a ManualClock, so expiry and rate-limit windows move without waiting.
No `from __future__ import annotations`: FastAPI must read the test routes'
annotations, which name locals of `protected_app`.
"""

import argparse
import hmac
import sqlite3
import stat
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI

from gateway.api import auth
from gateway.api.accounts import Accounts, reveal_id_number
from gateway.api.auth import AuthFailure, Principal, Role, may_see_unit
from gateway.api.login_limit import Backoff, account_key, pair_key
from gateway.api.security import current_principal, http_error, require, security_router
from gateway.cli.users import add_parsers, run_users
from gateway.clock import ManualClock
from gateway.residence.intake import TerminalRegistry, issue_token_offline
from gateway.store import users
from gateway.store.db import connect, transaction
from gateway.store.migrations import migrate
from gateway.store.writer import Writer
from tests.support.gateway import load, write_config

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 behind its TestClient; httpx (the terminal's client) works.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from fastapi.testclient import TestClient

PASSWORD = "correct horse battery"
START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone(timedelta(hours=8)))


def make_store(path: Path) -> Path:
    conn = connect(path)
    migrate(conn)
    conn.close()
    return path


@dataclass
class Gate:
    client: TestClient
    accounts: Accounts
    clock: ManualClock
    database: Path
    writer: Writer
    terminal_token: str

    def add_user(self, name: str, role: str = "landlord", units: tuple[str, ...] = ("3",)) -> None:
        password_hash = auth.hash_password(PASSWORD)
        with self.conn() as conn, transaction(conn):
            users.create_user(
                conn,
                name=name,
                role=role,
                password_hash=password_hash,
                created_at=START.isoformat(),
                units=units if role == "landlord" else (),
            )

    def login(self, name: str, password: str = PASSWORD, **kwargs: Any) -> Any:
        return self.client.post(
            "/api/v1/login", json={"name": name, "password": password}, **kwargs
        )

    @contextmanager
    def conn(self) -> Iterator[sqlite3.Connection]:
        conn = connect(self.database)
        try:
            yield conn
        finally:
            conn.close()

    def login_from(self, address: str, name: str, password: str = PASSWORD) -> Any:
        """A login from another client address (a TestClient of its own on the same app)."""
        client = TestClient(self.client.app, base_url="https://testserver", client=(address, 1))
        with client:
            return client.post("/api/v1/login", json={"name": name, "password": password})

    def audit(self) -> list[users.AuditEntry]:
        self.writer.flush()
        with self.conn() as conn:
            return users.audit_entries(conn, limit=1000)


def protected_app(accounts: Accounts) -> FastAPI:
    """The security router plus test-only routes that exercise the dependencies."""
    app = FastAPI()
    app.include_router(security_router(accounts))
    Admin = Annotated[Principal, Depends(require(accounts, Role.ADMIN))]
    Anyone = Annotated[Principal, Depends(current_principal(accounts))]

    @app.get("/test/admin")
    async def admin_only(principal: Admin) -> dict[str, str]:
        return {"name": principal.name}

    @app.post("/test/change")
    async def change(principal: Anyone) -> dict[str, str]:
        return {"name": principal.name, "role": principal.role.value}

    @app.post("/test/reveal/{person}")
    async def reveal(person: str, principal: Anyone) -> dict[str, str]:
        try:
            number = await reveal_id_number(
                accounts, principal, person, lambda: "33010219900101123X"
            )
        except AuthFailure as failure:
            raise http_error(failure) from failure
        return {"id_number": number}

    return app


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    database = make_store(tmp_path / "gateway.db")
    clock = ManualClock(START)
    token = issue_token_offline(database, "T-01", clock)
    writer = Writer(database)
    writer.start()
    registry = TerminalRegistry(database, writer=writer, clock=clock)
    accounts = Accounts(
        database,
        writer=writer,
        clock=clock,
        setup_code_file=tmp_path / "data" / "setup-code",
        terminals=registry,
    )
    with TestClient(protected_app(accounts), base_url="https://testserver") as client:
        yield Gate(client, accounts, clock, database, writer, token)
    accounts.close()
    registry.close()
    writer.close()


def error_of(response: Any) -> str:
    return str(response.json()["detail"]["error"])


# -- passwords, roles --------------------------------------------------------


def test_password_hash_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = auth.hash_password(PASSWORD)
    assert stored.startswith(f"scrypt$n={2**15},r=8,p=1$")
    assert PASSWORD not in stored
    assert auth.hash_password(PASSWORD) != stored  # a fresh salt every time
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert auth.verify_password(PASSWORD, stored)
    assert not auth.verify_password(PASSWORD + "!", stored)
    assert len(compared) == 2  # both checks went through the constant-time compare
    for broken in ("", "scrypt$x", stored.replace("scrypt", "md5"), stored.replace("n=", "n=2")):
        assert not auth.verify_password(PASSWORD, broken)


def test_a_landlord_sees_only_their_own_units() -> None:
    landlord = Principal(1, "li", Role.LANDLORD, frozenset({"3", "5"}))
    assert may_see_unit(landlord, "3")
    assert may_see_unit(landlord, "5")
    assert not may_see_unit(landlord, "4")
    assert may_see_unit(Principal(2, "root", Role.ADMIN), "4")
    assert may_see_unit(Principal(3, "wang", Role.COORDINATOR), "4")
    assert not may_see_unit(Principal(None, "T-01", Role.TERMINAL), "3")


def test_the_wait_doubles_past_the_free_failures_up_to_its_cap_and_is_forgotten() -> None:
    backoff = Backoff(free=5, first_wait_s=30, max_wait_s=900, window_s=3600)
    five = [100.0, 110, 120, 130, 140]
    assert backoff.retry_after(five, 141.0) is None  # the allowance: no wait
    assert backoff.retry_after([*five, 150], 160.0) == 20  # 30 s after the sixth
    assert backoff.retry_after([*five, 150, 190], 200.0) == 50  # 60 s after the seventh
    assert backoff.retry_after([*five, 150, 190], 250.0) is None
    assert backoff.retry_after([150.0 + n for n in range(40)], 189.0) == 900  # capped
    assert backoff.retry_after([150.0 + n for n in range(40)], 150 + 3600 + 40) is None
    assert backoff.wait_s(10_000) == 900  # no float overflow however many


# -- login, cookie, CSRF -----------------------------------------------------


def test_login_sets_a_strict_secure_httponly_cookie_and_returns_a_csrf_token(gate: Gate) -> None:
    gate.add_user("li", units=("3", "5"))

    response = gate.login("li")

    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["role"], body["units"]) == ("li", "landlord", ["3", "5"])
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{auth.SESSION_COOKIE}=")
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes
    me = gate.client.get("/api/v1/me")
    assert me.status_code == 200
    assert me.json()["csrf_token"] == body["csrf_token"]
    with gate.conn() as conn:
        stored = conn.execute("SELECT id_hash FROM sessions").fetchone()[0]
    session_id = gate.client.cookies[auth.SESSION_COOKIE]
    assert bytes(stored) == auth.session_hash(session_id)  # only the SHA-256 is kept


def test_login_by_form_and_logout(gate: Gate) -> None:
    gate.add_user("li")
    response = gate.client.post("/api/v1/login", data={"name": "li", "password": PASSWORD})
    assert response.status_code == 200
    csrf = response.json()["csrf_token"]

    assert gate.client.post("/api/v1/logout").status_code == 403  # logout needs CSRF too
    assert gate.client.post("/api/v1/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert error_of(gate.client.get("/api/v1/me")) in {"not_authenticated", "session_invalid"}
    assert [e.action for e in gate.audit()] == ["login", "logout"]


def test_bad_login_requests_are_422_and_change_nothing(gate: Gate) -> None:
    for body in ({"name": "li"}, {"name": "", "password": "x"}, [1, 2], {"name": 3, "password": 4}):
        response = gate.client.post("/api/v1/login", json=body)
        assert (response.status_code, error_of(response)) == (422, "bad_request")
    assert gate.client.post("/api/v1/login", content=b"\xff\xfe").status_code == 422
    assert gate.audit() == []


def test_csrf_is_required_for_unsafe_methods_from_a_cookie_session(gate: Gate) -> None:
    gate.add_user("li")
    csrf = gate.login("li").json()["csrf_token"]

    missing = gate.client.post("/test/change")
    wrong = gate.client.post("/test/change", headers={"X-CSRF-Token": csrf[:-2] + "xx"})
    right = gate.client.post("/test/change", headers={"X-CSRF-Token": csrf})
    by_form = gate.client.post("/test/change", data={"csrf_token": csrf})

    assert (missing.status_code, error_of(missing)) == (403, "csrf_missing")
    assert (wrong.status_code, error_of(wrong)) == (403, "csrf_mismatch")
    assert right.status_code == 200
    assert by_form.status_code == 200
    assert gate.client.get("/api/v1/me").status_code == 200  # safe methods need no token
    assert gate.accounts.stats.refused[auth.AuthProblem.CSRF_MISSING] == 1


def test_a_terminal_bearer_token_needs_no_csrf_but_may_not_do_admin_things(gate: Gate) -> None:
    headers = {"Authorization": f"Bearer {gate.terminal_token}"}

    response = gate.client.post("/test/change", headers=headers)

    assert response.json() == {"name": "T-01", "role": "terminal"}
    assert gate.client.get("/test/admin", headers=headers).status_code == 403
    bad = gate.client.post("/test/change", headers={"Authorization": "Bearer T-01:nope"})
    assert (bad.status_code, error_of(bad)) == (401, "bad_token")
    assert bad.headers["www-authenticate"] == "Bearer"


def test_roles_are_required(gate: Gate) -> None:
    assert error_of(gate.client.get("/test/admin")) == "not_authenticated"
    gate.add_user("li")
    gate.add_user("root", role="admin")
    gate.login("li")
    assert gate.client.get("/test/admin").status_code == 403
    gate.login("root")
    assert gate.client.get("/test/admin").json() == {"name": "root"}


# -- rate limit --------------------------------------------------------------


def test_past_five_failures_from_one_address_the_account_waits_there_and_waits_longer(
    gate: Gate,
) -> None:
    gate.add_user("li")
    for _ in range(6):
        assert gate.login("li", "guess-guess-guess").status_code == 401

    seventh = gate.login("li")  # even with the right password: the guesser cannot tell

    assert (seventh.status_code, error_of(seventh)) == (429, "rate_limited")
    assert int(seventh.headers["retry-after"]) == 30
    assert auth.SESSION_COOKIE not in gate.client.cookies
    gate.clock.advance(30)
    assert gate.login("li", "guess-guess-guess").status_code == 401
    assert int(gate.login("li").headers["retry-after"]) == 60  # doubled
    gate.clock.advance(60)
    assert gate.login("li").status_code == 200


def test_past_ten_failures_from_one_address_it_waits_whatever_the_name(gate: Gate) -> None:
    gate.add_user("li")
    for n in range(11):
        assert gate.login(f"nobody-{n}", "guess-guess-guess").status_code == 401

    response = gate.login("li")

    assert response.status_code == 429
    assert [e.action for e in gate.audit()] == ["login.failed"] * 11


def test_a_successful_login_clears_the_users_own_failures_not_the_accounts(gate: Gate) -> None:
    gate.add_user("li")
    for _ in range(3):
        gate.login("li", "guess-guess-guess")
    assert gate.login("li").status_code == 200
    with gate.conn() as conn:
        assert users.attempts_since(conn, pair_key("li", "testclient"), 0) == []
        assert len(users.attempts_since(conn, account_key("li"), 0)) == 3


def test_guesses_from_five_addresses_lock_out_neither_the_user_nor_the_admin(
    gate: Gate,
) -> None:
    """Issue 13: five wrong passwords from five addresses kept the real user out 15 minutes."""
    gate.add_user("li")
    gate.add_user("root", role="admin")
    for name in ("li", "root"):
        assert gate.login_from("198.51.100.7", name).status_code == 200  # the usual address
        for n in range(5):
            assert gate.login_from(f"203.0.113.{n}", name, "guess-guess-guess").status_code == 401

        assert gate.login_from("198.51.100.7", name).status_code == 200
        assert gate.login_from("192.0.2.50", name).status_code == 200  # a fresh one too

        for n in range(5, 8):  # the guesser goes on: fresh addresses now wait
            gate.login_from(f"203.0.113.{n}", name, "guess-guess-guess")
        fresh = gate.login_from("192.0.2.51", name)
        assert (fresh.status_code, error_of(fresh)) == (429, "rate_limited")
        assert int(fresh.headers["retry-after"]) <= 5 * 60
        assert gate.login_from("198.51.100.7", name).status_code == 200  # usual: never waits
        gate.clock.advance(int(fresh.headers["retry-after"]))
        assert gate.login_from("192.0.2.51", name).status_code == 200  # fresh: after the wait


# -- sessions ----------------------------------------------------------------


def test_a_disabled_user_cannot_log_in_and_their_sessions_stop(gate: Gate) -> None:
    gate.add_user("li")
    assert gate.login("li").status_code == 200
    assert gate.client.get("/api/v1/me").status_code == 200

    with gate.conn() as conn, transaction(conn):
        users.disable_user(conn, "li", START.isoformat())

    assert error_of(gate.client.get("/api/v1/me")) == "session_invalid"
    again = gate.login("li")
    assert (again.status_code, error_of(again)) == (401, "bad_credentials")
    assert gate.audit()[-1].action == "login.failed"
    assert gate.audit()[-1].detail == "disabled user, from testclient"


def test_sessions_end_when_idle_and_at_their_absolute_expiry(gate: Gate) -> None:
    gate.add_user("li")
    gate.login("li")
    gate.clock.advance(gate.accounts.idle_s + 1)
    assert error_of(gate.client.get("/api/v1/me")) == "session_invalid"

    gate.login("li")
    for _ in range(gate.accounts.session_s // (20 * 60) - 1):
        gate.clock.advance(20 * 60)  # active every 20 minutes: never idle
        assert gate.client.get("/api/v1/me").status_code == 200
    gate.clock.advance(20 * 60)
    assert error_of(gate.client.get("/api/v1/me")) == "session_invalid"


# -- first-run setup ---------------------------------------------------------


def test_first_run_setup_needs_the_code_and_works_once(
    gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    with gate.conn() as conn:
        assert users.list_users(conn) == []  # no default account, so no default password
    assert gate.login("admin", "admin").status_code == 401
    path = gate.accounts.prepare_setup()
    assert path is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code = auth.read_setup_code(path)
    assert code not in caplog.text  # the log says where the code is, never the code
    assert gate.accounts.prepare_setup() == path
    assert auth.read_setup_code(path) == code  # a restart before setup keeps the same code

    def setup(code: str, password: str = PASSWORD) -> Any:
        return gate.client.post(
            "/api/v1/setup", json={"code": code, "name": "root", "password": password}
        )

    assert error_of(setup("not-the-code")) == "setup_code_wrong"
    assert error_of(setup(code, "short")) == "bad_request"
    done = setup(code)
    assert (done.status_code, done.json()["role"]) == (201, "admin")
    assert not path.exists()
    assert error_of(setup(code)) == "setup_done"
    assert gate.login("root").status_code == 200
    assert gate.accounts.prepare_setup() is None
    assert [e.action for e in gate.audit()] == ["login.failed", "setup.failed", "setup", "login"]


# -- audit -------------------------------------------------------------------


def test_reveals_are_for_admins_and_audited_and_the_log_is_append_only(gate: Gate) -> None:
    gate.add_user("li")
    gate.add_user("root", role="admin")
    csrf = gate.login("li").json()["csrf_token"]
    denied = gate.client.post("/test/reveal/p-7", headers={"X-CSRF-Token": csrf})
    assert denied.status_code == 403
    gate.login("root", "wrong password!")
    csrf = gate.login("root").json()["csrf_token"]

    revealed = gate.client.post("/test/reveal/p-7", headers={"X-CSRF-Token": csrf})

    assert revealed.json() == {"id_number": "33010219900101123X"}
    entries = [(e.actor, e.action, e.subject) for e in gate.audit()]
    assert entries == [
        ("li", "login", "user:li"),
        ("li", "id_number.reveal_denied", "person:p-7"),
        ("root", "login.failed", "user:root"),
        ("root", "login", "user:root"),
        ("root", "id_number.reveal", "person:p-7"),
    ]
    assert all("33010219900101123X" not in str(entry) for entry in gate.audit())
    with gate.conn() as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_log")
    with gate.conn() as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_log SET action = 'nothing'")


# -- CLI ---------------------------------------------------------------------


def test_the_user_cli_adds_lists_and_disables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load(write_config(tmp_path, "mqtt://127.0.0.1:1"))
    make_store(config.gateway.database)
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")

    def run(*argv: str) -> int:
        return run_users(config, parser.parse_args(["user", *argv, "--config", "x"]))

    assert run("add", "li", "--role", "landlord", "--unit", "3", "--unit", "5",
               "--password-file", str(secret)) == 0  # fmt: skip
    assert run("add", "LI", "--role", "admin", "--password-file", str(secret)) == 1  # taken
    assert run("add", "wang", "--role", "landlord", "--password-file", str(secret)) == 2
    assert run("disable", "nobody") == 1
    assert run("disable", "li") == 0
    capsys.readouterr()
    assert run("list") == 0
    assert capsys.readouterr().out.startswith("li\tlandlord\t3,5\tdisabled ")
    with closing(connect(config.gateway.database)) as conn:
        user = users.find_user(conn, "li")
        actions = [e.action for e in users.audit_entries(conn)]
    assert user is not None
    assert auth.verify_password(PASSWORD, user.password_hash)
    assert actions == ["user.add", "user.disable"]
