"""SQL for what the residence rules need: the platform's status per person, presence, alerts.

Presence (first and last day a person was seen at this building) is what R1's
3-day clock runs from; the platform's registration and permit status is what
stops it. Alerts are kept with their open/cleared life so each is raised once
and cleared once.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from gateway.domain.alerting import PersonFacts
from gateway.domain.command_bodies import PersonStatus
from gateway.errors import RentgateError
from gateway.store.crypto import KeyRing
from gateway.store.errors import translated


class StaleStatusError(RentgateError):
    """The platform sent a person status older than the one in force."""


@dataclass(frozen=True)
class ResidentFacts:
    """Everything the rules look at for one person (no name, no ID number)."""

    person_id: str
    id_masked: str
    first_seen_on: date | None
    last_seen_on: date | None
    registration_state: str | None
    registered_building: str | None
    registered_on: date | None
    moved_out_on: date | None
    permit_issued_on: date | None
    permit_endorsed_on: tuple[date, ...]
    household_address: str | None

    def rule_facts(self) -> PersonFacts:
        """What the residence rules look at (`gateway.domain.alerting`)."""
        return PersonFacts(
            first_seen_on=self.first_seen_on,
            registration_state=self.registration_state,
            registered_building=self.registered_building,
            moved_out_on=self.moved_out_on,
            household_address=self.household_address,
            permit_issued_on=self.permit_issued_on,
            permit_endorsed_on=self.permit_endorsed_on,
        )


NO_FACTS = PersonFacts(None, None, None, None, None, None, ())
"""A person with no status and never seen: what the rules make of someone just enrolled."""


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _ensure_row(conn: sqlite3.Connection, person_id: str, stamp: str) -> None:
    conn.execute(
        "INSERT INTO person_status (person_id, updated_at) VALUES (?, ?)"
        " ON CONFLICT (person_id) DO NOTHING",
        (person_id, stamp),
    )


def set_platform_status(
    conn: sqlite3.Connection, keys: KeyRing, person_id: str, status: PersonStatus, now: datetime
) -> None:
    """Store the platform's view of a person; refuse an older revision. Call in a transaction."""
    stamp = now.isoformat()
    _ensure_row(conn, person_id, stamp)
    (as_of,) = conn.execute(
        "SELECT as_of FROM person_status WHERE person_id = ?", (person_id,)
    ).fetchone()
    if status.as_of <= as_of:
        raise StaleStatusError(f"status revision {status.as_of} is not newer than {as_of}")
    updates: dict[str, Any] = {"as_of": status.as_of, "updated_at": stamp}
    if status.registration is not None:
        registration = status.registration
        updates |= {
            "registration_state": registration.state,
            "registered_building": registration.building,
            "registered_unit": registration.unit,
            "registered_on": _iso_day(registration.registered_on),
            "moved_out_on": _iso_day(registration.moved_out_on),
        }
    if status.permit is not None:
        updates |= {
            "permit_issued_on": status.permit.issued_on.isoformat(),
            "permit_endorsed_on": json.dumps([d.isoformat() for d in status.permit.endorsed_on]),
        }
    if status.household_address is not None:
        updates["household_address_sealed"] = keys.seal(
            status.household_address, f"person_status.household_address:{person_id}"
        )
    assignments = ", ".join(f"{column} = ?" for column in updates)
    conn.execute(
        f"UPDATE person_status SET {assignments} WHERE person_id = ?",  # noqa: S608 - fixed names
        (*updates.values(), person_id),
    )


def set_household_address(
    conn: sqlite3.Connection, keys: KeyRing, person_id: str, address: str, now: datetime
) -> None:
    """The household address as read from the person's ID card by a SAM reader."""
    stamp = now.isoformat()
    _ensure_row(conn, person_id, stamp)
    conn.execute(
        "UPDATE person_status SET household_address_sealed = ?, updated_at = ? WHERE person_id = ?",
        (keys.seal(address, f"person_status.household_address:{person_id}"), stamp, person_id),
    )


