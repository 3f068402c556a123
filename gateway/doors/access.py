"""The door decision: credential + door + time -> allow or deny, with the reason.

Decisions read only an in-memory index, so they never wait on the disk, the
network or the platform. Changes are prepared off the event loop (entries built
from registry rows in a worker thread) and applied on it, between decisions,
with one dict update; a wholesale reload builds a new index and swaps it in.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gateway.domain.credentials import CredentialKind, CredentialStatus
from gateway.store.registry import CredentialRow, TenancyRow

_NEVER = math.inf
_ALWAYS = -math.inf


class DecisionReason(StrEnum):
    GRANTED = "granted"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    WRONG_DOOR = "wrong_door"
    NO_TENANCY = "no_tenancy"
    INVALID_VOUCHER = "invalid_voucher"
    """A voucher QR that does not verify (forged, tampered, expired, unknown key…)."""


@dataclass(frozen=True, slots=True)
class Tenure:
    unit: str
    starts: float
    ends: float


@dataclass(frozen=True, slots=True)
class Entry:
    """What the index knows of one credential; times as POSIX seconds for speed."""

    credential_id: str
    person_id: str
    kind: CredentialKind
    status: CredentialStatus
    starts: float
    ends: float
    tenures: tuple[Tenure, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: DecisionReason
    entry: Entry | None = None

    @property
    def status_detail(self) -> str | None:
        """The credential's status when it was refused for it (lost, cancelled, …)."""
        if self.reason is DecisionReason.REVOKED and self.entry is not None:
            return self.entry.status.value
        return None


@dataclass(frozen=True)
class DoorPolicy:
    """Which units a door serves; None serves every unit (a building's front door)."""

    name: str
    units: frozenset[str] | None = None

    def serves(self, unit: str) -> bool:
        return self.units is None or unit in self.units


def _seconds(moment: datetime | None, default: float) -> float:
    return moment.timestamp() if moment is not None else default


def entries_for(
    credentials: Iterable[CredentialRow], tenancies: Iterable[TenancyRow]
) -> dict[bytes, Entry]:
    """Index entries for credentials, each carrying all of its person's tenancies.

    `tenancies` must hold every tenancy of every person the credentials belong to.
    """
    by_person: dict[str, list[Tenure]] = defaultdict(list)
    for tenancy in tenancies:
        by_person[tenancy.person_id].append(
            Tenure(tenancy.unit, tenancy.valid_from.timestamp(), _seconds(tenancy.valid_to, _NEVER))
        )
    frozen = {person: tuple(items) for person, items in by_person.items()}
    return {
        row.lookup: Entry(
            row.credential_id,
            row.person_id,
            row.kind,
            row.status,
            _seconds(row.valid_from, _ALWAYS),
            _seconds(row.valid_to, _NEVER),
            frozen.get(row.person_id, ()),
        )
        for row in credentials
    }


class AccessIndex:
    """Map from credential lookup hash to what decides for it.

    Read and changed only on the event loop thread: `apply` runs between decisions.
    """

    def __init__(self, entries: dict[bytes, Entry], doors: Mapping[str, DoorPolicy]) -> None:
        self._entries = entries
        self._doors = dict(doors)

    @classmethod
    def build(
        cls,
        credentials: Iterable[CredentialRow],
        tenancies: Iterable[TenancyRow],
        doors: Mapping[str, DoorPolicy],
    ) -> AccessIndex:
        return cls(entries_for(credentials, tenancies), doors)

    def apply(self, entries: Mapping[bytes, Entry], removed: Iterable[bytes] = ()) -> None:
        """Drop removed credentials, then add or replace the entries of the people who
        changed (built by `entries_for`)."""
        for lookup in removed:
            self._entries.pop(lookup, None)
        self._entries.update(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def knows(self, lookup: bytes) -> bool:
        """Whether the credential is enrolled (in any state): enrol by tap never takes it."""
        return lookup in self._entries

    @property
    def doors(self) -> Mapping[str, DoorPolicy]:
        return self._doors

    def decide(self, lookup: bytes, door: str, now: float) -> Decision:  # noqa: PLR0911
        """Decide for a credential (by lookup hash) at a door at POSIX time `now`."""
        entry = self._entries.get(lookup)
        if entry is None:
            return Decision(False, DecisionReason.UNKNOWN)
        if entry.status is not CredentialStatus.ACTIVE:
            return Decision(False, DecisionReason.REVOKED, entry)
        if now < entry.starts:
            return Decision(False, DecisionReason.NOT_YET_VALID, entry)
        if now >= entry.ends:
            return Decision(False, DecisionReason.EXPIRED, entry)
        if not entry.tenures:
            return Decision(False, DecisionReason.NO_TENANCY, entry)
        policy = self._doors.get(door)
        if policy is None:
            return Decision(False, DecisionReason.WRONG_DOOR, entry)
        reason = DecisionReason.WRONG_DOOR
        for tenure in entry.tenures:
            if not policy.serves(tenure.unit):
                continue
            if tenure.starts <= now < tenure.ends:
                return Decision(True, DecisionReason.GRANTED, entry)
            if now < tenure.starts:
                reason = DecisionReason.NOT_YET_VALID
            elif reason is not DecisionReason.NOT_YET_VALID:
                reason = DecisionReason.EXPIRED
        return Decision(False, reason, entry)
