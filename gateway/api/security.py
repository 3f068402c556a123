"""FastAPI's side of the gateway's security: login/logout/me/setup routes and dependencies.

People log in with a name and password (JSON or an urlencoded form) and get a
session cookie (`rentgate_session`: HttpOnly, Secure, SameSite=Strict, Path=/)
and a CSRF token; every unsafe request (POST, PUT, PATCH, DELETE) from a
cookie session must carry the token in `X-CSRF-Token` or a `csrf_token` form
field, and no unsafe request (logins included) may come from another site
(`gateway.api.login_guard`). Terminals send `Authorization: Bearer
{terminal}:{secret}`: no cookie, so no CSRF check. Every `AuthFailure`
becomes HTTP here, in one table.

No `from __future__ import annotations` here: FastAPI reads the annotations
of the dependency closures below at runtime, and they name local variables.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from gateway.api import auth
from gateway.api.accounts import Accounts
from gateway.api.auth import (
    SESSION_COOKIE,
    UNSAFE_METHODS,
    AuthFailure,
    AuthProblem,
    Principal,
    Role,
)
from gateway.api.login_guard import cross_site
from gateway.api.models import ERROR_RESPONSES

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 8 * 1024
LOGIN_PAGE = "/ui/login"

STATUS = {
    AuthProblem.NOT_AUTHENTICATED: 401,
    AuthProblem.BAD_TOKEN: 401,
    AuthProblem.SESSION_INVALID: 401,
    AuthProblem.BAD_CREDENTIALS: 401,
    AuthProblem.RATE_LIMITED: 429,
    AuthProblem.CSRF_MISSING: 403,
    AuthProblem.CSRF_MISMATCH: 403,
    AuthProblem.CROSS_SITE: 403,
    AuthProblem.FORBIDDEN: 403,
    AuthProblem.SETUP_CODE_WRONG: 403,
    AuthProblem.SETUP_DONE: 409,
    AuthProblem.BAD_REQUEST: 422,
    AuthProblem.STORE_UNAVAILABLE: 503,
}


def http_error(failure: AuthFailure) -> HTTPException:
    """The HTTP reply for a failure: `{"detail": {"error": reason, "message": text}}`."""
    status = STATUS[failure.problem]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if failure.retry_after_s is not None:
        headers["Retry-After"] = str(failure.retry_after_s)
    if status == 503:
        headers["Retry-After"] = "5"
    detail = {"error": failure.problem.value, "message": failure.message}
    return HTTPException(status, detail, headers or None)


def current_principal(accounts: Accounts) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the request's principal (401/403 otherwise; CSRF-checked for unsafe
    methods from a cookie session)."""

    async def dependency(request: Request) -> Principal:
        authorization = request.headers.get("authorization")
        unsafe = request.method in UNSAFE_METHODS and authorization is None
        if unsafe:
            refuse_cross_site(accounts, request)
        csrf = request.headers.get(auth.CSRF_HEADER)
        if unsafe and csrf is None:
            csrf = await _form_csrf(request)
        session_id = request.cookies.get(SESSION_COOKIE)
        try:
            return await accounts.authenticate(authorization, session_id, csrf, unsafe=unsafe)
        except AuthFailure as failure:
            raise http_error(failure) from failure

    return dependency


_GATES: dict[Callable[..., Awaitable[Principal]], frozenset[Role]] = {}


