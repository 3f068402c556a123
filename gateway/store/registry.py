"""SQL for people, credentials and tenancies, and what the access index loads from them.

Personal data is sealed before it reaches SQL: names and ID numbers with the
key ring, credentials found by their keyed hash. Every change bumps
`meta.registry_version`, which the running gateway watches to reload its index
(another process, such as `rentgate enroll`, may have made the change).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from gateway.domain.credentials import CredentialKind, CredentialStatus
from gateway.domain.people import CredentialGrant, Enrolment
from gateway.store.crypto import KeyRing
from gateway.store.errors import StoreError, translated


class CredentialTakenError(StoreError):
    """The card (or ID number, voucher) is already another person's credential."""


@dataclass(frozen=True)
class EnrolResult:
    person_id: str
    credential_ids: tuple[str, ...]
    tenancy_id: str | None
    new_person: bool


@dataclass(frozen=True)
class CredentialRow:
    """One credential as the access index needs it (no personal data)."""

    credential_id: str
    person_id: str
    lookup: bytes
    kind: CredentialKind
    status: CredentialStatus
    valid_from: datetime | None
    valid_to: datetime | None


@dataclass(frozen=True)
class TenancyRow:
    person_id: str
    unit: str
    valid_from: datetime
    valid_to: datetime | None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


EVERYONE = "*"
"""Change-log person id meaning "the whole registry changed" (an allowlist snapshot)."""

CHANGES_KEPT = 100_000
"""Change-log entries kept; a reader further behind than this rebuilds from scratch."""


def record_change(conn: sqlite3.Connection, person_id: str) -> None:
    """Bump the registry version and log whose data changed at it."""
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'registry_version'")
    conn.execute(
        "INSERT INTO registry_changes (version, person_id)"
        " SELECT value, ? FROM meta WHERE key = 'registry_version'",
        (person_id,),
    )
    conn.execute(
        "DELETE FROM registry_changes WHERE version <="
        " (SELECT value FROM meta WHERE key = 'registry_version') - ?",
        (CHANGES_KEPT,),
    )
    conn.execute(
        "DELETE FROM registry_removed WHERE version <="
        " (SELECT value FROM meta WHERE key = 'registry_version') - ?",
        (CHANGES_KEPT,),
    )


def record_removed(conn: sqlite3.Connection, lookups: Iterable[bytes]) -> None:
    """Note credentials deleted at the current version (call after `record_change`)."""
    conn.executemany(
        "INSERT INTO registry_removed (version, lookup)"
        " SELECT value, ? FROM meta WHERE key = 'registry_version'",
        ((lookup,) for lookup in lookups),
    )


def registry_version(conn: sqlite3.Connection) -> int:
    with translated():
        row = conn.execute("SELECT value FROM meta WHERE key = 'registry_version'").fetchone()
    return int(row[0])


def enrol(
    conn: sqlite3.Connection,
    keys: KeyRing,
    enrolment: Enrolment,
    now: datetime,
    *,
    rename: bool = True,
) -> EnrolResult:
    """Create or update the person, add credentials and the tenancy. Call in a transaction.

    `rename=False` keeps an existing person's name (someone enrolling a newcomer who is
    already another landlord's tenant must not change what that landlord sees). The name is
    also kept with the tenancy, as the name this letting was made under, and the cards are
    enrolled for the tenancy's unit: each landlord sees their own and controls their own."""
    id_number = enrolment.id_number.value
    id_hash = keys.lookup(CredentialKind.ID_NUMBER.value, id_number)
    stamp = now.isoformat()
    row = conn.execute("SELECT id FROM people WHERE id_hash = ?", (id_hash,)).fetchone()
    new_person = row is None
    if new_person:
        person_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO people (id, id_hash, id_masked, id_number_sealed, name_sealed,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                person_id,
                id_hash,
                enrolment.id_number.masked,
                keys.seal(id_number, f"people.id_number:{person_id}"),
                keys.seal(enrolment.name, f"people.name:{person_id}"),
                stamp,
                stamp,
            ),
        )
    elif rename:
        person_id = row[0]
        conn.execute(
            "UPDATE people SET name_sealed = ?, updated_at = ? WHERE id = ?",
            (keys.seal(enrolment.name, f"people.name:{person_id}"), stamp, person_id),
        )
    else:
        person_id = row[0]
    unit = enrolment.tenancy.unit if enrolment.tenancy is not None else None
    credential_ids = tuple(
        _add_credential(conn, keys, person_id, grant, (stamp, unit))
        for grant in enrolment.credentials
    )
    tenancy_id = None
    if enrolment.tenancy is not None:
        tenancy = enrolment.tenancy
        tenancy_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO tenancies (id, person_id, unit, room, valid_from, valid_to, created_at,"
            " name_sealed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tenancy_id,
                person_id,
                tenancy.unit,
                tenancy.room,
                _iso(tenancy.valid_from),
                _iso(tenancy.valid_to),
                stamp,
                keys.seal(enrolment.name, f"tenancies.name:{tenancy_id}"),
            ),
        )
    record_change(conn, person_id)
    return EnrolResult(person_id, credential_ids, tenancy_id, new_person)


