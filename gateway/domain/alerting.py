"""Which alerts should be open for a person, from the residence rules: pure and table-tested.

The engine (`gateway.residence.alerts`) compares this wanted set with the alerts open in
the store and raises or clears the difference, so an alert is raised once and
cleared once however often it is evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from gateway.domain.registration import (
    RegistrationFacts,
    RegistrationState,
    RegistrationStatus,
    is_local,
    registration_status,
)
from gateway.domain.rules import PermitState, PermitStatus, permit_status


class AlertRule(StrEnum):
    REGISTRATION_DUE = "registration.due"
    REGISTRATION_OVERDUE = "registration.overdue"
    CHANGE_DUE = "registration.change_due"
    CHANGE_OVERDUE = "registration.change_overdue"
    PERMIT_ENDORSEMENT_DUE = "permit.endorsement_due"
    PERMIT_SUSPENDED = "permit.suspended"
    CANCELLED_CREDENTIAL_USED = "credential.cancelled_used"
    """Raised when presented, open until someone acknowledges it (not re-derived)."""


class Severity(StrEnum):
    NOTICE = "notice"
    """Something to do soon; nothing is late yet."""
    ALARM = "alarm"
    """A deadline has passed, or something that should not happen did."""


@dataclass(frozen=True)
class WantedAlert:
    rule: AlertRule
    severity: Severity
    deadline: date | None
    action: str


@dataclass(frozen=True)
class PersonFacts:
    """What the rules need of one person; no name, no ID number."""

    first_seen_on: date | None
    registration_state: str | None
    """As the platform reports it: registered / not_registered / moved_out, or None."""
    registered_building: str | None
    moved_out_on: date | None
    household_address: str | None
    permit_issued_on: date | None
    permit_endorsed_on: tuple[date, ...]


_REGISTRATION_ALERTS = {
    RegistrationState.DUE: (AlertRule.REGISTRATION_DUE, Severity.NOTICE),
    RegistrationState.OVERDUE: (AlertRule.REGISTRATION_OVERDUE, Severity.ALARM),
    RegistrationState.CHANGE_DUE: (AlertRule.CHANGE_DUE, Severity.NOTICE),
    RegistrationState.CHANGE_OVERDUE: (AlertRule.CHANGE_OVERDUE, Severity.ALARM),
}

DERIVED_RULES = frozenset(rule for rule, _ in _REGISTRATION_ALERTS.values()) | {
    AlertRule.PERMIT_ENDORSEMENT_DUE,
    AlertRule.PERMIT_SUSPENDED,
}
"""Rules whose alerts are cleared when the facts no longer call for them."""


@dataclass(frozen=True)
class Standing:
    """Where a person stands under R1 (registration) and R4 (permit) on one day."""

    registration: RegistrationStatus
    permit: PermitStatus | None
    """None without a permit issued by then."""


def standing(
    facts: PersonFacts, *, building: str, local_districts: Sequence[str], today: date
) -> Standing:
    """The registration and permit status the tenants page shows and the alerts follow.

    A person whose household address is not known is treated as non-local: the
    law puts the duty to register on everyone from outside, and reading the ID
    card at a SAM reader (or the platform's status) settles it.
    """
    local = facts.household_address is not None and is_local(
        facts.household_address, local_districts
    )
    moved_out = facts.moved_out_on
    if facts.registration_state == "moved_out" and moved_out is None:
        moved_out = today
    if (
        moved_out is not None
        and facts.first_seen_on is not None
        and moved_out < facts.first_seen_on
    ):
        moved_out = None  # seen again after moving out: a new stay
    registered_at = facts.registered_building if facts.registration_state == "registered" else None
    status = registration_status(
        RegistrationFacts(
            local=local,
            first_seen_on=facts.first_seen_on,
            registered_building=registered_at,
            moved_out_on=moved_out,
        ),
        building,
        today,
    )
    permit = None
    if facts.permit_issued_on is not None and facts.permit_issued_on <= today:
        endorsed = [day for day in facts.permit_endorsed_on if day >= facts.permit_issued_on]
        permit = permit_status(facts.permit_issued_on, endorsed, today)
    return Standing(status, permit)


def wanted_alerts(
    facts: PersonFacts, *, building: str, local_districts: Sequence[str], today: date
) -> list[WantedAlert]:
    """The alerts that should be open for this person at `building` on `today`."""
    wanted: list[WantedAlert] = []
    now = standing(facts, building=building, local_districts=local_districts, today=today)
    status, permit = now.registration, now.permit
    if status.state in _REGISTRATION_ALERTS:
        rule, severity = _REGISTRATION_ALERTS[status.state]
        action = status.action
        if facts.household_address is None:
            action += " (Household address unknown: read the ID card to check whether local.)"
        wanted.append(WantedAlert(rule, severity, status.deadline, action))
    if permit is not None:
        if permit.state is PermitState.WINDOW:
            wanted.append(
                WantedAlert(
                    AlertRule.PERMIT_ENDORSEMENT_DUE,
                    Severity.NOTICE,
                    permit.due_anniversary,
                    f"Have the residence permit endorsed by {permit.due_anniversary.isoformat()}.",
                )
            )
        elif permit.state is PermitState.SUSPENDED:
            wanted.append(
                WantedAlert(
                    AlertRule.PERMIT_SUSPENDED,
                    Severity.ALARM,
                    permit.due_anniversary,
                    "Residence permit suspended since "
                    f"{permit.suspended_since.isoformat() if permit.suspended_since else '?'}: "
                    "endorse it late to restore it (residence years restart).",
                )
            )
    return wanted
