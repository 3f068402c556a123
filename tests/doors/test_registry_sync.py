"""The access index follows the registry: changes made while the gateway runs apply in place."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from gateway.domain.credentials import CredentialKind, CredentialStatus, parse_credential
from gateway.domain.people import CredentialGrant, Enrolment, Tenancy
from gateway.store import registry
from gateway.store.crypto import KeyRing
from gateway.store.db import connect, transaction
from gateway.store.migrations import migrate
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    SH,
    InProcessGateway,
    enrol_cards,
    load,
    make_id_number,
    wait_for_index,
    wait_until,
    write_config,
    write_taps,
)

NEW_CARD = "04ABCDEF01"


def test_changes_since_reads_only_the_people_who_changed(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    conn = connect(tmp_path / "db.sqlite")
    try:
        migrate(conn)
        now = datetime.now(SH)
        with transaction(conn):
            first = registry.enrol(
                conn,
                keys,
                Enrolment(
                    make_id_number(1),
                    "A",
                    (CredentialGrant(parse_credential(CredentialKind.CARD_UID, "04AA01")),),
                ),
                now,
            )
            registry.enrol(
                conn,
                keys,
                Enrolment(
                    make_id_number(2),
                    "B",
                    (CredentialGrant(parse_credential(CredentialKind.CARD_UID, "04BB02")),),
                ),
                now,
            )
        version = registry.registry_version(conn)
        unchanged = registry.changes_since(conn, version)
        assert unchanged is not None
        assert (unchanged.version, unchanged.credentials) == (version, [])
        with transaction(conn):
            registry.set_credential_status(
                conn, first.credential_ids[0], CredentialStatus.LOST, now
            )
        changes = registry.changes_since(conn, version)
        assert changes is not None
        assert changes.version == version + 1
        assert [(r.person_id, r.status) for r in changes.credentials] == [
            (first.person_id, CredentialStatus.LOST)
        ]
        with transaction(conn):
            conn.execute("DELETE FROM registry_changes")  # the log no longer reaches back
        assert registry.changes_since(conn, version) is None
    finally:
        conn.close()


def test_enrol_and_report_lost_while_the_gateway_runs(broker: LocalBroker, tmp_path: Path) -> None:
    config = load(write_config(tmp_path, broker.url, gateway_id="GW-SYNC"))
    enrol_cards(config, ["04A1B2C3D4"])
    keys = KeyRing.load_or_create(config.gateway.keys)
    with InProcessGateway(config) as running:
        counters = running.gateway.doors.counters.decisions
        write_taps(tmp_path / "front.reader", [NEW_CARD])
        wait_until(lambda: counters["unknown"] == 1, 10, "the new card refused at first")

        conn = connect(config.gateway.database)  # another writer, as `rentgate enroll` is
        try:
            now = datetime.now(SH)
            with transaction(conn):
                result = registry.enrol(
                    conn,
                    keys,
                    Enrolment(
                        make_id_number(77),
                        "New tenant",
                        (CredentialGrant(parse_credential(CredentialKind.CARD_UID, NEW_CARD)),),
                        Tenancy("1", now - timedelta(hours=1)),
                    ),
                    now,
                )
        finally:
            conn.close()
        wait_until(lambda: len(running.gateway.doors.index) == 2, 10, "the index updated")
        write_taps(tmp_path / "front.reader", [NEW_CARD])
        wait_until(lambda: counters["granted"] == 1, 10, "the new card let in")

        conn = connect(config.gateway.database)
        try:
            with transaction(conn):
                registry.set_credential_status(
                    conn, result.credential_ids[0], CredentialStatus.LOST, datetime.now(SH)
                )
        finally:
            conn.close()
        wait_for_index(running.gateway, 10)
        write_taps(tmp_path / "front.reader", [NEW_CARD])
        wait_until(lambda: counters["revoked"] == 1, 10, "the lost card refused")
