"""SQL behind the web UI's tenants: who lives in which units, their cards, and changes to them.

Everything here is scoped by units: `units=None` means the whole gateway (an
admin, a co-ordinator), a set means a landlord's units. A person is in scope
when one of their tenancies in force is in one of those units. Rows the
platform's allowlist brought (generation > 0) are shown but marked
`managed_by="platform"`: the next snapshot would overwrite a local change, so
the API refuses to change them. Names are unsealed here, ID numbers only in
`reveal_id_number` (the caller audits first).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.domain.credentials import CredentialKind, CredentialStatus
from gateway.domain.people import CredentialGrant
from gateway.store import registry
from gateway.store.crypto import KeyRing
from gateway.store.errors import translated

_CURRENT = "(SELECT value FROM meta WHERE key = 'allowlist_generation')"
_GENERATIONS = f"generation IN (0, {_CURRENT})"


@dataclass(frozen=True)
class TenancyView:
    id: str
    person_id: str
    unit: str
    room: str | None
    valid_from: str
    valid_to: str | None
    managed_by: str
    name: str | None = None
    """The name this tenancy was let under (None: enrolled before names were kept here)."""
    seen_from: str | None = None
    """When its landlord's view of the person starts: the later of its start and when it
    was recorded, so a tenancy dated back does not open older history."""


@dataclass(frozen=True)
class CardView:
    id: str
    person_id: str
    kind: CredentialKind
    masked: str
    status: CredentialStatus
    valid_from: str | None
    valid_to: str | None
    managed_by: str
    unit: str | None = None
    """The unit whose tenancy the card was enrolled for (None: the platform's, or an admin's)."""


@dataclass(frozen=True)
class PersonView:
    id: str
    id_masked: str
    name: str | None
    tenancies: tuple[TenancyView, ...]
    cards: tuple[CardView, ...]


def _managed(generation: int) -> str:
    return "gateway" if generation == 0 else "platform"


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def people_in_scope(
    conn: sqlite3.Connection,
    units: frozenset[str] | None,
    *,
    unit: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[str], int]:
    """A page of person ids (newest enrolment first) and how many there are in all."""
    wanted = sorted(units) if units is not None else None
    if unit is not None:
        wanted = [unit] if wanted is None or unit in wanted else []
    with translated():
        if wanted is None:
            total = conn.execute("SELECT count(*) FROM people").fetchone()[0]
            rows = conn.execute(
                "SELECT id FROM people ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
            return [row[0] for row in rows], int(total)
        if not wanted:
            return [], 0
        inner = (
            f"SELECT DISTINCT person_id FROM tenancies WHERE {_GENERATIONS}"  # noqa: S608
            f" AND unit IN ({_marks(wanted)})"
        )
        total = conn.execute(f"SELECT count(*) FROM ({inner})", wanted).fetchone()[0]  # noqa: S608
        rows = conn.execute(
            f"SELECT id FROM people WHERE id IN ({inner})"  # noqa: S608
            " ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (*wanted, limit, offset),
        ).fetchall()
    return [row[0] for row in rows], int(total)


def people_of_units(conn: sqlite3.Connection, units: Iterable[str]) -> frozenset[str]:
    """Everyone with a tenancy in force in one of `units` (what a landlord's events show)."""
    wanted = sorted(units)
    if not wanted:
        return frozenset()
    with translated():
        rows = conn.execute(
            f"SELECT DISTINCT person_id FROM tenancies WHERE {_GENERATIONS}"  # noqa: S608
            f" AND unit IN ({_marks(wanted)})",
            wanted,
        ).fetchall()
    return frozenset(row[0] for row in rows)


Window = tuple[datetime, datetime | None]
"""From (inclusive) to (exclusive; None: open) the dates a landlord sees a person in."""


def tenancy_windows(
    conn: sqlite3.Connection, units: Iterable[str]
) -> dict[str, tuple[Window, ...]]:
    """Per person with a tenancy in one of `units`, the windows of those tenancies: from the
    later of its start and when it was recorded, to its end."""
    wanted = sorted(units)
    if not wanted:
        return {}
    windows: dict[str, list[Window]] = {}
    with translated():
        rows = conn.execute(
            "SELECT person_id, valid_from, created_at, valid_to FROM tenancies"  # noqa: S608
            f" WHERE {_GENERATIONS} AND unit IN ({_marks(wanted)})",
            wanted,
        ).fetchall()
    for pid, start, created, end in rows:
        begin = datetime.fromisoformat(_later(start, created))
        windows.setdefault(pid, []).append(
            (begin, datetime.fromisoformat(end) if end is not None else None)
        )
    return {pid: tuple(found) for pid, found in windows.items()}


def _later(start: str, created: str) -> str:
    return max(start, created, key=datetime.fromisoformat)


def person_with_id_number(conn: sqlite3.Connection, keys: KeyRing, id_number: str) -> str | None:
    """The person enrolled with this ID number (found by its keyed hash), if any."""
    lookup = keys.lookup(CredentialKind.ID_NUMBER.value, id_number)
    with translated():
        row = conn.execute("SELECT id FROM people WHERE id_hash = ?", (lookup,)).fetchone()
    return str(row[0]) if row else None


def units_of_person(conn: sqlite3.Connection, person_id: str) -> frozenset[str]:
    with translated():
        rows = conn.execute(
            f"SELECT DISTINCT unit FROM tenancies WHERE person_id = ? AND {_GENERATIONS}",  # noqa: S608
            (person_id,),
        ).fetchall()
    return frozenset(row[0] for row in rows)


def person(conn: sqlite3.Connection, keys: KeyRing, person_id: str) -> PersonView | None:
    """One person with their tenancies and cards in force, the name unsealed."""
    with translated():
        row = conn.execute(
            "SELECT id_masked, name_sealed FROM people WHERE id = ?", (person_id,)
        ).fetchone()
        if row is None:
            return None
        masked, sealed = row
        name = keys.open(bytes(sealed), f"people.name:{person_id}") if sealed else None
        if name is None:
            name = _platform_name(conn, keys, person_id)
        tenancies = tuple(
            TenancyView(
                tid,
                person_id,
                unit,
                room,
                start,
                end,
                _managed(generation),
                keys.open(bytes(let_as), f"tenancies.name:{tid}") if let_as else None,
                _later(start, created),
            )
            for tid, unit, room, start, end, generation, let_as, created in conn.execute(
                "SELECT id, unit, room, valid_from, valid_to, generation, name_sealed,"  # noqa: S608
                f" created_at FROM tenancies WHERE person_id = ? AND {_GENERATIONS}"
                " ORDER BY valid_from DESC",
                (person_id,),
            )
        )
        cards = tuple(
            CardView(
                cid,
                person_id,
                CredentialKind(kind),
                masked_value,
                CredentialStatus(status),
                start,
                end,
                _managed(generation),
                card_unit,
            )
            for cid, kind, masked_value, status, start, end, generation, card_unit in conn.execute(
                "SELECT id, kind, masked, status, valid_from, valid_to, generation, unit"  # noqa: S608
                f" FROM credentials WHERE person_id = ? AND {_GENERATIONS}"
                " ORDER BY created_at",
                (person_id,),
            )
        )
    return PersonView(person_id, masked, name, tenancies, cards)


def _platform_name(conn: sqlite3.Connection, keys: KeyRing, person_id: str) -> str | None:
    row = conn.execute(
        f"SELECT generation, platform_id, name_sealed FROM allowlist_people"  # noqa: S608
        f" WHERE person_id = ? AND generation = {_CURRENT}",
        (person_id,),
    ).fetchone()
    if row is None:
        return None
    generation, platform_id, sealed = row
    return keys.open(bytes(sealed), f"allowlist_people.name:{generation}:{platform_id}")


def card(conn: sqlite3.Connection, credential_id: str) -> CardView | None:
    with translated():
        row = conn.execute(
            "SELECT person_id, kind, masked, status, valid_from, valid_to, generation, unit"  # noqa: S608
            f" FROM credentials WHERE id = ? AND {_GENERATIONS}",
            (credential_id,),
        ).fetchone()
    if row is None:
        return None
    pid, kind, masked, status, start, end, generation, card_unit = row
    return CardView(
        credential_id,
        pid,
        CredentialKind(kind),
        masked,
        CredentialStatus(status),
        start,
        end,
        _managed(generation),
        card_unit,
    )


def tenancy(conn: sqlite3.Connection, tenancy_id: str) -> TenancyView | None:
    with translated():
        row = conn.execute(
            "SELECT person_id, unit, room, valid_from, valid_to, generation FROM tenancies"  # noqa: S608
            f" WHERE id = ? AND {_GENERATIONS}",
            (tenancy_id,),
        ).fetchone()
    if row is None:
        return None
    pid, unit, room, start, end, generation = row
    return TenancyView(tenancy_id, pid, unit, room, start, end, _managed(generation))


def set_card_validity(
    conn: sqlite3.Connection, credential_id: str, valid_to: datetime | None, now: datetime
) -> None:
    """A card's new end of validity (extend). Call in a transaction."""
    row = conn.execute(
        "UPDATE credentials SET valid_to = ?, updated_at = ? WHERE id = ? AND generation = 0"
        " RETURNING person_id",
        (valid_to.isoformat() if valid_to else None, now.isoformat(), credential_id),
    ).fetchone()
    if row is not None:
        registry.record_change(conn, row[0])


def set_tenancy_end(
    conn: sqlite3.Connection, tenancy_id: str, valid_to: datetime | None, now: datetime
) -> None:
    """A tenancy's new end (extend, or move out now). Call in a transaction."""
    del now  # tenancies keep only their creation time
    row = conn.execute(
        "UPDATE tenancies SET valid_to = ? WHERE id = ? AND generation = 0 RETURNING person_id",
        (valid_to.isoformat() if valid_to else None, tenancy_id),
    ).fetchone()
    if row is not None:
        registry.record_change(conn, row[0])


def add_cards(
    conn: sqlite3.Connection,
    keys: KeyRing,
    person_id: str,
    grants: Sequence[CredentialGrant],
    now: datetime,
    *,
    unit: str | None,
) -> list[str]:
    """More cards for someone already enrolled, for their tenancy of `unit`. Call in a
    transaction."""
    ids = registry.add_credentials(conn, keys, person_id, grants, now, unit=unit)
    registry.record_change(conn, person_id)
    return ids


def reveal_id_number(conn: sqlite3.Connection, keys: KeyRing, person_id: str) -> str | None:
    """The full ID number: only after the caller audited the reveal."""
    with translated():
        row = conn.execute(
            "SELECT id_number_sealed FROM people WHERE id = ?", (person_id,)
        ).fetchone()
    if row is None:
        return None
    return keys.open(bytes(row[0]), f"people.id_number:{person_id}")
