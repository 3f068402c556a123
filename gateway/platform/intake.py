"""From broker deliveries to rows: every envelope and state checked before it nears the database.

A gateway's envelope is accepted only whole: the topic's gateway (which the broker's
ACL vouches for) must be the envelope's, every event must carry an integer seq, a
timestamp with its offset in the years the gateway's clock accepts and a type; a
registration must have well-formed dates. Anything else is a `Rejection` with a
reason, counted and kept for a person to look at, and never half stored: one bad
event must not fail the batch of a thousand gateways it arrived with.

Events are stored as they came, their sealed box still sealed. A registration is
also stored in its own row with the box opened (`--decrypt-key`), because that is
what the platform registers people with; without the key, or when the box will not
open, its row keeps the box and `opened` false, to be opened later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from gateway.domain.events import EventType
from gateway.domain.personal import SEALED_FIELD, SEALED_FIELDS, open_event
from gateway.domain.sealed_box import OpeningKey, SealError
from gateway.platform.source import Delivery
from gateway.sync.wire import CONTRACT_VERSION

_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
"""Half a UTF-16 pair, escaped: Python's JSON takes it, PostgreSQL's jsonb refuses it."""
MIN_YEAR, MAX_YEAR = 2000, 2100
"""The years a gateway's clock accepts (gateway/clock.py); a ts outside is a broken clock."""
REGISTRATION = EventType.REGISTRATION_CAPTURED.value
PERSONAL_FIELDS = SEALED_FIELDS[REGISTRATION]


@dataclass(frozen=True)
class EventRow:
    """One checked event; its JSON goes to the database inside its envelope (`EnvelopeRow`)."""

    gw: str
    seq: int
    ts: datetime
    type: str


@dataclass(frozen=True)
class EnvelopeRow:
    """A checked envelope's JSON as received: the database splits it into event rows itself,
    so no event is encoded twice here (that cost more than everything else in the ingest)."""

    gw: str
    payload: str


@dataclass(frozen=True)
class RegistrationRow:
    gw: str
    seq: int
    record: str
    kind: str | None
    terminal: str | None
    captured_at: datetime | None
    building: str | None
    unit: str | None
    room: str | None
    moved_in_on: date | None
    moved_out_on: date | None
    id_masked: str | None
    id_hash: str | None
    personal: Mapping[str, str | None] | None
    """The opened box (id_number, name, phone, workplace, voucher), None if not opened."""
    sealed: str | None
    """The box's JSON while it is not opened."""


@dataclass(frozen=True)
class StateRow:
    gw: str
    online: bool
    ts: datetime
    head_seq: int | None
    acked_seq: int | None
    backlog: int | None
    oldest_unacked_s: float | None
    state_every_s: float | None
    software: str | None


@dataclass(frozen=True)
class Rejection:
    topic: str
    reason: str
    payload: bytes


@dataclass
class Intake:
    """What one batch of deliveries amounts to."""

    events: list[EventRow] = field(default_factory=list)
    envelope_rows: list[EnvelopeRow] = field(default_factory=list)
    registrations: list[RegistrationRow] = field(default_factory=list)
    states: list[StateRow] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    envelopes: int = 0
    unopened: int = 0


class Rejected(ValueError):
    """Why a message is refused; its text is the reason counted and stored."""


def take(deliveries: Iterable[Delivery], keys: Sequence[OpeningKey] = ()) -> Intake:
    """Check and convert a batch of deliveries; bad ones become rejections, never errors."""
    intake = Intake()
    for delivery in deliveries:
        try:
            document = _document(delivery)
            if delivery.is_state:
                intake.states.append(_state(document))
            else:
                text = _text_of(delivery)
                _envelope(document, keys, intake)
                intake.envelope_rows.append(EnvelopeRow(document["gw"], text))
                intake.envelopes += 1
        except Rejected as exc:
            intake.rejections.append(Rejection(delivery.topic, str(exc), delivery.payload))
    return intake


def _text_of(delivery: Delivery) -> str:
    """The payload as text (it parsed as JSON, so it is UTF-8), refused if PostgreSQL would
    refuse it: jsonb holds no NUL character."""
    text = delivery.payload.decode("utf-8")
    if "\\u" not in text:
        return text
    if "\\u0000" in text:
        raise Rejected("a NUL character (\\u0000) in the payload")
    if _LONE_SURROGATE.search(text):
        raise Rejected("a lone surrogate (\\ud800-\\udfff) in the payload")
    return text


