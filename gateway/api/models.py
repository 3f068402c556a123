"""The REST API's request and response bodies: what the OpenAPI document promises.

Requests are strict (unknown fields refused, lengths bounded, times with an
offset and within `gateway.clock.PLAUSIBLE_YEARS`); responses never carry a full ID number except
`Revealed`.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from gateway.clock import plausible
from gateway.domain.keycards import CardAction

MAX_CARDS = 4
Moment = Annotated[AwareDatetime, AfterValidator(plausible)]
"""Every time a request may carry: with an offset, in `PLAUSIBLE_YEARS`."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ErrorDetail(BaseModel):
    error: str
    message: str
    errors: list[str] | None = None


class ErrorBody(BaseModel):
    """Every refusal: `{"detail": {"error": reason, "message": text}}`."""

    detail: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (401, "Not logged in, or the session ended"),
        (403, "The role may not do this (or the CSRF token is missing)"),
        (404, "Not found, or not in the caller's units"),
        (409, "Conflicts with the current state"),
        (422, "The request is not valid"),
        (429, "Too many attempts"),
        (503, "The store cannot answer now"),
    )
}


class CardIn(Strict):
    """A key card to enrol: its serial as typed, or a tap captured at a reader."""

    card_uid: str | None = Field(None, min_length=4, max_length=40)
    capture: str | None = Field(None, min_length=1, max_length=64)
    valid_to: Moment | None = None


class EnrolRequest(Strict):
    id_number: str = Field(min_length=18, max_length=18)
    name: str = Field(min_length=1, max_length=64)
    unit: str = Field(min_length=1, max_length=32)
    room: str | None = Field(None, min_length=1, max_length=32)
    valid_from: Moment | None = None
    """Default: now."""
    valid_to: Moment | None = None
    cards: list[CardIn] = Field(default_factory=list, max_length=MAX_CARDS)


class AddCardsRequest(Strict):
    cards: list[CardIn] = Field(min_length=1, max_length=MAX_CARDS)
    unit: str | None = Field(None, min_length=1, max_length=32)
    """The tenancy's unit the cards are for; needed only when the caller lets the person
    more than one of their units."""


class ExtendRequest(Strict):
    valid_to: Moment


class CardActionRequest(Strict):
    action: CardAction


class EndTenancyRequest(Strict):
    moved_out_at: Moment | None = None
    """Default: now."""


class RegistrationOut(BaseModel):
    state: str
    deadline: date | None
    overdue_from: date | None


class PermitOut(BaseModel):
    state: str
    due_anniversary: date
    suspended_since: date | None


class TenancyOut(BaseModel):
    id: str
    unit: str
    room: str | None
    valid_from: str
    valid_to: str | None
    managed_by: Literal["gateway", "platform"]


class CardOut(BaseModel):
    id: str
    kind: str
    masked: str
    status: str
    valid_from: str | None
    valid_to: str | None
    managed_by: Literal["gateway", "platform"]


class PersonOut(BaseModel):
    id: str
    id_masked: str
    name: str | None
    tenancies: list[TenancyOut]
    cards: list[CardOut]
    registration: RegistrationOut
    permit: PermitOut | None
    open_alerts: int


class PeoplePage(BaseModel):
    people: list[PersonOut]
    total: int
    offset: int
    limit: int


class Enrolled(BaseModel):
    person: PersonOut
    new_person: bool
    """New to the caller: for a landlord, not yet a tenant in their units (whether the person
    is enrolled elsewhere at the gateway is not theirs to know)."""


class Revealed(BaseModel):
    person: str
    id_number: str


class AlertOut(BaseModel):
    id: str
    rule: str
    person: str
    id_masked: str | None
    raised_at: str
    deadline: str | None
    severity: str | None
    action: str | None
    door: str | None = None
    """Where a cancelled card was presented."""


class AlertsOut(BaseModel):
    alerts: list[AlertOut]


class ReaderOut(BaseModel):
    name: str
    online: bool
    error: str | None


class DoorOut(BaseModel):
    name: str
    units: list[str] | None
    """None: the door serves the whole building."""
    open: bool
    fail_mode: str
    alarms: list[str]
    readers: list[ReaderOut]


class DoorsOut(BaseModel):
    doors: list[DoorOut]
    online: bool = True
    """False while the door core cannot be reached (restarting, stopped): the doors shown
    are as it last told them."""


class SyncOut(BaseModel):
    connected: bool
    reconnects: int
    last_error: str | None
    last_puback: str | None
    head_seq: int
    delivered_seq: int
    """PUBACKed by the broker through this seq."""
    acked_seq: int
    """Acknowledged by the platform (stored) through this seq: kept until then."""
    outbox_depth: int
    oldest_unsent: str | None


class EventOut(BaseModel):
    seq: int
    id: str
    type: str
    ts: str
    door: str | None
    person: str | None
    data: dict[str, Any]


class EventsPage(BaseModel):
    events: list[EventOut]
    next_before_seq: int | None
    """Pass as `before_seq` for the next (older) page; None at the end."""


class TerminalRecordOut(BaseModel):
    record_id: str
    terminal: str
    kind: str
    captured_at: str
    received_at: str
    seq: int


class TerminalRecordsOut(BaseModel):
    records: list[TerminalRecordOut]


class CaptureRequest(Strict):
    door: str = Field(min_length=1, max_length=64)


class CaptureOut(BaseModel):
    id: str
    door: str
    state: Literal["waiting", "captured", "expired"]
    masked: str | None
    expires_at: str


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    subject: str | None
    detail: str | None


class AuditPage(BaseModel):
    entries: list[AuditOut]
