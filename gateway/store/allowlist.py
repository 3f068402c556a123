"""SQL for the platform's allowlist: snapshots staged and switched atomically, deltas applied.

A snapshot is written under a new *generation* in small chunks, so the single
writer keeps committing door events in between, and becomes the allowlist in
force in one tiny transaction (`switch`). A crash before the switch leaves the
previous generation in force; what was staged is discarded at the next start.
Landlords' local enrolments are generation 0 and are never touched here.
"""

from __future__ import annotations

import secrets
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.domain.command_bodies import AllowlistDelta, AllowlistSnapshot, PersonEntry
from gateway.domain.credentials import CredentialKind, CredentialStatus
from gateway.domain.ids import mask
from gateway.store.crypto import KeyRing
from gateway.store.errors import StoreError, translated
from gateway.store.registry import EVERYONE, record_change, record_removed

PURGE_CHUNK = 5_000
_LOOKUP_BATCH = 500
_NOT_KEPT = b""
"""A credential value the platform sent is not stored: decisions need only its keyed hash,
and the platform holds the value (collect the minimum)."""


class AllowlistVersionError(StoreError):
    """A delta's base is not the version in force, or a snapshot is not newer."""

    def __init__(self, message: str, *, stale: bool) -> None:
        super().__init__(message)
        self.stale = stale


@dataclass(frozen=True)
class AllowlistState:
    version: int
    """The platform's allowlist version in force (0: none received yet)."""
    generation: int
    """Storage generation of the snapshot in force."""


def _meta(conn: sqlite3.Connection, key: str) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


def state(conn: sqlite3.Connection) -> AllowlistState:
    with translated():
        return AllowlistState(_meta(conn, "allowlist_version"), _meta(conn, "allowlist_generation"))


class AllowlistConflictError(StoreError):
    """The pages of a snapshot contradict each other (a person or card on two pages)."""


@dataclass(frozen=True)
class PageResult:
    staged: int
    """Pages of this version staged so far (including this one)."""
    pages: int
    duplicate: bool
    """The page had been staged before (a re-send): nothing was written."""

    @property
    def complete(self) -> bool:
        return self.staged == self.pages


def stage_page(
    conn: sqlite3.Connection, keys: KeyRing, body: AllowlistSnapshot, now: datetime
) -> PageResult:
    """Stage one page of a snapshot. Call in a transaction.

    Staging survives a restart, so a platform re-sending the pages it has no
    reply for resumes where the gateway stopped; a newer version discards it.
    """
    current = state(conn)
    if body.version <= current.version:
        raise AllowlistVersionError(
            f"snapshot version {body.version} is not newer than {current.version} in force",
            stale=True,
        )
    staging = conn.execute(
        "SELECT version, generation, pages FROM staged_pages ORDER BY version DESC LIMIT 1"
    ).fetchone()
    if staging is not None and staging[0] > body.version:
        raise AllowlistVersionError(
            f"snapshot version {body.version} is older than version {staging[0]} being staged",
            stale=True,
        )
    if staging is None or staging[0] < body.version:
        discard_staged(conn)
        generation = _next_generation(conn)
    else:
        generation = staging[1]
        if staging[2] != body.pages:
            raise AllowlistConflictError(
                f"page says {body.pages} pages, earlier pages of version {body.version}"
                f" said {staging[2]}"
            )
    seen = conn.execute(
        "SELECT 1 FROM staged_pages WHERE version = ? AND page = ?", (body.version, body.page)
    ).fetchone()
    if seen is None:
        stage(conn, keys, generation, body.people, now)
        conn.execute(
            "INSERT INTO staged_pages (version, page, pages, generation) VALUES (?, ?, ?, ?)",
            (body.version, body.page, body.pages, generation),
        )
    (count,) = conn.execute(
        "SELECT count(*) FROM staged_pages WHERE version = ?", (body.version,)
    ).fetchone()
    return PageResult(int(count), body.pages, duplicate=seen is not None)


def _next_generation(conn: sqlite3.Connection) -> int:
    top = conn.execute("SELECT max(generation) FROM credentials").fetchone()[0] or 0
    top_people = conn.execute("SELECT max(generation) FROM allowlist_people").fetchone()[0] or 0
    return max(_meta(conn, "allowlist_generation"), top, top_people) + 1


_STAGED = (
    "staged_pages",
    "staged_people",
    "staged_allowlist_people",
    "staged_credentials",
    "staged_tenancies",
)


def discard_staged(conn: sqlite3.Connection) -> int:
    """Delete rows staged for a snapshot that never switched (a crash, a rejected snapshot)."""
    return sum(
        conn.execute(f"DELETE FROM {table}").rowcount  # noqa: S608 - fixed table names
        for table in _STAGED
    )


