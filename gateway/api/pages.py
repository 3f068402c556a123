"""The landlord's and co-ordinator's web pages: server-rendered, zh-CN first, work on a phone.

Pages call the same services as the REST API (`Directory`, `Monitor`,
`History`), so scoping and auditing are the same whichever way a landlord
comes in. Forms post urlencoded with the session's CSRF token and redirect
after success (a reload never re-submits). JavaScript is used where it helps:
the tap capture on the enrol form and the live event list. Every page showing
tenants' names, ID numbers, alerts or door history writes an audit entry
before it is rendered (here, or in the service it calls).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.api.accounts import Accounts
from gateway.api.auth import Principal, Role
from gateway.api.directory import Directory, DirectoryError
from gateway.api.history import History
from gateway.api.monitor import Monitor
from gateway.api.rendering import error_page, render
from gateway.api.security import (
    require_page,
)
from gateway.api.session_pages import session_pages_router
from gateway.api.tenant_pages import tenant_changes_router, tenant_pages_router
from gateway.store.event_history import EventFilter

EVENTS_SHOWN = 50
RECORDS_SHOWN = 100


def pages_router(
    accounts: Accounts, directory: Directory, monitor: Monitor, history: History
) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    router.include_router(session_pages_router(accounts))
    router.include_router(tenant_pages_router(accounts, directory, monitor))
    router.include_router(tenant_changes_router(accounts, directory))
    Anyone = Annotated[
        Principal, Depends(require_page(accounts, Role.ADMIN, Role.LANDLORD, Role.COORDINATOR))
    ]
    Changer = Annotated[Principal, Depends(require_page(accounts, Role.ADMIN, Role.LANDLORD))]
    Registrar = Annotated[Principal, Depends(require_page(accounts, Role.ADMIN, Role.COORDINATOR))]

    @router.get("/ui/")
    async def dashboard(request: Request, principal: Anyone) -> HTMLResponse:
        shown_doors = monitor.doors(principal)
        doors = shown_doors.doors
        sync = await _or_none(monitor.sync())
        alerts = await _or_none(monitor.alerts(principal))
        shown = len(alerts.alerts) if alerts else 0
        await accounts.audit(principal, "dashboard.view", None, f"{shown} alerts")
        return render(
            request,
            "dashboard.html",
            principal,
            doors=doors,
            doors_online=shown_doors.online,
            sync=sync,
            alerts=alerts.alerts if alerts else [],
        )

    @router.get("/ui/events")
    async def events_page(
        request: Request,
        principal: Changer,
        door: Annotated[str | None, Query(max_length=64)] = None,
        type: Annotated[str | None, Query(max_length=64)] = None,
        before_seq: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    ) -> HTMLResponse:
        wanted = EventFilter(door=door or None, type=type or None)
        page = await history.page(principal, wanted, before_seq=before_seq, limit=EVENTS_SHOWN)
        if page.events:
            await accounts.audit(principal, "events.list", None, f"{len(page.events)} events")
        return render(
            request,
            "events.html",
            principal,
            page=page,
            doors=monitor.doors(principal).doors,
            door=door or "",
            type=type or "",
            live=before_seq is None and not door and not type,
        )

    @router.get("/ui/alerts")
    async def alerts_page(request: Request, principal: Anyone) -> HTMLResponse:
        alerts = await monitor.alerts(principal)
        await accounts.audit(principal, "alerts.list", None, f"{len(alerts.alerts)} alerts")
        return render(request, "alerts.html", principal, alerts=alerts.alerts)

    @router.post("/ui/alerts/{alert_id}/acknowledge")
    async def acknowledge(request: Request, principal: Changer, alert_id: str) -> Response:
        try:
            await monitor.acknowledge(principal, alert_id)
        except DirectoryError as error:
            return error_page(request, principal, error)
        await accounts.audit(principal, "alert.acknowledge", f"alert:{alert_id}")
        return RedirectResponse("/ui/alerts", status_code=303)

    @router.get("/ui/records")
    async def records_page(request: Request, principal: Registrar) -> HTMLResponse:
        records = await monitor.terminal_records(None, RECORDS_SHOWN)
        return render(request, "records.html", principal, records=records.records)

    @router.get("/ui/sync")
    async def sync_page(request: Request, principal: Anyone) -> HTMLResponse:
        return render(request, "sync.html", principal, sync=await monitor.sync())

    return router


async def _or_none(work: Any) -> Any:
    try:
        return await work
    except DirectoryError:
        return None
