"""Which event fields are personal data, and how an event carries them: in one sealed box.

Full ID numbers, names, phone numbers, workplaces and voucher texts (a voucher
carries its holder's name) leave the gateway only inside the event's `sealed`
field, a box (`gateway.domain.sealed_box`) to the platform's encryption key.
What the platform needs in clear and that identifies no one in full stays
outside: the masked ID number, the gateway's keyed hash, building, unit, room
and dates. The box's associated data is the gateway id, the event type and the
record id, so a box moved to another event or gateway does not open.

The gateway seals (`seal_fields`); the platform opens (`open_event`), here in
one place so `rentgate platform watch` and `rentgate platform ingest` agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.domain.events import EventType
from gateway.domain.sealed_box import OpeningKey, SealError, SealingKey, SealProblem, open_box

SEALED_FIELD = "sealed"
SEALED_FIELDS: Mapping[str, tuple[str, ...]] = {
    EventType.REGISTRATION_CAPTURED.value: ("id_number", "name", "phone", "workplace", "voucher"),
}
"""Per event type, the fields that travel only inside the box."""
SUBJECT_FIELD: Mapping[str, str] = {EventType.REGISTRATION_CAPTURED.value: "record"}
"""Per event type, the clear field naming what the event is about (bound into the box)."""


def event_context(gateway_id: str, event_type: str, subject: str) -> str:
    """The box's associated data: it opens only in this gateway's event about this subject."""
    return f"{gateway_id}\0{event_type}\0{subject}"


def seal_fields(
    key: SealingKey,
    fields: Mapping[str, Any],
    *,
    gateway_id: str,
    event_type: EventType,
    subject: str,
) -> dict[str, Any]:
    """The box holding exactly the event type's personal fields (JSON inside)."""
    names = SEALED_FIELDS[event_type.value]
    if set(fields) != set(names):
        raise ValueError(f"{event_type.value} seals exactly {sorted(names)}")
    plaintext = json.dumps(dict(fields), ensure_ascii=False, separators=(",", ":"))
    return key.seal(plaintext.encode("utf-8"), event_context(gateway_id, event_type, subject))


def open_event(
    keys: Iterable[OpeningKey], gateway_id: str, event: Mapping[str, Any]
) -> dict[str, Any]:
    """The event with its box replaced by the fields inside; events without one, unchanged.

    Raises SealError (with a `problem` to count) for a box that will not open.
    """
    opened = dict(event)
    if SEALED_FIELD not in opened:
        return opened
    event_type = opened.get("type")
    names = SEALED_FIELDS.get(event_type) if isinstance(event_type, str) else None
    subject = opened.get(SUBJECT_FIELD.get(str(event_type), ""))
    if names is None or not isinstance(event_type, str) or not isinstance(subject, str):
        raise SealError(SealProblem.MALFORMED, f"no sealed fields in a {event_type!r} event")
    context = event_context(gateway_id, event_type, subject)
    plaintext = open_box(keys, opened.pop(SEALED_FIELD), context)
    try:
        fields = json.loads(plaintext.decode("utf-8"))
    except ValueError as exc:
        raise SealError(SealProblem.MALFORMED, "the box does not hold JSON") from exc
    if not isinstance(fields, dict) or set(fields) != set(names):
        raise SealError(SealProblem.MALFORMED, f"the box does not hold exactly {sorted(names)}")
    opened.update(fields)
    return opened
