"""A person as one caller may see them: what of a shared tenant is each landlord's.

`gateway.api.directory` says the rule (its module docstring); this renders it:
a landlord gets their own tenancies, the name they let under, the cards
enrolled for their units and the alerts raised during their letting; an admin
(and, for reading, a co-ordinator) the person whole. The residence standing
(R1 registration, R4 permit) is the person's at the building and shown to
each landlord, as the law makes it their business; for a landlord who lets the
person only part of their stay, presence counts from their letting, so no
date from before it shows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

from gateway.api import models
from gateway.api.auth import Principal, Role, may_see_unit
from gateway.domain.alerting import PersonFacts, standing
from gateway.store import residents, tenants
from gateway.store.crypto import KeyRing
from gateway.store.event_history import EventScope


@dataclass(frozen=True)
class Residence:
    """What the residence rules need besides a person's facts."""

    building: str
    local_districts: Callable[[], Sequence[str]]


def may_see(principal: Principal, units: frozenset[str] | set[str]) -> bool:
    """`auth.may_see_unit` for someone's units; those who see every unit also see a person
    with no tenancy at all."""
    everyone = principal.role in (Role.ADMIN, Role.COORDINATOR)
    return everyone or any(may_see_unit(principal, unit) for unit in units)


def controls(principal: Principal, card: tenants.CardView) -> bool:
    """Whether `principal` sees and changes the card: an admin any card, a landlord the cards
    enrolled for one of their units."""
    if principal.role is Role.LANDLORD:
        return card.unit is not None and card.unit in principal.units
    return principal.role is Role.ADMIN


def alert_seen(scope: EventScope | None, alert: residents.OpenAlert) -> bool:
    """An alert is seen as an event about its person at its door (if it names one) would be."""
    if scope is None:
        return True
    door = alert.detail.get("door")
    return scope.admits(alert.person_id, door if isinstance(door, str) else None, alert.raised_at)


def _from_letting(facts: PersonFacts, tenancies: Sequence[tenants.TenancyView]) -> PersonFacts:
    """The facts with presence counted from the caller's letting at the earliest: the day a
    shared tenant first came to the building (under another landlord) is not the caller's
    to learn from a deadline or an overdue date."""
    starts = [datetime.fromisoformat(t.seen_from or t.valid_from).date() for t in tenancies]
    if facts.first_seen_on is None or not starts:
        return facts
    return replace(facts, first_seen_on=max(facts.first_seen_on, min(starts)))


def person_out(
    conn: sqlite3.Connection,
    keys: KeyRing,
    person_id: str,
    principal: Principal,
    *,
    residence: Residence,
    today: date,
    scope: EventScope | None,
) -> models.PersonOut | None:
    """The person as `principal` may see them (None: no such person); `scope` cuts the
    alerts counted (None: all)."""
    view = tenants.person(conn, keys, person_id)
    if view is None:
        return None
    tenancies = [t for t in view.tenancies if may_see(principal, {t.unit})]
    landlord = principal.role is Role.LANDLORD
    name = view.name
    if landlord:
        whole = len(tenancies) == len(view.tenancies)
        name = next((t.name for t in tenancies if t.name is not None), view.name if whole else None)
    cards = [c for c in view.cards if not landlord or controls(principal, c)]
    alerts = [a for a in residents.open_alerts(conn, person_id) if alert_seen(scope, a)]
    found = list(residents.facts(conn, keys, person_id))
    facts = found[0].rule_facts() if found else residents.NO_FACTS
    if landlord and len(tenancies) < len(view.tenancies):
        facts = _from_letting(facts, tenancies)
    now = standing(
        facts,
        building=residence.building,
        local_districts=residence.local_districts(),
        today=today,
    )
    permit = now.permit
    return models.PersonOut(
        id=view.id,
        id_masked=view.id_masked,
        name=name,
        tenancies=[
            models.TenancyOut(
                id=t.id,
                unit=t.unit,
                room=t.room,
                valid_from=t.valid_from,
                valid_to=t.valid_to,
                managed_by="gateway" if t.managed_by == "gateway" else "platform",
            )
            for t in tenancies
        ],
        cards=[
            models.CardOut(
                id=c.id,
                kind=c.kind.value,
                masked=c.masked,
                status=c.status.value,
                valid_from=c.valid_from,
                valid_to=c.valid_to,
                managed_by="gateway" if c.managed_by == "gateway" else "platform",
            )
            for c in cards
        ],
        registration=models.RegistrationOut(
            state=now.registration.state.value,
            deadline=now.registration.deadline,
            overdue_from=now.registration.overdue_from,
        ),
        permit=models.PermitOut(
            state=permit.state.value,
            due_anniversary=permit.due_anniversary,
            suspended_since=permit.suspended_since,
        )
        if permit is not None
        else None,
        open_alerts=len(alerts),
    )
