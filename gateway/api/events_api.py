"""REST for door and gateway events: pages by seq with filters, and a live SSE stream."""

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from gateway.api import models
from gateway.api.accounts import Accounts
from gateway.api.auth import Principal, Role
from gateway.api.history import History, LiveFeed, stream
from gateway.api.security import require
from gateway.store.event_history import EventFilter

KEEPALIVE_S = 15.0


def events_router(accounts: Accounts, history: History, feed: LiveFeed) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["events"], responses=models.ERROR_RESPONSES)
    Viewer = Annotated[Principal, Depends(require(accounts, Role.ADMIN, Role.LANDLORD))]

    @router.get("/events")
    async def list_events(  # noqa: PLR0917 - FastAPI takes query parameters as arguments
        principal: Viewer,
        door: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        person: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        type: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        since: Annotated[models.Moment | None, Query()] = None,
        until: Annotated[models.Moment | None, Query()] = None,
        before_seq: Annotated[int | None, Query(ge=1, le=2**62)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> models.EventsPage:
        """Events newest first, filtered by door, person, type and time; page with
        `before_seq`. A landlord sees their tenants' events and their doors' own events."""
        try:
            wanted = EventFilter(door=door, person=person, type=type, since=since, until=until)
        except ValueError as exc:
            refusal = {"error": "bad_request", "message": str(exc)}
            raise HTTPException(422, refusal) from exc
        page = await history.page(principal, wanted, before_seq=before_seq, limit=limit)
        if person is not None or page.events:
            detail = f"{len(page.events)} events" + (" of one person" if person else "")
            await accounts.audit(principal, "events.list", None, detail)
        return page

    @router.get(
        "/events/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "event stream"}},
    )
    async def live_events(
        request: Request,
        principal: Viewer,
        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    ) -> StreamingResponse:
        """Server-sent events as they are recorded (`id` is the seq; send it back as
        `Last-Event-ID` to resume). Audited when opened, as a page of events is: the stream
        shows the same door history, and its replay can be all of it."""
        del request
        last = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
        subscriber, missed = await feed.subscribe(principal, last)
        detail = "live" if last is None else f"live, replaying {len(missed)} after seq {last}"
        try:
            await accounts.audit(principal, "events.stream", None, detail)
        except BaseException:
            feed.unsubscribe(subscriber)  # nothing is shown unrecorded
            raise
        return StreamingResponse(
            stream(feed, subscriber, missed, KEEPALIVE_S),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
