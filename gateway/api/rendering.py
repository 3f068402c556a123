"""How a web page is answered: the template, the language, the CSRF token, safe headers."""

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context

from gateway.api import auth, i18n
from gateway.api.auth import SESSION_COOKIE, Principal
from gateway.api.directory import STATUS, DirectoryError
from gateway.api.security import MAX_FORM_BYTES, parse_body
from gateway.domain.credentials import CredentialStatus
from gateway.domain.keycards import available_actions

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
STATIC_DIR = Path(__file__).parent / "static"
"""The pages' stylesheet and scripts, served at `/ui/static`."""


@pass_context
def _when(context: Context, text: str | None) -> str:
    """An ISO time as a landlord reads it, in the gateway's time zone, to the second."""
    if not text:
        return ""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    zone = getattr(context["request"].app.state, "zone", None)
    if moment.tzinfo is not None and zone is not None:
        try:
            moment = moment.astimezone(zone)
        except OverflowError:  # a stored time the API would refuse today: show it as it is
            return text
    return moment.strftime("%Y-%m-%d %H:%M:%S")


TEMPLATES.env.filters["when"] = _when
TEMPLATES.env.globals["card_actions"] = lambda status: [
    action.value for action in available_actions(CredentialStatus(status))
]


def render(
    request: Request,
    template: str,
    principal: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    lang = i18n.choose(
        request.cookies.get(i18n.LANG_COOKIE), request.headers.get("accept-language")
    )
    session_id = request.cookies.get(SESSION_COOKIE)
    response = TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "_": i18n.translator(lang),
            "lang": lang,
            "user": principal,
            "csrf": auth.csrf_token(session_id) if session_id and principal else "",
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
    )
    if status_code >= 400:
        request.app.state.refused[f"page_{status_code}"] += 1  # counted like the API's
    # The page's own policy (its scripts and styles); the rest: `gateway.api.headers`.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    )
    return response


async def form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "the form is too large")
    fields = parse_body(body, request.headers.get("content-type", ""))
    return {key: value for key, value in fields.items() if isinstance(value, str)}


def error_page(request: Request, principal: Principal, error: DirectoryError) -> HTMLResponse:
    """What a service refused, as a page with the status the REST API gives it."""
    return render(request, "error.html", principal, STATUS[error.problem], error=error.message)
