"""People, their credentials and their tenancies, as values that validate themselves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gateway.domain.credentials import Credential
from gateway.domain.ids import IdNumber

MAX_NAME_LENGTH = 64
MAX_UNIT_LENGTH = 32


def _require_aware(moment: datetime | None, what: str) -> None:
    if moment is not None and moment.tzinfo is None:
        raise ValueError(f"{what} must carry a timezone offset")


@dataclass(frozen=True)
class Tenancy:
    """A person's right to live in a unit (and room) from one moment to another."""

    unit: str
    valid_from: datetime
    valid_to: datetime | None = None
    room: str | None = None

    def __post_init__(self) -> None:
        if not self.unit or len(self.unit) > MAX_UNIT_LENGTH or not self.unit.isprintable():
            raise ValueError(f"unit must be 1-{MAX_UNIT_LENGTH} printable characters")
        if self.room is not None and (len(self.room) > MAX_UNIT_LENGTH or not self.room):
            raise ValueError(f"room must be 1-{MAX_UNIT_LENGTH} characters")
        _require_aware(self.valid_from, "tenancy start")
        _require_aware(self.valid_to, "tenancy end")
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError("tenancy must end after it starts")


@dataclass(frozen=True)
class CredentialGrant:
    """A credential to enrol, optionally limited in time (a key card's validity window)."""

    credential: Credential
    valid_from: datetime | None = None
    valid_to: datetime | None = None

    def __post_init__(self) -> None:
        _require_aware(self.valid_from, "credential start")
        _require_aware(self.valid_to, "credential end")
        if self.valid_from and self.valid_to and self.valid_to <= self.valid_from:
            raise ValueError("credential validity must end after it starts")


@dataclass(frozen=True)
class Enrolment:
    """What a landlord enters to let a tenant in: who, with what, where."""

    id_number: IdNumber
    name: str
    credentials: tuple[CredentialGrant, ...] = field(default_factory=tuple)
    tenancy: Tenancy | None = None

    def __post_init__(self) -> None:
        name = self.name.strip()
        if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise ValueError(f"name must be 1-{MAX_NAME_LENGTH} printable characters")
        object.__setattr__(self, "name", name)

    def __repr__(self) -> str:
        return f"Enrolment({self.id_number!r}, credentials={len(self.credentials)})"
