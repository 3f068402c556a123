"""The tenant pages: the list with registration and permit status, enrol, one tenant's page.

Forms call `Directory` exactly as the REST API does, so the same scoping and
audit apply; they redirect after success so a reload never re-submits. Two
routers, which `pages` includes one after the other: the pages themselves, and
the changes posted from a tenant's page (cards and tenancies).
"""

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from gateway.api import models
from gateway.api.accounts import Accounts
from gateway.api.auth import Principal, Role
from gateway.api.directory import Directory, DirectoryError
from gateway.api.monitor import Monitor
from gateway.api.rendering import error_page, form, render
from gateway.api.security import require_page
from gateway.clock import plausible
from gateway.domain.keycards import CardAction

PAGE_SIZE = 50


def tenant_pages_router(accounts: Accounts, directory: Directory, monitor: Monitor) -> APIRouter:
    """The tenant list, enrolment, one tenant's page, and an admin's reveal of the ID number."""
    router = APIRouter(include_in_schema=False)
    Anyone = Annotated[
        Principal, Depends(require_page(accounts, Role.ADMIN, Role.LANDLORD, Role.COORDINATOR))
    ]
    Changer = Annotated[Principal, Depends(require_page(accounts, Role.ADMIN, Role.LANDLORD))]
    Admin = Annotated[Principal, Depends(require_page(accounts, Role.ADMIN))]

    @router.get("/ui/tenants")
    async def tenants_page(
        request: Request,
        principal: Anyone,
        unit: Annotated[str | None, Query(max_length=32)] = None,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> HTMLResponse:
        page = await directory.people(principal, unit=unit or None, offset=offset, limit=PAGE_SIZE)
        return render(request, "tenants.html", principal, page=page, unit=unit or "")

    @router.get("/ui/tenants/new")
    async def enrol_page(request: Request, principal: Changer) -> HTMLResponse:
        return render(request, "enrol.html", principal, **_enrol_context(monitor, principal))

    @router.post("/ui/tenants/new")
    async def enrol(request: Request, principal: Changer) -> Response:
        fields = await form(request)
        try:
            enrolment = _enrol_request(fields, _day_end(fields, directory))
            enrolled = await directory.enrol(principal, enrolment)
        except (ValidationError, DirectoryError) as exc:
            return render(
                request,
                "enrol.html",
                principal,
                422,
                **(_enrol_context(monitor, principal) | {"error": _message(exc), "values": fields}),
            )
        return RedirectResponse(f"/ui/tenants/{quote(enrolled.person.id)}?saved=1", 303)

    @router.get("/ui/tenants/{person_id}")
    async def tenant_page(request: Request, principal: Anyone, person_id: str) -> HTMLResponse:
        try:
            person = await directory.person(principal, person_id)
        except DirectoryError as error:
            return error_page(request, principal, error)
        return render(
            request,
            "tenant.html",
            principal,
            person=person,
            revealed=None,
            saved=request.query_params.get("saved") == "1",
        )

    @router.post("/ui/tenants/{person_id}/reveal")
    async def reveal(request: Request, principal: Admin, person_id: str) -> HTMLResponse:
        try:
            revealed = await directory.reveal(principal, person_id)
            person = await directory.person(principal, person_id)
        except DirectoryError as error:
            return error_page(request, principal, error)
        return render(request, "tenant.html", principal, person=person, revealed=revealed.id_number)

    return router


def tenant_changes_router(accounts: Accounts, directory: Directory) -> APIRouter:
    """The forms on a tenant's page that change a card or a tenancy; each goes back there."""
    router = APIRouter(include_in_schema=False)
    Changer = Annotated[Principal, Depends(require_page(accounts, Role.ADMIN, Role.LANDLORD))]

    @router.post("/ui/cards/{card_id}/action")
    async def card_action(request: Request, principal: Changer, card_id: str) -> Response:
        fields = await form(request)
        try:
            action = CardAction(fields.get("action", ""))
        except ValueError:
            return render(request, "error.html", principal, 422, error="unknown action")
        return await _change(
            request, principal, lambda: directory.card_action(principal, card_id, action)
        )

    @router.post("/ui/cards/{card_id}/extend")
    async def card_extend(request: Request, principal: Changer, card_id: str) -> Response:
        valid_to = _day_end(await form(request), directory)
        if valid_to is None:
            return render(request, "error.html", principal, 422, error="valid_to: a date")
        return await _change(
            request, principal, lambda: directory.extend_card(principal, card_id, valid_to)
        )

    @router.post("/ui/tenancies/{tenancy_id}/extend")
    async def tenancy_extend(request: Request, principal: Changer, tenancy_id: str) -> Response:
        valid_to = _day_end(await form(request), directory)
        if valid_to is None:
            return render(request, "error.html", principal, 422, error="valid_to: a date")
        return await _change(
            request,
            principal,
            lambda: directory.set_tenancy_end(principal, tenancy_id, valid_to, action="extend"),
        )

    @router.post("/ui/tenancies/{tenancy_id}/end")
    async def tenancy_end(request: Request, principal: Changer, tenancy_id: str) -> Response:
        return await _change(
            request,
            principal,
            lambda: directory.set_tenancy_end(principal, tenancy_id, directory.now(), action="end"),
        )

    return router


async def _change(request: Request, principal: Principal, change: Any) -> Response:
    """Run `change`, then back to the tenant's page (or the error page)."""
    try:
        person: models.PersonOut = await change()
    except DirectoryError as error:
        return error_page(request, principal, error)
    return RedirectResponse(f"/ui/tenants/{quote(person.id)}?saved=1", 303)


def _enrol_context(monitor: Monitor, principal: Principal) -> dict[str, Any]:
    armable = monitor.capture_doors(principal)  # the doors offered for enrol by tap
    return {
        "doors": [d for d in monitor.doors(principal).doors if d.name in armable],
        "units": sorted(principal.units) if principal.role is Role.LANDLORD else [],
        "values": {},
        "error": None,
    }


def _enrol_request(fields: dict[str, str], valid_to: datetime | None) -> models.EnrolRequest:
    """The form's fields as the REST body (validated the same way); a date means its day."""
    card: dict[str, str] = {}
    if fields.get("capture"):
        card["capture"] = fields["capture"]
    elif fields.get("card_uid"):
        card["card_uid"] = fields["card_uid"]
    body: dict[str, Any] = {
        "id_number": fields.get("id_number", ""),
        "name": fields.get("name", ""),
        "unit": fields.get("unit", ""),
        "cards": [card] if card else [],
    }
    if fields.get("room"):
        body["room"] = fields["room"]
    if valid_to is not None:
        body["valid_to"] = valid_to.isoformat()
    return models.EnrolRequest.model_validate(body)


def _day_end(fields: dict[str, str], directory: Directory) -> datetime | None:
    """The end of the form's `valid_to` day in the gateway's zone; None unless a date
    in `PLAUSIBLE_YEARS` (the same bounds as the REST API's)."""
    try:
        day = datetime.fromisoformat(fields.get("valid_to", ""))
        zone = directory.now().tzinfo
        return plausible(day.replace(hour=23, minute=59, second=59, tzinfo=zone))
    except (ValueError, OverflowError):
        return None


def _message(exc: Exception) -> str:
    if isinstance(exc, DirectoryError):
        return exc.message
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
    return str(exc)