def require(accounts: Accounts, *roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting only principals with one of `roles` (403 otherwise).

    The gate is the route's access policy and its enforcement at once: the
    authorization tests read the roles of every route's gate (`gate_roles`), so
    a new route is tested the moment it is added, and one without a gate fails.
    """
    allowed = frozenset(roles)
    current = current_principal(accounts)

    async def gate(principal: Annotated[Principal, Depends(current)]) -> Principal:
        if principal.role not in allowed:
            message = f"this needs the role {' or '.join(sorted(allowed))}"
            raise http_error(accounts.fail(AuthProblem.FORBIDDEN, message))
        return principal

    _GATES[gate] = allowed
    return gate


def require_page(accounts: Accounts, *roles: Role) -> Callable[..., Awaitable[Principal]]:
    """`require` for web pages: whoever is not logged in is sent to the login page (303)."""
    gate = require(accounts, *roles)
    allowed = _GATES[gate]

    async def page_gate(request: Request) -> Principal:
        try:
            principal = await current_principal(accounts)(request)
        except HTTPException as refused:
            if refused.status_code == 401:
                raise HTTPException(303, "log in first", {"Location": LOGIN_PAGE}) from refused
            raise
        return await gate(principal)

    _GATES[page_gate] = allowed
    return page_gate


def gate_roles(dependency: object) -> frozenset[Role] | None:
    """The roles a `require` gate admits; None for any other dependency."""
    return _GATES.get(dependency) if callable(dependency) else None


def security_router(accounts: Accounts) -> APIRouter:
    """`POST /api/v1/login`, `POST /api/v1/logout`, `GET /api/v1/me`, `POST /api/v1/setup`."""
    router = APIRouter(prefix="/api/v1", tags=["auth"], responses=ERROR_RESPONSES)
    Current = Annotated[Principal, Depends(current_principal(accounts))]

    @router.post("/login")
    async def login(request: Request) -> JSONResponse:
        """Name and password → session cookie, and the CSRF token for unsafe requests.
        Refused (403) when a browser says another site sent it (login CSRF)."""
        refuse_cross_site(accounts, request)
        name, password = await _fields(accounts, request, ("name", "password"))
        try:
            session_id, principal = await accounts.login(name, password, client_address(request))
        except AuthFailure as failure:
            raise http_error(failure) from failure
        response = JSONResponse(_describe(principal) | {"csrf_token": auth.csrf_token(session_id)})
        set_session_cookie(response, session_id, accounts.session_s)
        return response

    @router.post("/logout", status_code=204)
    async def logout(request: Request, principal: Current) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id and principal.role is not Role.TERMINAL:
            try:
                await accounts.logout(session_id, principal)
            except AuthFailure as failure:
                raise http_error(failure) from failure
        response = Response(status_code=204)
        clear_session_cookie(response)
        return response

    @router.get("/me")
    async def me(request: Request, principal: Current) -> JSONResponse:
        """Who is logged in, and (for a cookie session) the CSRF token again after a reload."""
        body = _describe(principal)
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id and principal.role is not Role.TERMINAL:
            body["csrf_token"] = auth.csrf_token(session_id)
        return JSONResponse(body)

    @router.post("/setup", status_code=201)
    async def setup(request: Request) -> JSONResponse:
        """First run: the setup code from the gateway's data dir, the first admin's name and
        password. Refused (409) once an admin exists, and (403) from another site."""
        refuse_cross_site(accounts, request)
        code, name, password = await _fields(accounts, request, ("code", "name", "password"))
        try:
            admin = await accounts.setup(code, name, password, client_address(request))
        except AuthFailure as failure:
            raise http_error(failure) from failure
        return JSONResponse(_describe(admin), status_code=201)

    return router


def set_session_cookie(response: Response, session_id: str, max_age_s: int) -> None:
    """The session cookie: HttpOnly (no script reads it), Secure, SameSite=Strict."""
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=max_age_s,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")


def refuse_cross_site(accounts: Accounts, request: Request) -> None:
    """403 (counted) when a browser says another site sent this unsafe request."""
    why = cross_site(request)
    if why is not None:
        log.warning("auth: %s %s refused as cross-site: %s", request.method, request.url.path, why)
        raise http_error(accounts.fail(AuthProblem.CROSS_SITE, "sent from another site"))


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _describe(principal: Principal) -> dict[str, Any]:
    return {"name": principal.name, "role": principal.role.value, "units": sorted(principal.units)}


async def _fields(accounts: Accounts, request: Request, names: tuple[str, ...]) -> list[str]:
    """Non-empty string fields of a JSON object or an urlencoded form (422 otherwise)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        failure = accounts.fail(AuthProblem.BAD_REQUEST, "the body is too large")
        raise http_error(failure)
    document = parse_body(body, request.headers.get("content-type", ""))
    missing = [name for name in names if not isinstance(document.get(name), str)]
    missing += [name for name in names if document.get(name) == ""]
    if missing:
        raise http_error(accounts.fail(AuthProblem.BAD_REQUEST, f"send {', '.join(missing)}"))
    return [str(document[name]) for name in names]


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode("utf-8"), max_num_fields=16)
            return {key: values[0] for key, values in form.items()}
        document = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return {}
    return document if isinstance(document, dict) else {}


async def _form_csrf(request: Request) -> str | None:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return None
    body = await request.body()
    value = parse_body(body[:MAX_FORM_BYTES], content_type).get(auth.CSRF_FIELD)
    return value if isinstance(value, str) else None
