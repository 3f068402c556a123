"""The pages around a session: first-run setup, log in, log out, the language switch.

Public except logout: they are how one gets a session. A failed login shows the
same message whatever was wrong (no hint whether the name exists). The login
and setup forms carry a pre-session token and refuse posts from other sites
(`gateway.api.login_guard`): nobody else's page can log a browser in.
"""

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from gateway.api import i18n, login_guard
from gateway.api.accounts import Accounts
from gateway.api.auth import SESSION_COOKIE, AuthFailure, AuthProblem, Principal, Role
from gateway.api.rendering import form, render
from gateway.api.security import (
    STATUS,
    clear_session_cookie,
    client_address,
    require_page,
    set_session_cookie,
)

log = logging.getLogger(__name__)


def session_pages_router(accounts: Accounts) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    guard = login_guard.PreSession()

    def form_page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        """A login or setup form with a fresh (or the same) pre-session token."""
        value, token = guard.begin(request)
        response = render(request, template, None, status, login_token=token, **context)
        login_guard.set_cookie(response, value)
        return response

    def refused(request: Request, fields: dict[str, str], template: str) -> Response | None:
        """The 403 page for a post another site may have sent (counted), or None."""
        why = login_guard.cross_site(request)
        if why is None and not guard.matches(request, fields.get(login_guard.FIELD, "")):
            why = "no valid login token"
        if why is None:
            return None
        accounts.fail(AuthProblem.CROSS_SITE, why)
        log.warning("auth: %s refused: %s", request.url.path, why)
        return form_page(request, template, 403, error="login_refused")

    Anyone = Annotated[
        Principal, Depends(require_page(accounts, Role.ADMIN, Role.LANDLORD, Role.COORDINATOR))
    ]

    @router.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=303)

    @router.get("/ui/login")
    async def login_page(request: Request) -> Response:
        return form_page(request, "login.html")

    @router.post("/ui/login")
    async def login(request: Request) -> Response:
        fields = await form(request)
        if (refusal := refused(request, fields, "login.html")) is not None:
            return refusal
        try:
            session_id, _principal = await accounts.login(
                fields.get("name", "")[:64], fields.get("password", ""), client_address(request)
            )
        except AuthFailure as failure:
            key = "login_limited" if failure.problem is AuthProblem.RATE_LIMITED else "login_failed"
            status = 429 if failure.problem is AuthProblem.RATE_LIMITED else 401
            return form_page(request, "login.html", status, error=key)
        response = RedirectResponse("/ui/", status_code=303)
        set_session_cookie(response, session_id, accounts.session_s)
        login_guard.forget(response)
        return response

    @router.get("/ui/setup")
    async def setup_page(request: Request) -> Response:
        """First run: the installer types the setup code from the data dir and the admin's
        name and password (there is no default password)."""
        return form_page(request, "setup.html")

    @router.post("/ui/setup")
    async def setup(request: Request) -> Response:
        fields = await form(request)
        if (refusal := refused(request, fields, "setup.html")) is not None:
            return refusal
        try:
            await accounts.setup(
                fields.get("code", ""),
                fields.get("name", "")[:64],
                fields.get("password", ""),
                client_address(request),
            )
        except AuthFailure as failure:
            status = STATUS[failure.problem]
            return form_page(request, "setup.html", status, error=failure.message)
        return RedirectResponse("/ui/login", status_code=303)

    @router.post("/ui/logout")
    async def logout(request: Request, principal: Anyone) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            await accounts.logout(session_id, principal)
        response = RedirectResponse("/ui/login", status_code=303)
        clear_session_cookie(response)
        return response

    @router.get("/ui/lang")
    async def switch_language(
        to: Annotated[str, Query(pattern="^(zh-CN|en)$")] = "zh-CN",
        back: Annotated[str, Query(max_length=200, pattern="^/ui/")] = "/ui/",
    ) -> RedirectResponse:
        response = RedirectResponse(back, status_code=303)
        response.set_cookie(
            i18n.LANG_COOKIE, to, max_age=365 * 86400, path="/", secure=True, samesite="lax"
        )
        return response

    return router
