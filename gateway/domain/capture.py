"""What a co-ordinator's handheld captures: a registration, a change or a departure (R1, R7).

A `CapturedRecord` is made once on the terminal, queued there while offline and
sent to the gateway as JSON; the gateway validates it again with this same
model, so both sides agree on what a valid record is. `record_id` is made by the
terminal and names the record for good: sending it twice is harmless.

Which dates a kind needs (the "since when" of a registration):
- `registration`: someone lives here: `moved_in_on` required, no `moved_out_on`;
- `change`: a registered person's address or workplace changed (R1: within 10
  days): `moved_in_on` is the day the new address/workplace applies from,
  required, no `moved_out_on`;
- `departure`: someone moved out: `moved_out_on` required, `moved_in_on`
  optional (not before it).
No date may lie after the day of capture (in the terminal's own offset) nor
before the birth date the ID number carries.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.clock import plausible
from gateway.domain.ids import IdNumber

MAX_RECORD_TEXT = 1024
"""Longest voucher text (a voucher QR payload is the longest field)."""

TerminalId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
RecordId = Annotated[
    str,
    Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
]
"""A UUID in its canonical lower-case text (the terminal makes UUIDv7s)."""


def _printable(text: str) -> str:
    if not text.isprintable() or text != text.strip():
        raise ValueError("must be printable text without leading or trailing spaces")
    return text


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("time must carry a UTC offset")
    return plausible(moment)


Text64 = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable)]
Text128 = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable)]
Unit = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_printable)]
Phone = Annotated[str, Field(pattern=r"^\+?[0-9][0-9 -]{3,22}[0-9]$")]
Voucher = Annotated[
    str, Field(min_length=1, max_length=MAX_RECORD_TEXT), AfterValidator(_printable)
]
AwareTime = Annotated[datetime, AfterValidator(_aware)]


class CaptureKind(StrEnum):
    REGISTRATION = "registration"
    CHANGE = "change"
    DEPARTURE = "departure"


class CapturedRecord(BaseModel):
    """One capture, valid once constructed. Strict: no coercion, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    record_id: RecordId
    terminal: TerminalId
    kind: CaptureKind
    captured_at: AwareTime
    id_number: str
    """Normalised by `IdNumber` (full-width digits folded, x upper-cased)."""
    name: Text64
    building: Text64
    unit: Unit
    room: Unit | None = None
    moved_in_on: date | None = None
    moved_out_on: date | None = None
    workplace: Text128 | None = None
    phone: Phone | None = None
    voucher: Voucher | None = None
    """The residence-registration voucher text as scanned; verified elsewhere, not here."""

    @field_validator("id_number")
    @classmethod
    def _id_number(cls, value: str) -> str:
        return IdNumber(value).value

    @property
    def id_masked(self) -> str:
        return IdNumber(self.id_number).masked

    @model_validator(mode="after")
    def _dates(self) -> CapturedRecord:
        if self.kind is CaptureKind.DEPARTURE:
            if self.moved_out_on is None:
                raise ValueError("a departure needs moved_out_on")
        else:
            if self.moved_in_on is None:
                raise ValueError(f"a {self.kind.value} needs moved_in_on")
            if self.moved_out_on is not None:
                raise ValueError(f"a {self.kind.value} has no moved_out_on (capture a departure)")
        if (
            self.moved_in_on is not None
            and self.moved_out_on is not None
            and self.moved_out_on < self.moved_in_on
        ):
            raise ValueError("moved_out_on is before moved_in_on")
        captured_on = self.captured_at.date()
        born = IdNumber(self.id_number).birth_date
        for field, day in (("moved_in_on", self.moved_in_on), ("moved_out_on", self.moved_out_on)):
            if day is not None and day > captured_on:
                raise ValueError(f"{field} is after the day of capture ({captured_on})")
            if day is not None and day < born:
                raise ValueError(f"{field} is before the birth date the ID number carries")
        return self
