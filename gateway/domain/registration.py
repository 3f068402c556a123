"""R1: residence registration (居住登记) of a person living at one building.

Notice §二(一)1: a person whose household registration (户籍) is outside the
Hangzhou urban districts and who lives there 3 days or more must register; a
registered person whose address changes must register the change within 10
days. Counting, as decided (each a row in tests/domain/test_rules_registration.py):

- The day of first presence at the building (door tap, capture) is day 1.
  Registration is on time through day 3 (deadline = first seen + 2 days) and
  overdue from day 4 (first seen + 3 days).
- A person registered at another address and living here: the change is on
  time through day 10 counting the first presence here as day 1 (deadline =
  first seen + 9 days), overdue from day 11 (first seen + 10 days).
- Local people (household address in a configured local district, matched on
  the address text: the ID number's region code is only the place of first
  issue) are LOCAL and never due. Moved-out people raise nothing.
- The status is computed as of `today`: a first presence or move-out dated
  after it has not happened yet. The registration the platform reports is
  taken as current whatever its date (the platform knows better than a gateway
  clock that may lag).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import TypeVar

REGISTRATION_DAYS = 3
"""Days of presence, counting the first as day 1, within which a newcomer registers."""
CHANGE_DAYS = 10
"""Days, counting the first presence at the new address as day 1, to register a change."""
PROVINCE = "浙江省"
"""Stripped from the start of addresses and district names before matching."""

K = TypeVar("K")


class RegistrationState(StrEnum):
    NOT_SEEN = "not_seen"
    """Not registered here and not yet seen here: no clock running."""
    LOCAL = "local"
    """Household registration in a local district: never due."""
    REGISTERED = "registered"
    """Registered at this building."""
    DUE = "due"
    """Seen here, not registered anywhere, still on time."""
    OVERDUE = "overdue"
    """Seen here 4 days or more without registering: landlord and platform are alerted."""
    CHANGE_DUE = "change_due"
    """Registered elsewhere, living here, the 10 days to register the change still run."""
    CHANGE_OVERDUE = "change_overdue"
    """Registered elsewhere and living here for 11 days or more: alerted."""
    MOVED_OUT = "moved_out"
    """No longer lives here: nothing to do."""


_OPEN = frozenset(
    {
        RegistrationState.DUE,
        RegistrationState.OVERDUE,
        RegistrationState.CHANGE_DUE,
        RegistrationState.CHANGE_OVERDUE,
    }
)
_ALERT = frozenset({RegistrationState.OVERDUE, RegistrationState.CHANGE_OVERDUE})


@dataclass(frozen=True, slots=True)
class RegistrationFacts:
    """What the gateway and the platform know of one person at one building."""

    local: bool
    """Household address in a local district (see `is_local`)."""
    first_seen_on: date | None = None
    """First presence at this building in the current stay (door tap, capture)."""
    registered_building: str | None = None
    """Where the platform says the person is registered now, if anywhere."""
    moved_out_on: date | None = None

    def __post_init__(self) -> None:
        if self.registered_building is not None and not self.registered_building.strip():
            raise ValueError("registered building must be a non-empty name or None")
        if (
            self.moved_out_on is not None
            and self.first_seen_on is not None
            and self.moved_out_on < self.first_seen_on
        ):
            raise ValueError("moved out before first seen: a return is a new stay, new facts")


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    state: RegistrationState
    deadline: date | None = None
    """Last day the registration (or change) is still on time."""
    overdue_from: date | None = None
    action: str = ""
    """What the landlord should do, one short sentence."""

    @property
    def open(self) -> bool:
        """Someone has to act: registration or change due or overdue."""
        return self.state in _OPEN

    @property
    def alert(self) -> bool:
        """Overdue: the landlord and the platform are alerted."""
        return self.state in _ALERT


def registration_status(facts: RegistrationFacts, building: str, today: date) -> RegistrationStatus:
    """The person's registration state at `building` on `today`."""
    if not building.strip():
        raise ValueError("building must be a non-empty name")
    if facts.moved_out_on is not None and facts.moved_out_on <= today:
        return RegistrationStatus(RegistrationState.MOVED_OUT, action="Nothing to do: moved out.")
    if facts.local:
        return RegistrationStatus(
            RegistrationState.LOCAL, action="Nothing to do: household registration is local."
        )
    if facts.registered_building == building:
        return RegistrationStatus(
            RegistrationState.REGISTERED, action="Nothing to do: registered at this address."
        )
    seen = facts.first_seen_on
    if seen is None or seen > today:
        return RegistrationStatus(
            RegistrationState.NOT_SEEN, action="Nothing to do until the person lives here."
        )
    if facts.registered_building is None:
        deadline = seen + timedelta(days=REGISTRATION_DAYS - 1)
        overdue_from = deadline + timedelta(days=1)
        if today < overdue_from:
            state = RegistrationState.DUE
            action = f"Register this tenant with the police by {deadline.isoformat()}."
        else:
            state = RegistrationState.OVERDUE
            action = f"Registration overdue since {overdue_from.isoformat()}: register now."
    else:
        deadline = seen + timedelta(days=CHANGE_DAYS - 1)
        overdue_from = deadline + timedelta(days=1)
        if today < overdue_from:
            state = RegistrationState.CHANGE_DUE
            action = f"Register the change of address to here by {deadline.isoformat()}."
        else:
            state = RegistrationState.CHANGE_OVERDUE
            action = f"Change of address overdue since {overdue_from.isoformat()}: register now."
    return RegistrationStatus(state, deadline, overdue_from, action)


def worklist(statuses: Mapping[K, RegistrationStatus]) -> list[tuple[K, RegistrationStatus]]:
    """The open statuses, overdue first, then by deadline; ties keep the mapping's order.

    What a landlord or co-ordinator works through (R7: hundreds of people per
    co-ordinator), without the caller re-deriving which states need action.
    """
    todo = [(key, status) for key, status in statuses.items() if status.open]
    return sorted(todo, key=lambda item: (not item[1].alert, item[1].deadline or date.max))


def _normalise(text: str) -> str:
    """Full-width forms folded, every space removed, a leading province dropped."""
    folded = "".join(unicodedata.normalize("NFKC", text).split())
    return folded.removeprefix(PROVINCE)


def is_local(household_address: str, local_districts: Iterable[str]) -> bool:
    """Whether a household address lies in one of the local districts.

    Matched on the start of the address, after dropping "浙江省": configure
    city and district as ID cards print them ("杭州市上城区"), including names
    older cards still carry after boundary changes (e.g. "杭州市江干区",
    "杭州市下城区"). A district name further into the address (a street called
    上城路 in another city) does not match.
    """
    if isinstance(local_districts, str):
        raise TypeError("local_districts must be a sequence of names, not one string")
    prefixes = [_normalise(name) for name in local_districts]
    if not all(prefixes):
        raise ValueError("a local district name is empty")
    address = _normalise(household_address)
    return any(address.startswith(prefix) for prefix in prefixes)