def add_credentials(
    conn: sqlite3.Connection,
    keys: KeyRing,
    person_id: str,
    grants: Iterable[CredentialGrant],
    now: datetime,
    *,
    unit: str | None = None,
) -> list[str]:
    """Add (or re-activate) credentials of an enrolled person, for the tenancy of `unit`.
    Call in a transaction."""
    stamp = now.isoformat()
    return [_add_credential(conn, keys, person_id, grant, (stamp, unit)) for grant in grants]


def _add_credential(
    conn: sqlite3.Connection,
    keys: KeyRing,
    person_id: str,
    grant: CredentialGrant,
    at: tuple[str, str | None],
) -> str:
    """A new credential, or the same person's card for the same unit made active again.

    The person's card for another unit is refused exactly as another person's card is:
    enrolling it again must not unblock what that unit's landlord reported lost, nor tell
    the caller whose card it is. `at`: the time stamp, and the unit the card is for."""
    stamp, unit = at
    kind, value, masked = grant.credential.kind, grant.credential.value, grant.credential.masked
    valid_from, valid_to = _iso(grant.valid_from), _iso(grant.valid_to)
    lookup = keys.lookup(kind.value, value)
    owner = conn.execute(
        "SELECT person_id, unit FROM credentials WHERE kind = ? AND lookup = ? AND generation = 0",
        (kind.value, lookup),
    ).fetchone()
    if owner is not None and (owner[0] != person_id or owner[1] != unit):
        raise CredentialTakenError(f"credential {kind.value}:{masked} is already enrolled")
    if owner is not None:
        conn.execute(
            "UPDATE credentials SET status = 'active', valid_from = ?, valid_to = ?, updated_at = ?"
            " WHERE kind = ? AND lookup = ? AND generation = 0",
            (valid_from, valid_to, stamp, kind.value, lookup),
        )
        row = conn.execute(
            "SELECT id FROM credentials WHERE kind = ? AND lookup = ? AND generation = 0",
            (kind.value, lookup),
        ).fetchone()
        return str(row[0])
    credential_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO credentials (id, person_id, kind, lookup, masked, value_sealed, status,"
        " valid_from, valid_to, created_at, updated_at, unit)"
        " VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?)",
        (
            credential_id,
            person_id,
            kind.value,
            lookup,
            masked,
            keys.seal(value, f"credentials.value:{credential_id}"),
            valid_from,
            valid_to,
            stamp,
            stamp,
            unit,
        ),
    )
    return credential_id


def set_credential_status(
    conn: sqlite3.Connection, credential_id: str, status: CredentialStatus, now: datetime
) -> None:
    """Report lost, revoke, return, cancel or unblock (back to active). Call in a transaction."""
    row = conn.execute(
        "UPDATE credentials SET status = ?, updated_at = ? WHERE id = ? RETURNING person_id",
        (status.value, now.isoformat(), credential_id),
    ).fetchone()
    if row is None:
        raise StoreError(f"no credential {credential_id}")
    record_change(conn, row[0])


