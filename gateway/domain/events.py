"""Events as the gateway records and sends them.

An event is born once, with a UUIDv7 id, a wall-clock timestamp with offset and
a monotonic reading; the store gives it its seq when it commits. The payload is
serialised here, once, so the outbox stores and the uplink sends the same bytes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway.clock import iso_ms


class EventType(StrEnum):
    """Every event type the gateway emits; each has a schema in docs/asyncapi.yaml."""

    ACCESS_DECISION = "access.decision"
    DEVICE_STATUS = "device.status"
    DOOR_UNLOCKED = "door.unlocked"
    """A remote unlock by the platform (`door.unlock`)."""
    DOOR_ALARM = "door.alarm"
    ALERT_RAISED = "alert.raised"
    ALERT_CLEARED = "alert.cleared"
    REGISTRATION_CAPTURED = "registration.captured"
    """A handheld terminal's capture, accepted by the gateway (carries the full ID number)."""
    GATEWAY_ALARM = "gateway.alarm"
    """The gateway itself needs attention (storage over budget or failing)."""
    ENROL_CAPTURE = "enrol.capture"
    """Enrol by tap: a capture armed at a door, or the card it took (`doors/enrol_by_tap`)."""


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event ready for the outbox: its JSON payload has no seq yet."""

    id: str
    type: str
    ts: str
    payload: str


class _Uuid7:
    """UUIDv7 (RFC 9562) with a per-process counter so ids from one millisecond still sort."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def __call__(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                self._counter += 1
                if self._counter > 0xFFF:
                    ms += 1
                    self._counter = 0
            else:
                self._counter = 0
            self._last_ms = ms
            counter = self._counter
        rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


uuid7 = _Uuid7()
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def new_event(
    event_type: EventType, moment: datetime, mono: float, body: Mapping[str, Any]
) -> OutboxEvent:
    """Stamp and serialise an event. `body` must not use the event's own keys (nor `seq`)."""
    event_id = uuid7()
    ts = iso_ms(moment)
    document = {"id": event_id, "type": event_type.value, "ts": ts, "mono": round(mono, 6)}
    clash = (document.keys() | {"seq"}) & body.keys()
    if clash:
        raise ValueError(f"event body may not set {sorted(clash)}")
    document.update(body)
    payload = _ENCODER.encode(document)
    return OutboxEvent(event_id, event_type.value, ts, payload)
