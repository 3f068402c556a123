"""The state behind the web UI's security: logins, sessions, terminals' tokens, the audit log.

Reads (session lookups) and writes go through `StoreAccess`, so
authenticating a request never queues behind the writer's group commit. An
audit entry is committed before what it records is shown: if it cannot be
written, the caller gets STORE_UNAVAILABLE and nothing is revealed.
Everything refused raises `AuthFailure`; `gateway.api.security` turns that
into HTTP at one place.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from gateway.api import auth
from gateway.api.auth import AuthFailure, AuthProblem, Principal, Role
from gateway.api.login_limit import (
    Count,
    LoginLimit,
    known_key,
    login_counts,
    pair_key,
    reserve,
    setup_counts,
)
from gateway.api.storeaccess import StoreAccess
from gateway.api.terminal_api import TokenVerifier
from gateway.clock import Clock
from gateway.store import users
from gateway.store.errors import StoreError
from gateway.store.users import AccountError, AccountProblem
from gateway.store.writer import Writer

log = logging.getLogger(__name__)

T = TypeVar("T")
SESSION_S = 8 * 3600
IDLE_S = 30 * 60
TOUCH_EVERY_S = 60
"""A session's last_seen is written at most this often (a write per request would queue)."""


@dataclass
class AccountStats:
    """Refusals by reason, and logins (bad input is counted, not just logged)."""

    refused: Counter[AuthProblem] = field(default_factory=Counter)
    logins: int = 0


