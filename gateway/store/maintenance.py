"""Integrity, recovery, backup and restore of the store file.

At start the gateway runs `PRAGMA quick_check`. A damaged file is moved aside
(never deleted), and whatever rows can still be read are copied into a new
store. The head seq jumps ahead by `SEQ_GAP` so that no seq the platform may
already have seen is ever used twice; the platform sees the gap and knows
records may be missing.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gateway.store.db import connect, transaction
from gateway.store.errors import StoreError, translated
from gateway.store.files import private_file
from gateway.store.migrations import migrate

log = logging.getLogger(__name__)

SEQ_GAP = 1_000_000
ROW_CHUNK = 500
_TABLES = (
    "people",
    "credentials",
    "tenancies",
    "registry_changes",
    "allowlist_people",
    "person_status",
    "commands_seen",
    "platform_keys",
    "alerts",
    "terminals",
    "terminal_records",
    "users",
    "user_units",
    "audit_log",
    "outbox",
)
"""Copied in this order (parents before children); staging and removal logs are not kept."""


def quick_check(path: Path) -> list[str]:
    """Problems `PRAGMA quick_check` reports; a file SQLite cannot even open is one too."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [f"cannot open: {exc}"]
    try:
        rows = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        conn.close()
    return [] if rows == ["ok"] else rows


@dataclass
class Recovery:
    damaged: Path
    copied: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    head_seq: int = 0


def recover(path: Path) -> Recovery:
    """Move a damaged store aside and rebuild it from what is readable."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    damaged = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(damaged.with_name(damaged.name + suffix))
    report = Recovery(damaged)
    fresh = connect(path)
    try:
        migrate(fresh)
        try:
            old = sqlite3.connect(f"{damaged.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            report.unreadable["*"] = str(exc)
            old = None
        if old is not None:
            try:
                _copy(old, fresh, report)
            finally:
                old.close()
        _restart_seq(fresh, report)
    finally:
        fresh.close()
    log.error(
        "store was damaged: kept aside as %s; recovered %s; unreadable: %s; seq continues at %d",
        damaged,
        report.copied,
        report.unreadable or "nothing",
        report.head_seq + 1,
    )
    return report


def _copy(old: sqlite3.Connection, fresh: sqlite3.Connection, report: Recovery) -> None:
    for table in _TABLES:
        try:
            columns = [row[1] for row in fresh.execute(f"PRAGMA table_info({table})")]
            old_columns = {row[1] for row in old.execute(f"PRAGMA table_info({table})")}
        except sqlite3.DatabaseError as exc:
            report.unreadable[table] = str(exc)
            continue
        shared = [c for c in columns if c in old_columns]
        if not shared:
            continue
        names = ", ".join(shared)
        marks = ", ".join("?" * len(shared))
        insert = f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})"  # noqa: S608
        copied = 0
        last = 0
        with transaction(fresh):
            while True:
                try:
                    rows = old.execute(
                        f"SELECT rowid, {names} FROM {table} WHERE rowid > ?"  # noqa: S608
                        " ORDER BY rowid LIMIT ?",
                        (last, ROW_CHUNK),
                    ).fetchall()
                except sqlite3.DatabaseError as exc:
                    report.unreadable[table] = f"after rowid {last}: {exc}"
                    break
                if not rows:
                    break
                last = rows[-1][0]
                fresh.executemany(insert, [row[1:] for row in rows])
                copied += len(rows)
        report.copied[table] = copied
    with contextlib.suppress(sqlite3.DatabaseError, StoreError), transaction(fresh):
        for key, value in old.execute("SELECT key, value FROM meta"):
            fresh.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))


def _restart_seq(fresh: sqlite3.Connection, report: Recovery) -> None:
    with transaction(fresh):
        (top,) = fresh.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()
        (head,) = fresh.execute("SELECT value FROM meta WHERE key = 'head_seq'").fetchone()
        report.head_seq = max(int(top), int(head)) + SEQ_GAP
        fresh.execute("UPDATE meta SET value = ? WHERE key = 'head_seq'", (report.head_seq,))
        fresh.execute(
            "UPDATE meta SET value = min(value, ?) WHERE key IN ('delivered_seq', 'acked_seq')",
            (int(top),),
        )


def backup(path: Path, destination: Path) -> None:
    """An online, consistent copy (SQLite's backup API) while the gateway runs; checked after.

    The copy is 0600 from the start, whatever the umask: it holds what the store holds.
    """
    try:
        private_file(destination, exclusive=True)
    except FileExistsError as exc:
        raise StoreError(f"{destination} exists; not overwriting a backup") from exc
    source = connect(path, readonly=True)
    try:
        target = sqlite3.connect(destination)
        try:
            with translated():
                source.backup(target, pages=1024)
        finally:
            target.close()
    finally:
        source.close()
    problems = quick_check(destination)
    if problems:
        raise StoreError(f"the backup {destination} does not check out: {problems[:3]}")


def restore(backup_file: Path, path: Path) -> Path | None:
    """Put a backup in place of the store (the gateway must be stopped); the current file is
    kept aside, and its path returned."""
    problems = quick_check(backup_file)
    if problems:
        raise StoreError(f"{backup_file} is not a usable backup: {problems[:3]}")
    kept = None
    if path.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        kept = path.with_name(f"{path.name}.before-restore-{stamp}")
        path.rename(kept)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(kept.with_name(kept.name + suffix))
    source = sqlite3.connect(f"{backup_file.resolve().as_uri()}?mode=ro", uri=True)
    try:
        target = connect(path)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    return kept
