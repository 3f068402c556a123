"""The bodies of platform commands, as validated models (docs/asyncapi.yaml has the schemas).

A body that fails validation is refused whole: nothing of it is applied.
Credential values and ID numbers are checked with the same rules as a reader's
input, so the platform cannot enrol a value no reader could ever present.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.domain.credentials import CredentialKind, CredentialStatus, parse_credential
from gateway.domain.ids import IdNumber

PersonId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Unit = Annotated[str, Field(min_length=1, max_length=32)]


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("time must carry a UTC offset")
    return moment


AwareTime = Annotated[datetime, AfterValidator(_aware)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CredentialEntry(_Body):
    kind: CredentialKind
    value: str = Field(min_length=1, max_length=1024)
    status: CredentialStatus = CredentialStatus.ACTIVE
    valid_from: AwareTime | None = None
    valid_to: AwareTime | None = None

    @model_validator(mode="after")
    def _check(self) -> CredentialEntry:
        credential = parse_credential(self.kind, self.value)  # CredentialError is a ValueError
        object.__setattr__(self, "value", credential.value)
        if self.valid_from and self.valid_to and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        return self


class TenancyEntry(_Body):
    unit: Unit
    room: Unit | None = None
    valid_from: AwareTime
    valid_to: AwareTime | None = None

    @model_validator(mode="after")
    def _check(self) -> TenancyEntry:
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        return self


class PersonEntry(_Body):
    """One person of the allowlist with everything they may open doors with, and where."""

    person: PersonId
    id_number: str
    name: str = Field(min_length=1, max_length=64)
    credentials: list[CredentialEntry] = Field(default_factory=list, max_length=16)
    tenancies: list[TenancyEntry] = Field(default_factory=list, max_length=16)

    @field_validator("id_number")
    @classmethod
    def _id_number(cls, value: str) -> str:
        return IdNumber(value).value


SNAPSHOT_PAGE_PEOPLE = 1000
"""Most people in one snapshot page: a page is parsed, verified and staged in a few
milliseconds of held interpreter, and a gateway never holds a whole allowlist in memory."""


class AllowlistSnapshot(_Body):
    """One page of the allowlist at `version`; the last page to arrive switches it in."""

    version: int = Field(ge=1)
    page: int = Field(1, ge=1)
    pages: int = Field(1, ge=1, le=100_000)
    people: list[PersonEntry] = Field(max_length=SNAPSHOT_PAGE_PEOPLE)

    @model_validator(mode="after")
    def _page(self) -> AllowlistSnapshot:
        if self.page > self.pages:
            raise ValueError("page must not exceed pages")
        return self

    @model_validator(mode="after")
    def _unique(self) -> AllowlistSnapshot:
        _require_unique(self.people)
        return self


def snapshot_pages(
    version: int, people: list[dict[str, Any]], page_size: int = SNAPSHOT_PAGE_PEOPLE
) -> list[dict[str, Any]]:
    """Split an allowlist into the bodies of `allowlist.snapshot` pages (the platform's side)."""
    if not 1 <= page_size <= SNAPSHOT_PAGE_PEOPLE:
        raise ValueError(f"page size must be 1..{SNAPSHOT_PAGE_PEOPLE}")
    chunks = [people[i : i + page_size] for i in range(0, len(people), page_size)] or [[]]
    return [
        {"version": version, "page": number, "pages": len(chunks), "people": chunk}
        for number, chunk in enumerate(chunks, start=1)
    ]


class AllowlistDelta(_Body):
    from_version: int = Field(ge=0)
    to_version: int = Field(ge=1)
    upsert: list[PersonEntry] = Field(default_factory=list)
    remove: list[PersonId] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> AllowlistDelta:
        if self.to_version != self.from_version + 1:
            raise ValueError("to_version must be from_version + 1")
        _require_unique(self.upsert)
        if {p.person for p in self.upsert} & set(self.remove):
            raise ValueError("a person is both upserted and removed")
        return self


def _require_unique(people: list[PersonEntry]) -> None:
    seen_people: set[str] = set()
    seen_ids: set[str] = set()
    seen_credentials: set[tuple[str, str]] = set()
    for entry in people:
        if entry.person in seen_people or entry.id_number in seen_ids:
            raise ValueError(f"person {entry.person} appears twice")
        seen_people.add(entry.person)
        seen_ids.add(entry.id_number)
        for credential in entry.credentials:
            key = (credential.kind.value, credential.value)
            if key in seen_credentials:
                raise ValueError(f"a {credential.kind.value} credential is given twice")
            seen_credentials.add(key)


class Registration(_Body):
    state: Literal["registered", "not_registered", "moved_out"]
    building: str | None = Field(default=None, max_length=64)
    """The building id the person is registered at (this gateway's or another)."""
    unit: Unit | None = None
    registered_on: date | None = None
    moved_out_on: date | None = None


class Permit(_Body):
    issued_on: date
    endorsed_on: list[date] = Field(default_factory=list, max_length=100)


class PersonStatus(_Body):
    person: PersonId
    as_of: int = Field(ge=1)
    """The platform's revision of this person's status; older revisions are refused."""
    registration: Registration | None = None
    permit: Permit | None = None
    household_address: str | None = Field(default=None, max_length=128)


class CredentialRevoke(_Body):
    kind: CredentialKind
    value: str = Field(min_length=1, max_length=1024)
    status: Literal["lost", "revoked", "cancelled"]

    @model_validator(mode="after")
    def _check(self) -> CredentialRevoke:
        object.__setattr__(self, "value", parse_credential(self.kind, self.value).value)
        return self


class DoorUnlock(_Body):
    door: str = Field(min_length=1, max_length=48)
    seconds: int = Field(default=5, ge=1, le=60)


class ConfigSet(_Body):
    settings: dict[str, int | str | list[str]] = Field(min_length=1, max_length=32)


class Resync(_Body):
    pass


class KeysRotate(_Body):
    add: list[str] = Field(default_factory=list, max_length=4)
    """Public keys in PEM."""
    retire: list[str] = Field(default_factory=list, max_length=4)
    """Key ids no longer trusted."""


class Ack(_Body):
    """The platform has stored every event of this gateway through `through_seq`."""

    through_seq: int = Field(ge=0, strict=True)


class Replay(_Body):
    """Publish the outbox again from `from_seq` (as far back as the gateway still keeps)."""

    from_seq: int = Field(ge=1, strict=True)
