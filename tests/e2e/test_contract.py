"""The wire contract with live traffic: what a real gateway sends and is sent matches the document.

docs/asyncapi.yaml itself (sound, strict, in step with gateway.sync.wire) is checked by
tests/sync/test_wire_contract.py.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from gateway.config import Config
from gateway.domain.credentials import CredentialKind, CredentialStatus, parse_credential
from gateway.domain.events import EventType
from gateway.domain.ids import IdNumber
from gateway.domain.people import CredentialGrant, Enrolment, Tenancy
from gateway.domain.signed_commands import Rejection
from gateway.domain.signing import SigningKey
from gateway.domain.voucher import Voucher
from gateway.domain.voucher import issue as issue_voucher
from gateway.residence.intake import issue_token_offline
from gateway.runtime.parts import open_store
from gateway.store import registry
from gateway.store.db import connect, transaction
from gateway.sync.local_broker import LocalBroker
from gateway.sync.wire import Topics
from tests.support.contract import SCHEMAS, assert_valid, payload_ref, validator
from tests.support.gateway import (
    SH,
    InProcessGateway,
    Subscriber,
    access_decisions,
    enrol_cards,
    load,
    make_id_number,
    wait_until,
    write_config,
    write_taps,
)
from tests.support.platform import Platform, id_number_for, key_file, person_entry
from tests.support.terminal import record_json

VALIDATED_ELSEWHERE = {EventType.GATEWAY_ALARM.value}
"""Event types whose real traffic is validated by another test (tests/ops/test_storage.py: a
storage alarm needs a broker outage and a full budget)."""

GRANTED = "04A1B2C3D4"
LOST = "04C0FFEE42"
UNKNOWN = "04DEADBEEF"
NO_TENANCY = "0411223344"
EXPIRED = "0455667788"
NOT_YET_VALID = "04AABBCCDD"
WRONG_DOOR = "04EEFF0011"


# --- real traffic ---------------------------------------------------------------------------


def _credential_id(config: Config, card: str) -> str:
    keys = open_store(config)
    value = parse_credential(CredentialKind.CARD_UID, card).value
    lookup = keys.lookup(CredentialKind.CARD_UID.value, value)
    conn = connect(config.gateway.database, readonly=True)
    try:
        (credential_id,) = [
            row.credential_id for row in registry.iter_credentials(conn) if row.lookup == lookup
        ]
    finally:
        conn.close()
    return credential_id


def _report(config: Config, card: str, status: CredentialStatus) -> None:
    credential_id = _credential_id(config, card)
    conn = connect(config.gateway.database)
    try:
        with transaction(conn):
            registry.set_credential_status(conn, credential_id, status, datetime.now(SH))
    finally:
        conn.close()


def _enrol_special(config: Config) -> None:
    """Tenants whose cards are refused for each remaining reason."""
    keys = open_store(config)
    now = datetime.now(SH)
    day = timedelta(days=1)
    current = Tenancy("1", now - day, now + 365 * day)
    people: list[tuple[str, CredentialGrant, Tenancy | None]] = [
        (NO_TENANCY, CredentialGrant(parse_credential(CredentialKind.CARD_UID, NO_TENANCY)), None),
        (
            EXPIRED,
            CredentialGrant(
                parse_credential(CredentialKind.CARD_UID, EXPIRED), now - 30 * day, now - day
            ),
            current,
        ),
        (
            NOT_YET_VALID,
            CredentialGrant(
                parse_credential(CredentialKind.CARD_UID, NOT_YET_VALID), now + day, now + 30 * day
            ),
            current,
        ),
        (
            WRONG_DOOR,
            CredentialGrant(parse_credential(CredentialKind.CARD_UID, WRONG_DOOR)),
            Tenancy("2", now - day, now + 365 * day),
        ),
    ]
    conn = connect(config.gateway.database)
    try:
        with transaction(conn):
            for serial, (card, grant, tenancy) in enumerate(people, start=100):
                enrolment = Enrolment(make_id_number(serial), f"Tenant {card}", (grant,), tenancy)
                registry.enrol(conn, keys, enrolment, now)
    finally:
        conn.close()


def _platform_traffic(
    broker: LocalBroker, gateway_id: str, key: SigningKey, running: InProcessGateway, fifo: Path
) -> list[bytes]:
    """Commands that make the gateway reply, unlock a door, and raise then clear an alert."""
    platform = Platform(broker, gateway_id, key, running.gateway.clock)
    voucher = Voucher.new(
        registration_id="R-9",
        holder_name="租户九",
        id_number=IdNumber(id_number_for(9)),
        binding_key=bytes(32),
        building=gateway_id,
        unit="1",
        registered_on=date(2026, 1, 2),
        valid_until=date(2099, 1, 1),
        issued_at=datetime.now(SH),
    )
    entry = person_entry(9, ["CC09"])
    entry["credentials"].append({"kind": "voucher", "value": str(voucher.voucher_id)})
    sent = [
        platform.signed("allowlist.snapshot", {"version": 1, "people": [entry]}),
        platform.signed("door.unlock", {"door": "front", "seconds": 2}, ttl_s=30),
        platform.signed(
            "person.status",
            {
                "person": "P-9",
                "as_of": 1,
                "registration": {"state": "registered", "building": gateway_id},
            },
        ),
        platform.signed("resync", {}, key=SigningKey.generate()),
    ]
    try:
        assert platform.send_raw("allowlist.snapshot", sent[0])["ok"]
        wait_until(lambda: len(running.gateway.doors.index) >= 7, 10, "allowlist in force")
        decided = running.gateway.doors.counters.decisions
        before = decided.total()
        write_taps(fifo, ["CC09"])
        wait_until(lambda: decided.total() > before, 10, "the tap decided")
        forged = issue_voucher(voucher, SigningKey.generate())
        write_taps(fifo.parent / "qr.reader", [issue_voucher(voucher, key), forged])
        wait_until(lambda: decided.total() > before + 2, 10, "the vouchers decided")
        assert platform.send_raw("door.unlock", sent[1])["ok"]
        assert platform.send_raw("door.unlock", sent[1])["reason"] == "already_seen"
        wait_until(lambda: running.gateway.parts.alerts.raised >= 3, 10, "registration.due raised")
        assert platform.send_raw("person.status", sent[2])["ok"]
        assert platform.send_raw("resync", sent[3])["reason"] == "unknown_key"
    finally:
        platform.close()
    _terminal_record(running)
    return sent


def _enrol_by_tap(running: InProcessGateway, fifo: Path) -> None:
    """A capture armed at the front door takes an unknown card: enrol.capture, twice."""
    captures = running.gateway.parts.captures
    armed: list[object] = []
    running.call_soon(lambda: armed.append(captures.arm("installer", "front")))
    wait_until(lambda: bool(armed), 10, "the capture armed")
    write_taps(fifo, ["04CAFE0001"])
    wait_until(lambda: captures.captured == 1, 10, "the card captured")


def _terminal_record(running: InProcessGateway) -> None:
    """A handheld terminal hands in a registration over HTTPS: registration.captured."""
    gateway = running.gateway
    token = issue_token_offline(gateway.config.gateway.database, "T-01", gateway.clock)
    with running.api_client() as client:
        response = client.post(
            "/api/v1/terminal/records",
            json={"records": [record_json("T-01", 3, voucher=None)]},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text


def test_real_traffic_matches_the_contract(broker: LocalBroker, tmp_path: Path) -> None:
    gateway_id = f"GW-CONTRACT-{uuid4().hex[:8]}"
    key, public = key_file(tmp_path / "platform")
    config_path = write_config(
        tmp_path, broker.url, gateway_id=gateway_id, extra=f'[platform]\nkeys = ["{public}"]\n'
    )
    with config_path.open("a", encoding="utf-8") as config_file:
        config_file.write('\n[[doors]]\nname = "front"\nunits = ["1"]\n')  # unit 2: wrong_door
        # A QR reader printing voucher payloads.
        config_file.write(
            f'\n[[devices]]\nkind = "line"\ndoor = "front"\npath = "{tmp_path / "qr.reader"}"\n'
            'credential = "voucher"\nname = "front-qr"\n'
        )
        os.mkfifo(tmp_path / "qr.reader", 0o600)
        # A reader whose device is missing: device.status offline and a door.alarm.
        config_file.write(
            '\n[[devices]]\nkind = "line"\ndoor = "front"\npath = "/nonexistent/back.reader"\n'
        )
    config = load(config_path)
    enrol_cards(config, [GRANTED, LOST])
    _report(config, LOST, CredentialStatus.LOST)
    _enrol_special(config)
    taps = [GRANTED, UNKNOWN, LOST, NO_TENANCY, EXPIRED, NOT_YET_VALID, WRONG_DOOR, GRANTED]
    platform = Subscriber(broker.port, f"rentgate/v1/{gateway_id}/#", f"{gateway_id}-platform")
    try:
        with InProcessGateway(config) as running:
            write_taps(tmp_path / "front.reader", taps)
            wait_until(
                lambda: (
                    len(platform.decisions()) >= len(taps)
                    and any(e["type"] == EventType.DEVICE_STATUS.value for e in platform.events())
                ),
                20,
                "every decision and the reader's status at the subscriber",
            )
            sent = _platform_traffic(broker, gateway_id, key, running, tmp_path / "front.reader")
            _enrol_by_tap(running, tmp_path / "front.reader")
            wait_until(
                lambda: any(e["type"] == "alert.cleared" for e in platform.events()),
                20,
                "the alert cleared by the platform's status",
            )
        wait_until(
            lambda: any(state["online"] is False for state in platform.states()),
            10,
            "the offline state of a clean stop",
        )
        received = platform.snapshot()
    finally:
        platform.close()
    late = Subscriber(broker.port, f"rentgate/v1/{gateway_id}/state", f"{gateway_id}-late")
    try:
        wait_until(lambda: bool(late.snapshot()), 10, "the retained state after the stop")
        retained = late.snapshot()
    finally:
        late.close()

    command_check = validator(payload_ref("commands"))
    for command in sent:
        assert_valid(command_check, json.loads(command), "a command the platform tool signed")
    reply_check = validator(payload_ref("commandReplies"))
    replies = [
        json.loads(m.payload) for m in received if m.topic == Topics(gateway_id).command_reply
    ]
    for reply in replies:
        assert_valid(reply_check, reply, "a command reply")
    assert {(r["cmd"], r["ok"], r.get("reason")) for r in replies} == {
        ("allowlist.snapshot", True, None),
        ("person.status", True, None),
        ("door.unlock", True, None),
        ("door.unlock", False, Rejection.ALREADY_SEEN.value),
        ("resync", False, Rejection.UNKNOWN_KEY.value),
    }

    envelope_check = validator(payload_ref("events"))
    state_check = validator(payload_ref("state"))
    by_seq: dict[int, dict[str, Any]] = {}
    types: Counter[str] = Counter()
    envelopes = [m for m in received if m.topic == Topics(gateway_id).events]
    assert envelopes
    for message in envelopes:
        envelope = json.loads(message.payload)
        assert_valid(envelope_check, envelope, "an event envelope")
        assert envelope["gw"] == gateway_id
        seqs = [event["seq"] for event in envelope["events"]]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "ascending, contiguous seq"
        for event in envelope["events"]:
            types[event["type"]] += 1
            first = by_seq.setdefault(event["seq"], event)
            assert first == event, "a redelivered seq carries the same event"
    assert sorted(by_seq) == list(range(1, len(by_seq) + 1)), "seq contiguous from 1, no gaps"
    assert len({event["id"] for event in by_seq.values()}) == len(by_seq), "ids are unique"
    assert set(types) | VALIDATED_ELSEWHERE == {t.value for t in EventType}, (
        f"validated {dict(types)}: make this test produce every event type"
    )

    events = [by_seq[seq] for seq in sorted(by_seq)]
    decisions = access_decisions(events)
    outcomes = [(d["result"], d["reason"]) for d in decisions]
    assert outcomes == [
        ("allow", "granted"),
        ("deny", "unknown"),
        ("deny", "revoked"),
        ("deny", "no_tenancy"),
        ("deny", "expired"),
        ("deny", "not_yet_valid"),
        ("deny", "wrong_door"),
        ("allow", "granted"),
        ("allow", "granted"),  # the platform's allowlist entry
        ("allow", "granted"),  # its voucher, verified offline
        ("deny", "invalid_voucher"),  # a voucher signed with a key the gateway does not trust
    ]
    reasons = SCHEMAS["AccessDecisionEvent"]["properties"]["reason"]["enum"]
    assert {reason for _, reason in outcomes} == set(reasons), "every reason validated"
    revoked = decisions[2]
    assert revoked["credential_status"] == "lost"
    assert all("credential_status" not in d for d in decisions if d is not revoked)
    assert all("voucher_problem" not in d for d in decisions[:-1])
    assert decisions[1]["person"] is None
    assert decisions[0]["person"] == decisions[-4]["person"] is not None
    assert decisions[-3]["person"] == decisions[-2]["person"] is not None  # card and voucher
    assert decisions[-1]["voucher_problem"] == "unknown_key"
    statuses = [e for e in events if e["type"] == EventType.DEVICE_STATUS.value]
    assert statuses[0]["online"] is True
    assert statuses[0]["error"] is None

    states = [m for m in received if m.topic == Topics(gateway_id).state]
    for message in [*states, *retained]:
        assert_valid(state_check, json.loads(message.payload), "a state message")
    documents = [json.loads(m.payload) for m in states]
    assert documents[0]["online"] is True, "birth first"
    assert {"backlog", "head_seq", "software"} <= set(documents[0])
    assert documents[-1]["online"] is False, "offline state on a clean stop"
    assert all(state["gw"] == gateway_id for state in documents)
    assert retained[-1].retain
    assert json.loads(retained[-1].payload)["online"] is False