@dataclass(frozen=True)
class RegistrySnapshot:
    """Everything the access index is built from, read in one consistent transaction."""

    version: int
    credentials: list[CredentialRow]
    tenancies: list[TenancyRow]
    removed: list[bytes] = field(default_factory=list)
    """Lookups deleted since the version asked for (apply before `credentials`)."""


def snapshot(conn: sqlite3.Connection) -> RegistrySnapshot:
    with translated():
        conn.execute("BEGIN")
        try:
            return RegistrySnapshot(
                registry_version(conn), list(iter_credentials(conn)), list(iter_tenancies(conn))
            )
        finally:
            conn.execute("COMMIT")


def changes_since(conn: sqlite3.Connection, version: int) -> RegistrySnapshot | None:
    """The current rows of every person changed after `version`, read consistently.

    None when the change log no longer reaches back that far: rebuild from `snapshot`.
    Rows are never deleted from the registry, so changed rows are all there is to apply.
    """
    with translated():
        conn.execute("BEGIN")
        try:
            current = registry_version(conn)
            if current == version:
                return RegistrySnapshot(current, [], [])
            oldest = conn.execute("SELECT min(version) FROM registry_changes").fetchone()[0]
            if oldest is None or oldest > version + 1 or version > current:
                return None
            everyone = conn.execute(
                "SELECT 1 FROM registry_changes WHERE version > ? AND person_id = ?",
                (version, EVERYONE),
            ).fetchone()
            if everyone is not None:
                return None
            removed = [
                bytes(row[0])
                for row in conn.execute(
                    "SELECT lookup FROM registry_removed WHERE version > ?", (version,)
                )
            ]
            return RegistrySnapshot(
                current,
                list(iter_credentials(conn, changed_since=version)),
                list(iter_tenancies(conn, changed_since=version)),
                removed,
            )
        finally:
            conn.execute("COMMIT")


IN_FORCE = " WHERE generation IN (0, (SELECT value FROM meta WHERE key = 'allowlist_generation'))"
_CHANGED_SINCE = " AND person_id IN (SELECT person_id FROM registry_changes WHERE version > ?)"
_PLATFORM_LAST = " ORDER BY generation"
"""A card enrolled both locally and by the platform: the platform's row is read last and wins."""


def iter_credentials(
    conn: sqlite3.Connection, *, changed_since: int | None = None
) -> Iterator[CredentialRow]:
    """Every credential, or those of people changed after registry version `changed_since`."""
    query = "SELECT id, person_id, lookup, kind, status, valid_from, valid_to FROM credentials"
    query += IN_FORCE
    if changed_since is not None:
        query += _CHANGED_SINCE
    query += _PLATFORM_LAST
    with translated():
        rows = conn.execute(query, () if changed_since is None else (changed_since,))
        for cid, pid, lookup, kind, status, valid_from, valid_to in rows:
            yield CredentialRow(
                cid,
                pid,
                bytes(lookup),
                CredentialKind(kind),
                CredentialStatus(status),
                _parse(valid_from),
                _parse(valid_to),
            )


def iter_tenancies(
    conn: sqlite3.Connection, *, changed_since: int | None = None
) -> Iterator[TenancyRow]:
    """Every tenancy, or those of people changed after registry version `changed_since`."""
    query = "SELECT person_id, unit, valid_from, valid_to FROM tenancies" + IN_FORCE  # noqa: S608
    if changed_since is not None:
        query += _CHANGED_SINCE
    with translated():
        for pid, unit, valid_from, valid_to in conn.execute(
            query, () if changed_since is None else (changed_since,)
        ):
            yield TenancyRow(pid, unit, datetime.fromisoformat(valid_from), _parse(valid_to))


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """How many people, credentials and tenancies are enrolled."""
    with translated():
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
            for table in ("people", "credentials", "tenancies")
        }
