"""The pages around a session: first-run setup, log in, log out, the language switch.

Public except logout: they are how one gets a session. A failed login shows the
same message whatever was wrong (no hint whether the name exists).
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.api import i18n
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


def session_pages_router(accounts: Accounts) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    Anyone = Annotated[
        Principal, Depends(require_page(accounts, Role.ADMIN, Role.LANDLORD, Role.COORDINATOR))
    ]

    @router.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=303)

    @router.get("/ui/login")
    async def login_page(request: Request) -> HTMLResponse:
        return render(request, "login.html", None)

    @router.post("/ui/login")
    async def login(request: Request) -> Response:
        fields = await form(request)
        try:
            session_id, _principal = await accounts.login(
                fields.get("name", "")[:64], fields.get("password", ""), client_address(request)
            )
        except AuthFailure as failure:
            key = "login_limited" if failure.problem is AuthProblem.RATE_LIMITED else "login_failed"
            status = 429 if failure.problem is AuthProblem.RATE_LIMITED else 401
            return render(request, "login.html", None, status, error=key)
        response = RedirectResponse("/ui/", status_code=303)
        set_session_cookie(response, session_id, accounts.session_s)
        return response

    @router.get("/ui/setup")
    async def setup_page(request: Request) -> HTMLResponse:
        """First run: the installer types the setup code from the data dir and the admin's
        name and password (there is no default password)."""
        return render(request, "setup.html", None)

    @router.post("/ui/setup")
    async def setup(request: Request) -> Response:
        fields = await form(request)
        try:
            await accounts.setup(
                fields.get("code", ""),
                fields.get("name", "")[:64],
                fields.get("password", ""),
                client_address(request),
            )
        except AuthFailure as failure:
            status = STATUS[failure.problem]
            return render(request, "setup.html", None, status, error=failure.message)
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