def note_presence(conn: sqlite3.Connection, person_id: str, day: date, now: datetime) -> bool:
    """Record that a person was here on `day`; True if this is their first day seen."""
    stamp = now.isoformat()
    _ensure_row(conn, person_id, stamp)
    # Seen again after moving out is a new stay: its first day starts the clock afresh.
    row = conn.execute(
        "UPDATE person_status SET first_seen_on = CASE WHEN first_seen_on IS NULL"
        " OR (moved_out_on IS NOT NULL AND moved_out_on < :day) THEN :day ELSE first_seen_on END,"
        " last_seen_on = :day WHERE person_id = :person RETURNING first_seen_on",
        {"day": day.isoformat(), "person": person_id},
    ).fetchone()
    return bool(row[0] == day.isoformat())


_FACTS = (
    "SELECT s.person_id, p.id_masked, s.first_seen_on, s.last_seen_on, s.registration_state,"
    " s.registered_building, s.registered_on, s.moved_out_on, s.permit_issued_on,"
    " s.permit_endorsed_on, s.household_address_sealed"
    " FROM person_status s JOIN people p ON p.id = s.person_id"
)


def facts(
    conn: sqlite3.Connection, keys: KeyRing, person_id: str | None = None
) -> Iterator[ResidentFacts]:
    """The facts of one person, or of everyone with any status or presence."""
    query = _FACTS + (" WHERE s.person_id = ?" if person_id is not None else "")
    with translated():
        rows = conn.execute(query, (person_id,) if person_id is not None else ()).fetchall()
    for row in rows:
        (pid, masked, first, last, state, building, registered, moved, issued, endorsed, sealed) = (
            row
        )
        address = None
        if sealed is not None:
            address = keys.open(bytes(sealed), f"person_status.household_address:{pid}")
        yield ResidentFacts(
            pid,
            masked,
            _day(first),
            _day(last),
            state,
            building,
            _day(registered),
            _day(moved),
            _day(issued),
            tuple(date.fromisoformat(d) for d in json.loads(endorsed)) if endorsed else (),
            address,
        )


@dataclass(frozen=True)
class OpenAlert:
    id: str
    rule: str
    person_id: str
    raised_at: str
    deadline: str | None
    detail: dict[str, Any]


def open_alerts(conn: sqlite3.Connection, person_id: str | None = None) -> list[OpenAlert]:
    query = "SELECT id, rule, person_id, raised_at, deadline, detail FROM alerts"
    query += " WHERE cleared_at IS NULL" + (" AND person_id = ?" if person_id else "")
    with translated():
        rows = conn.execute(query + " ORDER BY raised_at", (person_id,) if person_id else ())
        return [
            OpenAlert(aid, rule, pid, raised, deadline, json.loads(detail))
            for aid, rule, pid, raised, deadline, detail in rows
        ]


def raise_alert(
    conn: sqlite3.Connection,
    *,
    rule: str,
    person_id: str,
    deadline: date | None,
    detail: dict[str, Any],
    now: datetime,
) -> str | None:
    """Open an alert unless the same rule is already open for the person; its id, or None."""
    alert_id = str(uuid.uuid4())
    row = conn.execute(
        "INSERT INTO alerts (id, rule, person_id, raised_at, deadline, detail)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
        (
            alert_id,
            rule,
            person_id,
            now.isoformat(),
            _iso_day(deadline),
            json.dumps(detail, ensure_ascii=False),
        ),
    ).fetchone()
    return None if row is None else str(row[0])


def clear_alert(conn: sqlite3.Connection, alert_id: str, now: datetime) -> bool:
    return (
        conn.execute(
            "UPDATE alerts SET cleared_at = ? WHERE id = ? AND cleared_at IS NULL",
            (now.isoformat(), alert_id),
        ).rowcount
        == 1
    )


def _iso_day(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None