def stage(
    conn: sqlite3.Connection,
    keys: KeyRing,
    generation: int,
    people: Sequence[PersonEntry],
    now: datetime,
    *,
    live: bool = False,
) -> list[str]:
    """Write one chunk of a snapshot under `generation` into the staging tables (or, for a
    delta, `live` into the allowlist in force); return each entry's person id. Call in a
    transaction."""
    prefix = "" if live else "staged_"
    stamp = now.isoformat()
    allowlisted, credentials, tenancies = [], [], []
    numbers = [entry.id_number for entry in people]
    person_ids = _people_for(conn, keys, numbers, stamp, table=f"{prefix}people")
    for entry, person_id in zip(people, person_ids, strict=True):
        allowlisted.append(
            (
                generation,
                entry.person,
                person_id,
                keys.seal(entry.name, f"allowlist_people.name:{generation}:{entry.person}"),
            )
        )
        for credential in entry.credentials:
            credentials.append(
                (
                    secrets.token_hex(16),
                    person_id,
                    credential.kind.value,
                    keys.lookup(credential.kind.value, credential.value),
                    _masked(credential.kind, credential.value),
                    _NOT_KEPT,
                    credential.status.value,
                    _iso(credential.valid_from),
                    _iso(credential.valid_to),
                    stamp,
                    stamp,
                    generation,
                )
            )
        for tenancy in entry.tenancies:
            tenancies.append(
                (
                    secrets.token_hex(16),
                    person_id,
                    tenancy.unit,
                    tenancy.room,
                    tenancy.valid_from.isoformat(),
                    _iso(tenancy.valid_to),
                    stamp,
                    generation,
                )
            )
    with translated():
        conn.executemany(
            f"INSERT INTO {prefix}allowlist_people (generation, platform_id, person_id,"  # noqa: S608
            " name_sealed) VALUES (?, ?, ?, ?)",
            allowlisted,
        )
        conn.executemany(
            f"INSERT INTO {prefix}credentials (id, person_id, kind, lookup, masked,"  # noqa: S608
            " value_sealed, status, valid_from, valid_to, created_at, updated_at, generation)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            credentials,
        )
        conn.executemany(
            f"INSERT INTO {prefix}tenancies (id, person_id, unit, room, valid_from,"  # noqa: S608
            " valid_to, created_at, generation) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            tenancies,
        )
    return person_ids


def switch(conn: sqlite3.Connection, version: int) -> None:
    """Make a completely staged snapshot the allowlist in force. Call in a transaction."""
    current = state(conn)
    if version <= current.version:
        raise AllowlistVersionError(
            f"snapshot version {version} is not newer than {current.version} in force", stale=True
        )
    row = conn.execute(
        "SELECT generation, pages, count(*) FROM staged_pages WHERE version = ?", (version,)
    ).fetchone()
    if row is None or row[2] == 0 or row[2] != row[1]:
        raise AllowlistConflictError(f"snapshot version {version} is not completely staged")
    generation = int(row[0])
    try:
        _move_staged(conn, generation)
    except sqlite3.IntegrityError as exc:
        raise AllowlistConflictError(
            f"snapshot version {version}: a person, ID number or credential is on two pages"
        ) from exc
    conn.execute("UPDATE meta SET value = ? WHERE key = 'allowlist_generation'", (generation,))
    conn.execute("UPDATE meta SET value = ? WHERE key = 'allowlist_version'", (version,))
    record_change(conn, EVERYONE)


def _move_staged(conn: sqlite3.Connection, generation: int) -> None:
    # One sorted pass per table: each index page is written once, not once per chunk.
    conn.execute("INSERT INTO people SELECT * FROM staged_people ORDER BY id_hash")
    conn.execute(
        "INSERT INTO allowlist_people SELECT * FROM staged_allowlist_people"
        " WHERE generation = ? ORDER BY generation, platform_id",
        (generation,),
    )
    conn.execute(
        "INSERT INTO credentials SELECT * FROM staged_credentials WHERE generation = ?"
        " ORDER BY kind, lookup",
        (generation,),
    )
    conn.execute(
        "INSERT INTO tenancies SELECT * FROM staged_tenancies WHERE generation = ?"
        " ORDER BY person_id",
        (generation,),
    )
    discard_staged(conn)


def purge_old(conn: sqlite3.Connection, limit: int = PURGE_CHUNK) -> int:
    """Delete up to `limit` rows of superseded generations; 0 when none are left."""
    generation = _meta(conn, "allowlist_generation")
    removed = 0
    for table in ("credentials", "tenancies", "allowlist_people"):
        removed += conn.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}"  # noqa: S608
            " WHERE generation > 0 AND generation < ? LIMIT ?)",
            (generation, limit),
        ).rowcount
    return removed


