"""REST for the dashboard: doors, sync status, alerts, enrol-by-tap captures, records, audit.

Alerts name tenants (masked ID numbers, person ids): each read is audited
before it is returned, as `Directory` does for people and the events API for
door history.

Who may arm a capture where is decided here (`Monitor.capture_doors`), not by
`CardCaptures`, which keeps captures only: an admin anywhere, a landlord at a
door serving only their own units. Each arming is audited.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from gateway.api import models
from gateway.api.accounts import Accounts
from gateway.api.auth import Principal, Role
from gateway.api.core_links import CaptureRefused, CaptureView, RemoteCaptures
from gateway.api.directory import capture_owner
from gateway.api.monitor import Monitor
from gateway.api.security import require

WAIT_MAX_S = 25.0


def overview_router(accounts: Accounts, monitor: Monitor, captures: RemoteCaptures) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["gateway"], responses=models.ERROR_RESPONSES)
    Anyone = Annotated[
        Principal, Depends(require(accounts, Role.ADMIN, Role.LANDLORD, Role.COORDINATOR))
    ]
    DoorUser = Annotated[Principal, Depends(require(accounts, Role.ADMIN, Role.LANDLORD))]
    Registrar = Annotated[Principal, Depends(require(accounts, Role.ADMIN, Role.COORDINATOR))]
    Admin = Annotated[Principal, Depends(require(accounts, Role.ADMIN))]

    @router.get("/doors")
    async def doors(principal: DoorUser) -> models.DoorsOut:
        """Doors (the caller's), whether open, their alarms, and their readers' health."""
        return monitor.doors(principal)

    @router.get("/sync")
    async def sync(_principal: Anyone) -> models.SyncOut:
        """The link to the platform: connected, outbox depth, oldest unsent, last PUBACK."""
        return await monitor.sync()

    @router.get("/alerts")
    async def alerts(principal: Anyone) -> models.AlertsOut:
        """Open alerts about the caller's tenants, newest first, with what to do."""
        found = await monitor.alerts(principal)
        await accounts.audit(principal, "alerts.list", None, f"{len(found.alerts)} alerts")
        return found

    @router.post("/alerts/{alert_id}/acknowledge", status_code=204)
    async def acknowledge(principal: DoorUser, alert_id: str) -> Response:
        """Close an alert once dealt with (a rule still broken raises it again)."""
        await monitor.acknowledge(principal, alert_id)
        await accounts.audit(principal, "alert.acknowledge", f"alert:{alert_id}")
        return Response(status_code=204)

    @router.post("/captures", status_code=201)
    async def arm_capture(principal: DoorUser, request: models.CaptureRequest) -> models.CaptureOut:
        """Capture the next unknown card tapped at `door` (for enrolment) instead of deciding
        it. One capture waits per door: arming a busy door is refused (409, naming who armed
        it). A landlord arms only doors serving their own units alone."""
        if request.door not in monitor.door_names(principal):
            raise _not_found("door")
        if request.door not in monitor.capture_doors(principal):
            detail = {"error": "forbidden", "message": "a shared door: only an admin arms it"}
            raise HTTPException(403, detail)
        try:
            capture = await captures.arm(capture_owner(principal), request.door)
        except CaptureRefused as error:
            raise _capture_refused(error) from error
        await accounts.audit(
            principal, "capture.arm", f"capture:{capture.id}", f"door {capture.door}"
        )
        return _capture_out(capture)

    @router.get("/captures/{capture_id}")
    async def get_capture(
        principal: DoorUser,
        capture_id: str,
        wait_s: Annotated[float, Query(ge=0, le=WAIT_MAX_S)] = 0,
    ) -> models.CaptureOut:
        """The capture's state, waiting up to `wait_s` for the tap."""
        try:
            capture = await captures.wait(capture_id, capture_owner(principal), wait_s)
        except CaptureRefused as error:
            raise _capture_refused(error) from error
        return _capture_out(capture)

    @router.get("/terminal-records")
    async def records(
        _principal: Registrar,
        terminal: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> models.TerminalRecordsOut:
        """Records the handheld terminals delivered, newest first."""
        return await monitor.terminal_records(terminal, limit)

    @router.get("/audit")
    async def audit(
        principal: Admin,
        after_id: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> models.AuditPage:
        """Who viewed or changed personal data, logged in, or was refused, oldest first
        (reading it is audited too: it names people and who looked at them)."""
        page = await monitor.audit(after_id, limit)
        await accounts.audit(principal, "audit.view", None, f"{len(page.entries)} entries")
        return page

    return router


def _capture_out(capture: CaptureView) -> models.CaptureOut:
    return models.CaptureOut(
        id=capture.id,
        door=capture.door,
        state=capture.state,
        masked=capture.masked,
        expires_at=capture.expires_at,
    )


def _capture_refused(error: CaptureRefused) -> HTTPException:
    """The door core's refusal as HTTP: a busy door names who holds it (409)."""
    if error.code == "doors_offline":
        return HTTPException(503, {"error": "doors_offline", "message": str(error)})
    if error.code == "door_busy":
        owner = error.detail.get("owner")
        detail = {
            "error": "conflict",
            "message": f"{owner} is already capturing at this door",
            "owner": owner,
            "expires_at": error.detail.get("expires_at"),
        }
        return HTTPException(409, detail)
    return _not_found("capture")


def _not_found(what: str) -> HTTPException:
    detail = {"error": "not_found", "message": f"no such {what} (or not yours)"}
    return HTTPException(404, detail)