def _document(delivery: Delivery) -> dict[str, Any]:
    gateway_id = delivery.gateway_id
    if gateway_id is None or not delivery.topic.endswith(("/events", "/state")):
        raise Rejected("not a gateway's events or state topic")
    try:
        document = json.loads(delivery.payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected("not JSON") from exc
    if not isinstance(document, dict):
        raise Rejected("not a JSON object")
    if document.get("v") != CONTRACT_VERSION:
        raise Rejected(f"contract version {document.get('v')!r}, not {CONTRACT_VERSION}")
    if document.get("gw") != gateway_id:
        raise Rejected("the payload's gw is not the topic's gateway")
    return document


def _envelope(document: Mapping[str, Any], keys: Sequence[OpeningKey], intake: Intake) -> None:
    gateway_id: str = document["gw"]
    events = document.get("events")
    if not isinstance(events, list) or not events:
        raise Rejected("an envelope carries a non-empty events list")
    rows: list[EventRow] = []
    registrations: list[RegistrationRow] = []
    unopened = 0
    for event in events:
        row = _event(gateway_id, event)
        rows.append(row)
        if row.type == REGISTRATION:
            registration, opened = _registration(gateway_id, row.seq, event, keys)
            registrations.append(registration)
            unopened += 0 if opened else 1
    intake.events.extend(rows)
    intake.registrations.extend(registrations)
    intake.unopened += unopened


def _event(gateway_id: str, event: Any) -> EventRow:
    if not isinstance(event, dict):
        raise Rejected("an event is not a JSON object")
    seq, event_type = event.get("seq"), event.get("type")
    if type(seq) is not int or seq < 1:
        raise Rejected("an event without a positive integer seq")
    if not isinstance(event_type, str) or not event_type:
        raise Rejected(f"event {seq} has no type")
    ts = _timestamp(event.get("ts"), f"event {seq}'s ts")
    return EventRow(gateway_id, seq, ts, event_type)


def _registration(
    gateway_id: str, seq: int, event: Mapping[str, Any], keys: Sequence[OpeningKey]
) -> tuple[RegistrationRow, bool]:
    record = event.get("record")
    if not isinstance(record, str) or not record:
        raise Rejected(f"registration {seq} has no record id")
    personal: dict[str, str | None] | None = None
    sealed = event.get(SEALED_FIELD)
    if keys and sealed is not None:
        try:
            opened = open_event(keys, gateway_id, event)
            personal = {name: _text(opened.get(name), name) for name in PERSONAL_FIELDS}
        except SealError:
            personal = None
    row = RegistrationRow(
        gw=gateway_id,
        seq=seq,
        record=record,
        kind=_text(event.get("kind"), "kind"),
        terminal=_text(event.get("terminal"), "terminal"),
        captured_at=(
            _timestamp(event["captured_at"], "captured_at") if event.get("captured_at") else None
        ),
        building=_text(event.get("building"), "building"),
        unit=_text(event.get("unit"), "unit"),
        room=_text(event.get("room"), "room"),
        moved_in_on=_day(event.get("moved_in_on"), "moved_in_on"),
        moved_out_on=_day(event.get("moved_out_on"), "moved_out_on"),
        id_masked=_text(event.get("id_masked"), "id_masked"),
        id_hash=_text(event.get("id_hash"), "id_hash"),
        personal=personal,
        sealed=(
            json.dumps(sealed, separators=(",", ":"))
            if personal is None and sealed is not None
            else None
        ),
    )
    return row, personal is not None or sealed is None


def _state(document: Mapping[str, Any]) -> StateRow:
    online = document.get("online")
    if not isinstance(online, bool):
        raise Rejected("a state without online true/false")
    return StateRow(
        gw=document["gw"],
        online=online,
        ts=_timestamp(document.get("ts"), "the state's ts"),
        head_seq=_count(document.get("head_seq"), "head_seq"),
        acked_seq=_count(document.get("acked_seq"), "acked_seq"),
        backlog=_count(document.get("backlog"), "backlog"),
        oldest_unacked_s=_seconds(document.get("oldest_unacked_s"), "oldest_unacked_s"),
        state_every_s=_seconds(document.get("state_every_s"), "state_every_s"),
        software=_text(document.get("software"), "software"),
    )


def _timestamp(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise Rejected(f"{what} is missing")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise Rejected(f"{what} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise Rejected(f"{what} has no UTC offset")
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise Rejected(f"{what} is outside {MIN_YEAR}-{MAX_YEAR}")
    return parsed


def _day(value: Any, what: str) -> date | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(f"{what} is not a date")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise Rejected(f"{what} is not a date") from exc


def _text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "\0" in value or len(value) > 1024:
        raise Rejected(f"{what} is not a short text")
    return value


def _count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise Rejected(f"{what} is not a count")
    return value


def _seconds(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float) or value < 0:
        raise Rejected(f"{what} is not a number of seconds")
    return float(value)