def apply_delta(
    conn: sqlite3.Connection, keys: KeyRing, delta: AllowlistDelta, now: datetime
) -> int:
    """Apply a delta to the allowlist in force; return the people changed. Call in a transaction."""
    current = state(conn)
    if delta.to_version <= current.version:
        raise AllowlistVersionError(
            f"delta to {delta.to_version} is not newer than {current.version} in force", stale=True
        )
    if delta.from_version != current.version:
        raise AllowlistVersionError(
            f"delta from {delta.from_version}, but {current.version} is in force: send a snapshot",
            stale=False,
        )
    generation = current.generation
    changed = 0
    for platform_id in [*delta.remove, *(entry.person for entry in delta.upsert)]:
        changed += _drop_person(conn, generation, platform_id)
    for person_id in stage(conn, keys, generation, delta.upsert, now, live=True):
        record_change(conn, person_id)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'allowlist_version'", (delta.to_version,))
    return changed + len(delta.upsert)


def _drop_person(conn: sqlite3.Connection, generation: int, platform_id: str) -> int:
    row = conn.execute(
        "DELETE FROM allowlist_people WHERE generation = ? AND platform_id = ? RETURNING person_id",
        (generation, platform_id),
    ).fetchone()
    if row is None:
        return 0
    person_id = row[0]
    lookups = [
        bytes(found[0])
        for found in conn.execute(
            "DELETE FROM credentials WHERE person_id = ? AND generation = ? RETURNING lookup",
            (person_id, generation),
        )
    ]
    conn.execute(
        "DELETE FROM tenancies WHERE person_id = ? AND generation = ?", (person_id, generation)
    )
    record_change(conn, person_id)
    record_removed(conn, lookups)
    for lookup in lookups:  # a local enrolment of the same card comes back into force
        for (other,) in conn.execute(
            "SELECT person_id FROM credentials WHERE lookup = ? AND generation = 0", (lookup,)
        ).fetchall():
            record_change(conn, other)
    return 1


def set_status(
    conn: sqlite3.Connection,
    keys: KeyRing,
    *,
    kind: CredentialKind,
    value: str,
    status: CredentialStatus,
    now: datetime,
) -> list[str]:
    """Set the status of a credential wherever it is in force; return the people it belongs to."""
    generation = _meta(conn, "allowlist_generation")
    people = [
        row[0]
        for row in conn.execute(
            "UPDATE credentials SET status = ?, updated_at = ?"
            " WHERE kind = ? AND lookup = ? AND generation IN (0, ?) RETURNING person_id",
            (status.value, now.isoformat(), kind.value, keys.lookup(kind.value, value), generation),
        )
    ]
    for person_id in dict.fromkeys(people):
        record_change(conn, person_id)
    return people


def person_for_platform_id(conn: sqlite3.Connection, platform_id: str) -> str | None:
    """The local person id of a platform person in the allowlist in force."""
    row = conn.execute(
        "SELECT person_id FROM allowlist_people WHERE platform_id = ? AND generation ="
        " (SELECT value FROM meta WHERE key = 'allowlist_generation')",
        (platform_id,),
    ).fetchone()
    return None if row is None else str(row[0])


def _people_for(
    conn: sqlite3.Connection,
    keys: KeyRing,
    id_numbers: Sequence[str],
    stamp: str,
    *,
    table: str = "people",
) -> list[str]:
    """The person id for each ID number, creating (identity only, in `table`) the new ones."""
    hashes = [keys.lookup(CredentialKind.ID_NUMBER.value, number) for number in id_numbers]
    known: dict[bytes, str] = {}
    for start in range(0, len(hashes), _LOOKUP_BATCH):
        batch = hashes[start : start + _LOOKUP_BATCH]
        marks = ",".join("?" * len(batch))
        for person_id, id_hash in conn.execute(
            f"SELECT id, id_hash FROM people WHERE id_hash IN ({marks})",  # noqa: S608
            batch,
        ):
            known[bytes(id_hash)] = person_id
    new_rows = []
    for number, id_hash in zip(id_numbers, hashes, strict=True):
        if id_hash in known:
            continue
        person_id = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        known[id_hash] = person_id
        sealed = keys.seal(number, f"people.id_number:{person_id}")
        new_rows.append((person_id, id_hash, mask(number), sealed, stamp, stamp))
    conn.executemany(
        f"INSERT INTO {table} (id, id_hash, id_masked, id_number_sealed, name_sealed,"  # noqa: S608
        " created_at, updated_at) VALUES (?, ?, ?, ?, NULL, ?, ?)",
        new_rows,
    )
    return [known[id_hash] for id_hash in hashes]


def _masked(kind: CredentialKind, value: str) -> str:
    return value[:8] + "…" if kind is CredentialKind.VOUCHER else mask(value)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
