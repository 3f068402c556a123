"""The SQLite store: keys, migrations, the group-commit writer, the registry at rest."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.domain.credentials import CredentialKind, CredentialStatus, parse_credential
from gateway.domain.events import EventType, new_event
from gateway.domain.people import CredentialGrant, Enrolment, Tenancy
from gateway.store import outbox, registry
from gateway.store.crypto import KeyRing
from gateway.store.db import connect, integrity_problems, transaction
from gateway.store.errors import KeyFileError, SchemaTooNewError, StoreError
from gateway.store.migrations import LATEST_VERSION, MIGRATIONS, migrate, schema_version
from gateway.store.writer import Writer
from tests.support.gateway import make_id_number, wait_until

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=SH)


def event(n: int) -> object:
    return new_event(
        EventType.DEVICE_STATUS,
        NOW,
        float(n),
        {"device": f"d{n}", "door": "front", "online": True, "error": None},
    )


# -- keys -------------------------------------------------------------------


def test_key_file_is_created_private_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "field.key"
    first = KeyRing.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = KeyRing.load_or_create(path)
    assert again.lookup("card_uid", "04A1") == first.lookup("card_uid", "04A1")
    assert again.open(first.seal("王小明", "people.name:1"), "people.name:1") == "王小明"


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "field.key"
    KeyRing.load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        KeyRing.load_or_create(path)


def test_garbled_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "field.key"
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a Rentgate key file"):
        KeyRing.load_or_create(path)


def test_sealed_fields_are_bound_to_their_place_and_tamper_evident() -> None:
    keys = KeyRing.generate()
    blob = keys.seal("11010519491231002X", "people.id_number:p1")
    with pytest.raises(KeyFileError):
        keys.open(blob, "people.id_number:p2")  # moved to another row
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(KeyFileError):
        keys.open(bytes(flipped), "people.id_number:p1")
    with pytest.raises(KeyFileError):
        KeyRing.generate().open(blob, "people.id_number:p1")  # another gateway's key


def test_lookup_hash_separates_kinds() -> None:
    keys = KeyRing.generate()
    assert keys.lookup("card_uid", "1234") != keys.lookup("voucher", "1234")


# -- migrations -------------------------------------------------------------


_FIXTURE_SQL: dict[int, tuple[str, ...]] = {
    # Rows as each schema version's release wrote them, in that version's own SQL:
    # a migration must carry them forward, whatever today's code would write.
    1: (
        "INSERT INTO people VALUES ('p1', x'01', '341***********0010', x'02', x'03',"
        " '2026-01-01T00:00:00+08:00', '2026-01-01T00:00:00+08:00')",
        "INSERT INTO credentials (id, person_id, kind, lookup, masked, value_sealed, status,"
        " valid_from, valid_to, created_at, updated_at) VALUES ('c1', 'p1', 'card_uid', x'04',"
        " '04A***C3D4', x'05', 'active', NULL, NULL, '2026-01-01T00:00:00+08:00',"
        " '2026-01-01T00:00:00+08:00')",
        "INSERT INTO tenancies (id, person_id, unit, room, valid_from, valid_to, created_at)"
        " VALUES ('t1', 'p1', '3', '301', '2026-01-01T00:00:00+08:00', NULL,"
        " '2026-01-01T00:00:00+08:00')",
        "UPDATE meta SET value = 1 WHERE key = 'registry_version'",
    ),
    2: (
        "INSERT INTO outbox VALUES (1, 'e1', 'device.status', '2026-01-01T00:00:00.000+08:00',"
        " '{}'), (2, 'e2', 'device.status', '2026-01-01T00:00:00.000+08:00', '{}')",
        "UPDATE meta SET value = 2 WHERE key = 'head_seq'",
        "UPDATE meta SET value = 1 WHERE key = 'delivered_seq'",
    ),
    3: ("INSERT INTO registry_changes VALUES (1, 'p1')",),
    4: (
        "INSERT INTO commands_seen VALUES ('0192f1c0-0000-7000-8000-000000000001',"
        " 'resync', '2026-01-01T00:00:00+08:00', 1767196800, 'applied', NULL, NULL)",
        "INSERT INTO person_status (person_id, as_of, registration_state, updated_at)"
        " VALUES ('p1', 1, 'registered', '2026-01-01T00:00:00+08:00')",
    ),
    5: (
        "INSERT INTO terminals VALUES ('T-1', x'00', '2026-01-01T00:00:00+08:00', NULL)",
        "INSERT INTO terminal_records VALUES ('0192f1c0-0000-7000-8000-000000000002', 'T-1',"
        " 'registration', '2026-01-01T00:00:00+08:00', '2026-01-01T00:00:01+08:00', 1)",
    ),
    6: (
        "INSERT INTO audit_log (at, actor, action) VALUES ('2026-01-01T00:00:00+08:00', 'cli:root',"
        " 'user.add')",
    ),
    # 7 adds generated columns and indexes, no table: an event with a door and a person.
    7: ("""UPDATE outbox SET payload = '{"door":"front","person":"p1"}' WHERE seq = 2""",),
    # 8 adds columns: a tenancy let under a name of its own, a card enrolled for a unit.
    8: (
        "UPDATE tenancies SET name_sealed = x'06' WHERE id = 't1'",
        "UPDATE credentials SET unit = '3' WHERE id = 'c1'",
    ),
    # 9 adds the platform's ack cursor (a meta row): the platform acknowledged seq 1.
    9: ("UPDATE meta SET value = 1 WHERE key = 'acked_seq'",),
}


def _fixture_rows(conn: sqlite3.Connection, version: int) -> None:
    """Data a gateway at `version` could hold; each migration adds its own rows here."""
    with transaction(conn):
        for since in range(1, version + 1):
            for statement in _FIXTURE_SQL[since]:
                conn.execute(statement)


def test_every_migration_has_fixture_rows() -> None:
    assert set(_FIXTURE_SQL) == {m.version for m in MIGRATIONS}


@pytest.mark.parametrize("start", [0, *(m.version for m in MIGRATIONS)])
def test_migrates_from_every_earlier_schema(tmp_path: Path, start: int) -> None:
    conn = connect(tmp_path / "db.sqlite")
    try:
        migrate(conn, target=start)
        assert schema_version(conn) == start
        _fixture_rows(conn, start)
        assert migrate(conn) == start
        assert schema_version(conn) == LATEST_VERSION
        assert integrity_problems(conn) == []
        counts = registry.counts(conn)
        assert counts["people"] == (1 if start >= 1 else 0)
        expected_head = 2 if start >= 2 else 0
        assert outbox.head_seq(conn) == expected_head
        assert outbox.delivered_seq(conn) == (1 if start >= 2 else 0)
        assert outbox.acked_seq(conn) == outbox.delivered_seq(conn)  # what was PUBACKed before
        with transaction(conn):
            head = outbox.append_rows(conn, [event(3)])  # type: ignore[list-item]
            result = registry.enrol(
                conn,
                KeyRing.generate(),
                Enrolment(
                    make_id_number(9),
                    "After upgrade",
                    (CredentialGrant(parse_credential(CredentialKind.CARD_UID, "04BB")),),
                ),
                NOW,
            )
        assert head == expected_head + 1
        changes = registry.changes_since(conn, registry.registry_version(conn) - 1)
        assert changes is not None
        assert [row.person_id for row in changes.credentials] == [result.person_id]
    finally:
        conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    try:
        migrate(conn)
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
        with pytest.raises(SchemaTooNewError, match="newer release"):
            migrate(conn)
    finally:
        conn.close()


def test_connection_is_wal_and_synchronous_full(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        conn.close()


# -- writer -----------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "db.sqlite"
    conn = connect(path)
    migrate(conn)
    conn.close()
    return path


def test_writer_groups_a_burst_into_few_commits(database: Path) -> None:
    writer = Writer(database, window_s=0.005)
    writer.start()
    recorded: list[int] = []
    done = threading.Event()

    def on_recorded(seq: int) -> None:
        recorded.append(seq)
        if len(recorded) == 5000:
            done.set()

    for n in range(5000):
        writer.append(event(n), on_recorded)  # type: ignore[arg-type]
    assert done.wait(30)
    writer.close()
    assert recorded == list(range(1, 5001)), "seq contiguous from 1 in append order"
    assert writer.health.commits < 50, "a burst costs a handful of fsyncs, not one per event"


def test_seq_survives_restart_and_is_never_reused(database: Path) -> None:
    for round_ in range(3):
        writer = Writer(database)
        writer.start()
        for n in range(10):
            writer.append(event(n))  # type: ignore[arg-type]
        writer.close()
        assert writer.health.head_seq == 10 * (round_ + 1)
    conn = connect(database)
    try:
        with transaction(conn):
            conn.execute("DELETE FROM outbox")  # delivered history pruned
        with transaction(conn):
            assert outbox.append_rows(conn, [event(0)]) == 31  # type: ignore[list-item]
    finally:
        conn.close()


def test_a_failing_operation_changes_nothing_and_others_commit(database: Path) -> None:
    writer = Writer(database)
    writer.start()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE meta SET value = 999 WHERE key = 'registry_version'")
        raise ValueError("bad request")

    writer.append(event(1))  # type: ignore[arg-type]
    writer.flush()
    bad = writer.submit(broken)
    good = writer.submit(lambda conn: outbox.mark_delivered(conn, 1))
    assert good.result(10) is None
    with pytest.raises(ValueError, match="bad request"):
        bad.result(10)
    writer.close()
    conn = connect(database)
    try:
        assert registry.registry_version(conn) == 0
        assert outbox.delivered_seq(conn) == 1
    finally:
        conn.close()


def test_delivery_cursor_never_moves_back_or_past_head(database: Path) -> None:
    conn = connect(database)
    try:
        with transaction(conn):
            outbox.append_rows(conn, [event(n) for n in range(5)])  # type: ignore[misc]
            outbox.mark_delivered(conn, 3)
            outbox.mark_delivered(conn, 2)
        assert outbox.delivered_seq(conn) == 3
        with transaction(conn):
            outbox.mark_delivered(conn, 99)
        stats = outbox.stats(conn)
        assert (stats.delivered_seq, stats.depth, stats.oldest_unsent_ts) == (5, 0, None)
    finally:
        conn.close()


def test_the_platforms_ack_cursor_only_moves_forward_and_never_past_head(database: Path) -> None:
    conn = connect(database)
    try:
        with transaction(conn):
            outbox.append_rows(conn, [event(n) for n in range(5)])  # type: ignore[misc]
            outbox.mark_delivered(conn, 2)
        stats = outbox.stats(conn)
        assert (stats.acked_seq, stats.unacked, stats.oldest_unacked_ts is not None) == (0, 5, True)
        with transaction(conn):
            assert outbox.mark_acked(conn, 4) is outbox.AckOutcome.ADVANCED
            assert outbox.mark_acked(conn, 3) is outbox.AckOutcome.STALE
            assert outbox.mark_acked(conn, 4) is outbox.AckOutcome.STALE
            assert outbox.mark_acked(conn, 6) is outbox.AckOutcome.ABOVE_HEAD
        stats = outbox.stats(conn)
        # The platform stored through 4: the broker must have taken it (PUBACK lost with a
        # session), so the send window moves too.
        assert (stats.acked_seq, stats.delivered_seq, stats.unacked) == (4, 4, 1)
        with transaction(conn):
            assert outbox.mark_acked(conn, 5) is outbox.AckOutcome.ADVANCED
        stats = outbox.stats(conn)
        assert (stats.acked_seq, stats.unacked, stats.oldest_unacked_ts) == (5, 0, None)
    finally:
        conn.close()


def test_writer_keeps_events_when_the_disk_is_full_and_retries(database: Path) -> None:
    """SQLite's max_page_count makes the file "full" for real; raising it frees space."""
    conn = connect(database)
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    writer = Writer(database, window_s=0)
    writer.start()
    writer.submit(lambda c: c.execute(f"PRAGMA max_page_count = {page_count + 2}")).result(10)
    big = [
        new_event(
            EventType.DEVICE_STATUS,
            NOW,
            0.0,
            {"device": "x" * 3000, "door": "front", "online": True, "error": None},
        )
        for _ in range(40)
    ]
    for item in big:
        writer.append(item)
    wait_until(lambda: writer.health.failing_since is not None, 20, "the writer failing")
    assert "full" in (writer.health.last_error or "")
    assert writer.pending() >= 1, "the batch is still held, not dropped"
    with pytest.raises(TimeoutError, match="not recorded"):
        writer.flush(0.3)
    writer.submit(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
    wait_until(lambda: writer.health.events_recorded == 40, 20, "all 40 events recorded")
    writer.close()
    assert writer.health.failing_since is None
    conn = connect(database)
    try:
        assert outbox.head_seq(conn) == 40
    finally:
        conn.close()


# -- registry ---------------------------------------------------------------


def test_personal_data_is_sealed_at_rest(database: Path, tmp_path: Path) -> None:
    keys = KeyRing.generate()
    number = make_id_number(7)
    conn = connect(database)
    try:
        with transaction(conn):
            registry.enrol(
                conn,
                keys,
                Enrolment(
                    number,
                    "王小明",
                    (
                        CredentialGrant(parse_credential(CredentialKind.CARD_UID, "04A1B2C3D4")),
                        CredentialGrant(parse_credential(CredentialKind.ID_NUMBER, number.value)),
                    ),
                    Tenancy("3", NOW, NOW + timedelta(days=365), "301"),
                ),
                NOW,
            )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    raw = database.read_bytes()
    for secret in (number.value, "王小明", "04A1B2C3D4"):
        assert secret.encode() not in raw
        assert secret.encode("utf-16-le") not in raw
    conn = connect(database)
    try:
        name_blob, person_id = conn.execute("SELECT name_sealed, id FROM people").fetchone()
        assert keys.open(name_blob, f"people.name:{person_id}") == "王小明"
        assert conn.execute("SELECT id_masked FROM people").fetchone()[0] == number.masked
    finally:
        conn.close()
    assert not os.access(tmp_path / "nothing", os.F_OK)


def test_enrolling_again_updates_and_a_card_cannot_change_hands(database: Path) -> None:
    keys = KeyRing.generate()
    card = CredentialGrant(parse_credential(CredentialKind.CARD_UID, "04A1B2C3D4"))
    conn = connect(database)
    try:
        with transaction(conn):
            first = registry.enrol(conn, keys, Enrolment(make_id_number(1), "A", (card,)), NOW)
            again = registry.enrol(conn, keys, Enrolment(make_id_number(1), "A2", (card,)), NOW)
        assert not again.new_person
        assert again.person_id == first.person_id
        assert again.credential_ids == first.credential_ids
        with pytest.raises(StoreError, match="already enrolled"), transaction(conn):
            registry.enrol(conn, keys, Enrolment(make_id_number(2), "B", (card,)), NOW)
        assert registry.counts(conn) == {"people": 1, "credentials": 1, "tenancies": 0}
        version = registry.registry_version(conn)
        with transaction(conn):
            registry.set_credential_status(
                conn, first.credential_ids[0], CredentialStatus.LOST, NOW
            )
        assert registry.registry_version(conn) == version + 1
        rows = list(registry.iter_credentials(conn))
        assert [r.status for r in rows] == [CredentialStatus.LOST]
        elsewhere = Enrolment(make_id_number(1), "A", (card,), Tenancy("202", NOW, None))
        with pytest.raises(StoreError, match="already enrolled"), transaction(conn):
            registry.enrol(conn, keys, elsewhere, NOW)  # the same person, let another unit
        rows = list(registry.iter_credentials(conn))
        assert [r.status for r in rows] == [CredentialStatus.LOST], "not unblocked by it"
        with pytest.raises(StoreError, match="no credential"), transaction(conn):
            registry.set_credential_status(conn, "missing", CredentialStatus.LOST, NOW)
    finally:
        conn.close()


def test_an_operation_whose_caller_stopped_waiting_still_commits_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    """An asyncio caller cancelled mid-request cancels its future from another thread; the
    writer must neither die on answering it nor lose the work."""
    database = tmp_path / "store.db"
    conn = connect(database)
    migrate(conn)
    conn.close()
    writer = Writer(database, window_s=0.2)  # wide enough to cancel before the commit
    writer.start()
    try:
        gate = threading.Event()

        def slow(conn: sqlite3.Connection) -> int:
            gate.wait(5)
            conn.execute("UPDATE meta SET value = 41 WHERE key = 'registry_version'")
            return 41

        abandoned = writer.submit(slow)
        assert abandoned.cancel(), "still queued: cancellable"
        gate.set()
        later = writer.submit(
            lambda conn: conn.execute(
                "SELECT value FROM meta WHERE key = 'registry_version'"
            ).fetchone()[0]
        )
        assert later.result(10) in (0, 41)
        writer.flush()
    finally:
        writer.close()


def test_migration_8_gives_cards_the_unit_of_their_persons_only_letting(tmp_path: Path) -> None:
    """A card enrolled before cards had units belongs to the one unit its person is let; a
    person let several units leaves their cards to an admin (`gateway/api/directory.py`)."""
    conn = connect(tmp_path / "db.sqlite")
    try:
        migrate(conn, target=7)
        _fixture_rows(conn, 7)
        stamp = "'2026-01-01T00:00:00+08:00'"
        with transaction(conn):
            conn.execute(
                f"INSERT INTO people VALUES ('p2', x'11', '341***********0020', x'12', x'13',"
                f" {stamp}, {stamp})"
            )
            conn.execute(
                "INSERT INTO credentials (id, person_id, kind, lookup, masked, value_sealed,"
                f" created_at, updated_at) VALUES ('c2', 'p2', 'card_uid', x'14', '0B0***0B0B',"
                f" x'15', {stamp}, {stamp})"
            )
            for tenancy, unit in (("t2", "101"), ("t3", "202")):
                conn.execute(
                    "INSERT INTO tenancies (id, person_id, unit, valid_from, created_at)"
                    f" VALUES ('{tenancy}', 'p2', '{unit}', {stamp}, {stamp})"
                )
        migrate(conn)
        units = dict(conn.execute("SELECT id, unit FROM credentials").fetchall())
        assert units == {"c1": "3", "c2": None}
    finally:
        conn.close()