class Accounts:
    """Users' logins and sessions, terminals' tokens, first-run setup and the audit log."""

    def __init__(
        self,
        database: Path,
        *,
        writer: Writer,
        clock: Clock,
        setup_code_file: Path,
        terminals: TokenVerifier | None = None,
        limit: LoginLimit | None = None,
        session_s: int = SESSION_S,
        idle_s: int = IDLE_S,
    ) -> None:
        self._store = StoreAccess(database, writer)
        self._clock = clock
        self._terminals = terminals
        self.setup_code_file = setup_code_file
        self.limit = limit or LoginLimit()
        self.session_s = session_s
        self.idle_s = idle_s
        self.stats = AccountStats()

    def fail(
        self, problem: AuthProblem, message: str, retry_after_s: int | None = None
    ) -> AuthFailure:
        """The failure to raise, counted."""
        self.stats.refused[problem] += 1
        return AuthFailure(problem, message, retry_after_s)

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._store.read(query)
        except StoreError as exc:
            raise self._unavailable(exc) from exc

    async def _write(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._store.write(operation)
        except AccountError:
            raise
        except StoreError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: StoreError) -> AuthFailure:
        log.error("auth: store unavailable: %s", exc)
        return self.fail(AuthProblem.STORE_UNAVAILABLE, "the gateway cannot store now")

    def close(self) -> None:
        self._store.close()

    # -- audit -------------------------------------------------------------

    async def audit(
        self,
        principal: Principal,
        action: str,
        subject: str | None = None,
        detail: str | None = None,
    ) -> int:
        """Append an entry (committed when this returns); the entry's id."""
        return await self._write(
            lambda conn: self.record_audit(conn, principal, action, subject, detail)
        )

    def record_audit(
        self,
        conn: sqlite3.Connection,
        principal: Principal,
        action: str,
        subject: str | None = None,
        detail: str | None = None,
    ) -> int:
        terminal = principal.role is Role.TERMINAL
        return users.append_audit(
            conn,
            at=self._clock.now().isoformat(),
            user_id=principal.user_id,
            actor=f"terminal:{principal.name}" if terminal else principal.name,
            action=action,
            subject=subject,
            detail=detail,
        )

    # -- login, sessions ---------------------------------------------------

    async def _reserve(self, counts: list[Count]) -> list[int]:
        """Count an attempt under each key before its password is checked, so parallel
        guesses cannot slip past the limit; RATE_LIMITED while any count's wait is not over
        (a refused attempt is not counted: waiting it out is enough)."""
        now_s = self._clock.now().timestamp()
        wait, reserved = await self._write(lambda conn: reserve(conn, self.limit, counts, now_s))
        if wait is not None:
            log.warning("auth: too many failed attempts (%s); retry in %d s", counts[0].key, wait)
            message = f"too many failed attempts: try again in {wait} s"
            raise self.fail(AuthProblem.RATE_LIMITED, message, wait)
        return reserved

    async def login(self, name: str, password: str, address: str) -> tuple[str, Principal]:
        """Check a name and password: a new session id and its principal."""
        reserved = await self._reserve(login_counts(self.limit, name, address))
        user = await self._read(lambda conn: users.find_user(conn, name))
        if user is None or user.disabled_at is not None:
            await asyncio.to_thread(auth.verify_nobody, password)
            why = "unknown user" if user is None else "disabled user"
        elif not await asyncio.to_thread(auth.verify_password, password, user.password_hash):
            why = "wrong password"
        else:
            why = ""
        now = self._clock.now()
        if user is None or why:
            user_id = user.id if user else None
            await self._write(
                lambda conn: users.append_audit(
                    conn,
                    at=now.isoformat(),
                    user_id=user_id,
                    actor=name[:64],
                    action="login.failed",
                    subject=f"user:{name[:64]}",
                    detail=f"{why}, from {address}",
                )
            )
            log.warning("auth: failed login for %r from %s (%s)", name[:64], address, why)
            raise self.fail(AuthProblem.BAD_CREDENTIALS, "wrong name or password")
        principal = Principal(user.id, user.name, Role(user.role), user.units)
        session_id = auth.new_session_id()

        def open_session(conn: sqlite3.Connection) -> None:
            users.remove_attempts(conn, reserved)
            users.clear_attempts(conn, pair_key(name, address))  # the user's own typos
            users.remember(
                conn,
                known_key(name, address),
                now.timestamp(),
                forget_before_s=now.timestamp() - self.limit.known_for_s,
            )
            users.create_session(
                conn,
                id_hash=auth.session_hash(session_id),
                user_id=principal.user_id or 0,
                created_at=now.isoformat(),
                now_s=int(now.timestamp()),
                expires_at=int(now.timestamp()) + self.session_s,
            )
            self.record_audit(conn, principal, "login", f"user:{principal.name}", f"from {address}")

        await self._write(open_session)
        self.stats.logins += 1
        log.info("auth: %s (%s) logged in from %s", user.name, user.role, address)
        return session_id, principal

    async def logout(self, session_id: str, principal: Principal) -> None:
        def close_session(conn: sqlite3.Connection) -> None:
            if users.revoke_session(conn, auth.session_hash(session_id)):
                self.record_audit(conn, principal, "logout", f"user:{principal.name}")

        await self._write(close_session)

    async def authenticate(
        self, authorization: str | None, session_id: str | None, csrf: str | None, *, unsafe: bool
    ) -> Principal:
        """Who sends a request: a terminal's bearer token, else a session cookie whose
        CSRF token must match when the method is unsafe."""
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or self._terminals is None:
                raise self.fail(AuthProblem.BAD_TOKEN, "only terminals' bearer tokens are accepted")
            check = await self._terminals.verify(token.strip())
            if check.terminal is None:
                problem = check.problem.value if check.problem else "unknown_token"
                raise self.fail(AuthProblem.BAD_TOKEN, f"terminal token refused: {problem}")
            return Principal(None, check.terminal, Role.TERMINAL)
        if not session_id:
            raise self.fail(AuthProblem.NOT_AUTHENTICATED, "log in first")
        principal = await self.session_principal(session_id)
        if principal is None:
            raise self.fail(AuthProblem.SESSION_INVALID, "the session ended: log in again")
        if unsafe and not csrf:
            raise self.fail(AuthProblem.CSRF_MISSING, "send the X-CSRF-Token header")
        if unsafe and not auth.csrf_matches(session_id, csrf or ""):
            raise self.fail(AuthProblem.CSRF_MISMATCH, "the CSRF token is not this session's")
        return principal

    async def session_principal(self, session_id: str) -> Principal | None:
        """Who a live session belongs to; None if unknown, expired, idle or the user disabled."""
        if len(session_id) > 128:
            return None
        id_hash = auth.session_hash(session_id)
        now_s = int(self._clock.now().timestamp())
        row = await self._read(
            lambda conn: users.session_user(conn, id_hash, now_s=now_s, idle_s=self.idle_s)
        )
        if row is None:
            return None
        if now_s - row.last_seen >= TOUCH_EVERY_S:
            await self._write(lambda conn: users.touch_session(conn, id_hash, now_s))
        return Principal(row.user_id, row.name, Role(row.role), row.units)

    # -- first-run setup ---------------------------------------------------

    def prepare_setup(self) -> Path | None:
        """At start: while there is no admin, make sure the setup code file exists (0600)
        and say where; None (and no file) once an admin exists."""
        if self._store.read_now(users.active_admin_exists):
            self.setup_code_file.unlink(missing_ok=True)
            return None
        auth.issue_setup_code(self.setup_code_file)
        log.warning(
            "no admin yet: the first-run setup code is in %s (readable by the gateway's user"
            " only); POST it with the admin's name and password to /api/v1/setup",
            self.setup_code_file,
        )
        return self.setup_code_file

    async def setup(self, code: str, name: str, password: str, address: str) -> Principal:
        """Create the first admin with the setup code; SETUP_DONE once an admin exists."""
        if problem := auth.name_problem(name) or auth.password_problem(password):
            raise self.fail(AuthProblem.BAD_REQUEST, problem)
        if await self._read(users.active_admin_exists):
            raise self.fail(AuthProblem.SETUP_DONE, "the gateway already has an admin")
        reserved = await self._reserve(setup_counts(self.limit, address))
        if not auth.setup_code_matches(self.setup_code_file, code):
            await self.audit(Principal(None, name, Role.ADMIN), "setup.failed", None, address)
            raise self.fail(AuthProblem.SETUP_CODE_WRONG, "wrong setup code")
        password_hash = await asyncio.to_thread(auth.hash_password, password)
        now = self._clock.now().isoformat()

        def create(conn: sqlite3.Connection) -> Principal:
            users.remove_attempts(conn, reserved)
            user_id = users.create_first_admin(
                conn, name=name, password_hash=password_hash, created_at=now
            )
            admin = Principal(user_id, name, Role.ADMIN)
            self.record_audit(conn, admin, "setup", f"user:{name}", f"first admin, from {address}")
            return admin

        try:
            admin = await self._write(create)
        except AccountError as exc:
            done = exc.problem is AccountProblem.ADMIN_EXISTS
            problem = AuthProblem.SETUP_DONE if done else AuthProblem.BAD_REQUEST
            raise self.fail(problem, str(exc)) from exc
        self.setup_code_file.unlink(missing_ok=True)
        log.warning("first-run setup: admin %s created from %s", name, address)
        return admin


async def reveal_id_number(
    accounts: Accounts, principal: Principal, person_id: str, unseal: Callable[[], str]
) -> str:
    """A person's full ID number, for an admin only, audited before `unseal` is called.

    Anyone else gets FORBIDDEN (the attempt is audited too). If the audit entry
    cannot be committed, STORE_UNAVAILABLE and nothing is revealed.
    """
    subject = f"person:{person_id}"
    if principal.role is not Role.ADMIN:
        await accounts.audit(principal, "id_number.reveal_denied", subject)
        raise accounts.fail(AuthProblem.FORBIDDEN, "only an admin may reveal ID numbers")
    await accounts.audit(principal, "id_number.reveal", subject)
    return unseal()
