"""The wire contract: docs/asyncapi.yaml is sound, strict, and says what gateway.sync.wire does.

Real traffic against the same document: tests/e2e/test_contract.py.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from gateway.clock import ManualClock, SystemClock
from gateway.devices.protocols import CardRead
from gateway.domain.capture import CapturedRecord
from gateway.domain.command_bodies import Ack, Replay
from gateway.domain.credentials import Credential, CredentialKind
from gateway.domain.events import EventType, OutboxEvent, new_event
from gateway.domain.personal import SEALED_FIELDS
from gateway.domain.sealed_box import OpeningKey, SealError, SealProblem
from gateway.domain.signed_commands import CommandName, sign
from gateway.domain.signing import SigningKey
from gateway.doors.enrol_by_tap import CardCaptures
from gateway.residence.intake import captured_body
from gateway.sync.wire import CONTRACT_VERSION, GatewayState, Topics
from tests.support.contract import (
    DOCUMENT,
    SCHEMAS,
    assert_valid,
    deref,
    opened,
    payload_ref,
    refs,
    resolve,
    validator,
)
from tests.support.gateway import make_id_number
from tests.support.terminal import record_json

RAW_CARD = "04A1B2C3D4"


def branch_types() -> dict[str, dict[str, Any]]:
    """The event type each branch of the Event schema is keyed on, and the branch's schema."""
    event = SCHEMAS["Event"]
    branches: dict[str, dict[str, Any]] = {}
    for entry in event["allOf"]:
        event_type = entry["if"]["properties"]["type"]["const"]
        assert entry["if"]["required"] == ["type"], event_type
        assert event_type not in branches, f"two schema branches for {event_type}"
        branch = deref(entry["then"])
        assert branch["properties"]["type"]["const"] == event_type
        branches[event_type] = branch
    assert set(event["properties"]["type"]["enum"]) == set(branches), "no type without a branch"
    return branches


# --- the document ---------------------------------------------------------------------------


def test_document_is_asyncapi_3_for_contract_v1() -> None:
    assert DOCUMENT["asyncapi"] == "3.0.0"
    assert DOCUMENT["info"]["version"] == str(CONTRACT_VERSION)
    assert {server["protocol"] for server in DOCUMENT["servers"].values()} == {"mqtt", "mqtts"}
    topics = Topics("{gateway_id}")
    assert DOCUMENT["channels"]["events"]["address"] == topics.events
    assert DOCUMENT["channels"]["state"]["address"] == topics.state
    assert DOCUMENT["channels"]["commandReplies"]["address"] == topics.command_reply
    assert DOCUMENT["channels"]["commands"]["address"] == topics.commands.replace("+", "{command}")
    assert SCHEMAS["ContractVersion"]["const"] == CONTRACT_VERSION
    expected = {
        "events": ("send", 1, False),
        "state": ("send", 1, True),
        "commands": ("receive", 1, False),
        "commandReplies": ("send", 1, False),
    }
    seen = {}
    for operation in DOCUMENT["operations"].values():
        channel = deref(operation["channel"])
        channel_name = next(key for key, value in DOCUMENT["channels"].items() if value is channel)
        for message in operation["messages"]:
            assert deref(message) in [deref(m) for m in channel["messages"].values()]
        mqtt = operation["bindings"]["mqtt"]
        seen[channel_name] = (operation["action"], mqtt["qos"], mqtt["retain"])
    assert seen == expected
    names = DOCUMENT["channels"]["commands"]["parameters"]["command"]["enum"]
    assert names == [name.value for name in CommandName]


def test_every_ref_in_the_document_resolves() -> None:
    found = list(refs(DOCUMENT))
    assert found
    for ref in found:
        assert ref.startswith("#/"), f"{ref}: the document is self-contained"
        resolve(ref)  # raises referencing.exceptions.Unresolvable


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid_draft_2020_12_and_resolves(name: str) -> None:
    schema = SCHEMAS[name]
    Draft202012Validator.check_schema(schema)
    for ref in refs(schema):
        assert ref.startswith("#/components/schemas/"), ref
        Draft202012Validator.check_schema(resolve(ref))


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ("events", "eventBatch"),
        ("state", "gatewayState"),
        ("commands", "command"),
        ("commandReplies", "commandReply"),
    ],
)
def test_the_documents_own_examples_match_their_schemas(channel: str, message: str) -> None:
    examples = DOCUMENT["components"]["messages"][message]["examples"]
    assert examples
    check = validator(payload_ref(channel))
    for example in examples:
        assert_valid(check, example["payload"], f"example {example['name']}")


# --- every event type has a schema ------------------------------------------------------------


def test_every_event_type_has_a_schema_branch() -> None:
    branches = branch_types()
    missing = {t.value for t in EventType} - set(branches)
    assert not missing, f"event types without a schema in docs/asyncapi.yaml: {sorted(missing)}"
    stale = set(branches) - {t.value for t in EventType}
    assert not stale, f"schemas for event types the gateway does not emit: {sorted(stale)}"
    common = {"seq", "id", "type", "ts", "mono"}
    for event_type, branch in branches.items():
        assert branch["additionalProperties"] is False, event_type
        assert common <= set(branch["required"]), event_type
        assert set(branch["required"]) <= set(branch["properties"]), event_type


# --- the schemas are strict -----------------------------------------------------------------


def _example(message: str, name: str) -> dict[str, Any]:
    examples = DOCUMENT["components"]["messages"][message]["examples"]
    payload: dict[str, Any] = next(e["payload"] for e in examples if e["name"] == name)
    return copy.deepcopy(payload)


def _decision(envelope: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in envelope["events"] if e["type"] == EventType.ACCESS_DECISION.value)


def _status(envelope: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in envelope["events"] if e["type"] == EventType.DEVICE_STATUS.value)


def _revoked(envelope: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in envelope["events"] if "credential_status" in e)


Tamper = Callable[[dict[str, Any]], object]

ENVELOPE_TAMPERING: dict[str, Tamper] = {
    "missing seq": lambda env: _decision(env).pop("seq"),
    "unknown event field": lambda env: _decision(env).update(note="extra"),
    "unknown envelope field": lambda env: env.update(batch=1),
    "wrong result value": lambda env: _decision(env).update(result="maybe"),
    "allow with a refusal reason": lambda env: _decision(env).update(reason="expired"),
    "deny with granted": lambda env: _revoked(env).update(reason="granted"),
    "unknown reason": lambda env: _decision(env).update(reason="tailgating"),
    "raw credential value": lambda env: _decision(env)["credential"].update(value=RAW_CARD),
    "unknown credential kind": lambda env: _decision(env)["credential"].update(kind="pin"),
    "upper-case hash": lambda env: _decision(env)["credential"].update(hash="AB" * 16),
    "short hash": lambda env: _decision(env)["credential"].update(hash="ab" * 8),
    "missing person": lambda env: _decision(env).pop("person"),
    "active credential_status": lambda env: _revoked(env).update(credential_status="active"),
    "UUIDv4 event id": lambda env: _decision(env).update(id=str(uuid4())),
    "ts without milliseconds": lambda env: _decision(env).update(ts="2026-11-28T09:12:03+08:00"),
    "ts without offset": lambda env: _decision(env).update(ts="2026-11-28T09:12:03.123"),
    "negative mono": lambda env: _decision(env).update(mono=-1.0),
    "seq 0": lambda env: _decision(env).update(seq=0),
    "string seq": lambda env: _decision(env).update(seq="41"),
    "unknown event type": lambda env: _status(env).update(type="door.alarm"),
    "status without error": lambda env: _status(env).pop("error"),
    "status online as string": lambda env: _status(env).update(online="yes"),
    "contract version 2": lambda env: env.update(v=2),
    "gateway id with a slash": lambda env: env.update(gw="GW/0001"),
    "no events": lambda env: env.update(events=[]),
}

STATE_TAMPERING: dict[str, Tamper] = {
    "missing online": lambda state: state.pop("online"),
    "unknown field": lambda state: state.update(uptime=5),
    "negative backlog": lambda state: state.update(backlog=-1),
    "fractional head_seq": lambda state: state.update(head_seq=1.5),
    "online as number": lambda state: state.update(online=1),
    "missing ts": lambda state: state.pop("ts"),
    "negative acked_seq": lambda state: state.update(acked_seq=-1),
    "acked_seq as text": lambda state: state.update(acked_seq="12"),
    "negative oldest_unacked_s": lambda state: state.update(oldest_unacked_s=-0.5),
}


@pytest.mark.parametrize("tamper", ENVELOPE_TAMPERING.values(), ids=list(ENVELOPE_TAMPERING))
def test_a_tampered_envelope_fails(tamper: Tamper) -> None:
    check = validator(payload_ref("events"))
    envelope = _example("eventBatch", "decisionAndStatus")
    assert_valid(check, envelope, "the untouched example")
    tamper(envelope)
    assert not check.is_valid(envelope), json.dumps(envelope)


@pytest.mark.parametrize("tamper", STATE_TAMPERING.values(), ids=list(STATE_TAMPERING))
def test_a_tampered_state_fails(tamper: Tamper) -> None:
    check = validator(payload_ref("state"))
    state = _example("gatewayState", "birth")
    assert_valid(check, state, "the untouched example")
    tamper(state)
    assert not check.is_valid(state), json.dumps(state)


# --- personal data travels only sealed ------------------------------------------------------


def _captured(envelope: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in envelope["events"] if e["type"] == "registration.captured")


CAPTURE_TAMPERING: dict[str, Tamper] = {
    "full ID number in clear": lambda env: _captured(env).update(id_number="11010519491231002X"),
    "name in clear": lambda env: _captured(env).update(name="张三"),
    "phone in clear": lambda env: _captured(env).update(phone="+86 138 0013 8000"),
    "workplace in clear": lambda env: _captured(env).update(workplace="Acme"),
    "voucher in clear": lambda env: _captured(env).update(voucher="RV1:ABC"),
    "unmasked id_masked": lambda env: _captured(env).update(id_masked="11010519491231002X"),
    "no box": lambda env: _captured(env).pop("sealed"),
    "box as text": lambda env: _captured(env).update(sealed="cGxhaW4"),
    "box version 2": lambda env: _captured(env)["sealed"].update(v=2),
    "box without kid": lambda env: _captured(env)["sealed"].pop("kid"),
    "box for a signing key id": lambda env: _captured(env)["sealed"].update(
        kid="k-0123456789abcdef"
    ),
    "box naming its algorithm": lambda env: _captured(env)["sealed"].update(alg="none"),
    "short encapsulated key": lambda env: _captured(env)["sealed"].update(enc="AAAA"),
    "ciphertext shorter than one padded block": lambda env: _captured(env)["sealed"].update(
        ct="A" * 100
    ),
    "padded base64": lambda env: _captured(env)["sealed"].update(
        ct=_captured(env)["sealed"]["ct"] + "=="
    ),
}


@pytest.mark.parametrize("tamper", CAPTURE_TAMPERING.values(), ids=list(CAPTURE_TAMPERING))
def test_a_captures_personal_fields_travel_only_in_its_sealed_box(tamper: Tamper) -> None:
    check = validator(payload_ref("events"))
    envelope = _example("eventBatch", "sealedCapture")
    assert_valid(check, envelope, "the untouched example")
    tamper(envelope)
    assert not check.is_valid(envelope), json.dumps(envelope, ensure_ascii=False)


def test_no_other_event_schema_has_a_field_for_full_personal_data() -> None:
    personal = {"id_number", "name", "phone", "workplace", "voucher", "household_address"}
    for event_type, branch in branch_types().items():
        clear = personal & set(branch["properties"])
        assert not clear, f"{event_type} carries {sorted(clear)} in clear"
    assert set(SEALED_FIELDS) == {EventType.REGISTRATION_CAPTURED.value}
    assert set(SCHEMAS["CapturedPersonalFields"]["required"]) == set(
        SEALED_FIELDS[EventType.REGISTRATION_CAPTURED.value]
    )


def test_the_gateways_sealed_capture_matches_the_contract_and_opens_only_at_the_platform() -> None:
    platform = OpeningKey.generate()
    number = make_id_number(7).value
    sent = record_json("T-01", 7, phone="+86 138 0013 8000", workplace="Acme 有限公司")
    record = CapturedRecord.model_validate_json(json.dumps(sent))
    body = captured_body(record, b"\x01" * 32, None, sealing=platform.public, gateway_id="GW-9")
    clock = SystemClock()
    event = new_event(EventType.REGISTRATION_CAPTURED, clock.now(), clock.monotonic(), body)
    wire = {"seq": 1, **json.loads(event.payload)}
    assert_valid(validator("#/components/schemas/Event"), wire, "the gateway's capture")
    for secret in (number, sent["name"], "138 0013", "Acme"):
        assert secret not in event.payload
    (clear,) = opened([wire], "GW-9", [platform])
    assert (clear["id_number"], clear["name"], clear["phone"], clear["workplace"]) == (
        number,
        sent["name"],
        sent["phone"],
        sent["workplace"],
    )
    with pytest.raises(SealError) as wrong_gateway:
        opened([wire], "GW-8", [platform])
    assert wrong_gateway.value.problem is SealProblem.FAILED_AUTHENTICATION


# --- enrol by tap: what CardCaptures records ---------------------------------------------------


def _capture_events() -> list[dict[str, Any]]:
    """The events a real CardCaptures records for one arming and the tap it takes, as the
    outbox would send them (with a seq)."""
    recorded: list[OutboxEvent] = []
    clock = ManualClock(datetime(2026, 11, 28, 9, 12, tzinfo=timezone(timedelta(hours=8))))
    captures = CardCaptures(clock, record=recorded.append)
    captures.arm("landlord_a", "unit-101")
    clock.advance(2)
    read = CardRead("unit-101-line-0", "unit-101", Credential(CredentialKind.CARD_UID, RAW_CARD), 0)
    assert captures.offer(read)
    return [{"seq": n, **json.loads(e.payload)} for n, e in enumerate(recorded, start=50)]


def test_enrol_capture_events_match_the_contract_and_carry_no_card_value() -> None:
    check = validator("#/components/schemas/Event")
    armed, captured = _capture_events()
    assert (armed["stage"], captured["stage"]) == ("armed", "captured")
    assert armed["capture"] == captured["capture"]
    for event in (armed, captured):
        assert event["type"] == EventType.ENROL_CAPTURE.value
        assert_valid(check, event, f"enrol.capture {event['stage']}")
        assert RAW_CARD not in json.dumps(event)


ENROL_TAMPERING: dict[str, Callable[[dict[str, Any], dict[str, Any]], object]] = {
    "captured without the card": lambda _armed, captured: captured.pop("credential"),
    "armed with a card": lambda armed, captured: armed.update(credential=captured["credential"]),
    "the card's value": lambda _armed, captured: captured["credential"].update(value=RAW_CARD),
    "an unknown stage": lambda armed, _captured: armed.update(stage="cancelled"),
    "no owner": lambda armed, _captured: armed.pop("owner"),
    "a voucher taken": lambda _armed, captured: captured["credential"].update(kind="voucher"),
}


@pytest.mark.parametrize("tamper", ENROL_TAMPERING.values(), ids=list(ENROL_TAMPERING))
def test_a_tampered_enrol_capture_event_fails(
    tamper: Callable[[dict[str, Any], dict[str, Any]], object],
) -> None:
    check = validator("#/components/schemas/Event")
    armed, captured = _capture_events()
    tamper(armed, captured)
    assert not (check.is_valid(armed) and check.is_valid(captured))


# --- the platform's acknowledgement and replay ------------------------------------------------


def _signed(name: CommandName, body: dict[str, Any]) -> dict[str, Any]:
    key = SigningKey.generate()
    document: dict[str, Any] = json.loads(
        sign(key, gateway_id="GW-0001", name=name, body=body, now=1_795_832_400)
    )
    return document


def test_signed_ack_and_replay_commands_match_the_contract_and_the_gateways_models() -> None:
    check = validator(payload_ref("commands"))
    ack = _signed(CommandName.ACK, {"through_seq": 1042})
    replay = _signed(CommandName.REPLAY, {"from_seq": 33})
    assert_valid(check, ack, "a signed ack")
    assert_valid(check, replay, "a signed replay")
    assert Ack.model_validate(ack["body"]).through_seq == 1042
    assert Replay.model_validate(replay["body"]).from_seq == 33


ACK_TAMPERING: dict[str, dict[str, Any]] = {
    "negative seq": {"through_seq": -1},
    "seq as text": {"through_seq": "12"},
    "fractional seq": {"through_seq": 1.5},
    "no seq": {},
    "an extra member": {"through_seq": 3, "gaps": []},
}


@pytest.mark.parametrize("body", ACK_TAMPERING.values(), ids=list(ACK_TAMPERING))
def test_a_malformed_ack_body_fails_the_contract_and_the_gateway(body: dict[str, Any]) -> None:
    document = _example("command", "ack")
    document["body"] = body
    assert not validator(payload_ref("commands")).is_valid(document), json.dumps(body)
    with pytest.raises(ValidationError):
        Ack.model_validate(body)


@pytest.mark.parametrize("body", [{"from_seq": 0}, {"from_seq": "1"}, {}, {"from_seq": 1, "x": 1}])
def test_a_malformed_replay_body_fails_the_contract_and_the_gateway(body: dict[str, Any]) -> None:
    document = _signed(CommandName.REPLAY, {"from_seq": 1})
    document["body"] = body
    assert not validator(payload_ref("commands")).is_valid(document), json.dumps(body)
    with pytest.raises(ValidationError):
        Replay.model_validate(body)


def test_the_state_the_gateway_publishes_carries_the_ack_cursor_per_the_contract() -> None:
    state = GatewayState(
        "GW-0001",
        online=True,
        ts="2026-11-28T09:10:00.250+08:00",
        backlog=0,
        head_seq=40,
        acked_seq=12,
        oldest_unacked_s=3.25,
    )
    document = json.loads(state.encode())
    assert_valid(validator(payload_ref("state")), document, "the birth with its ack cursor")
    assert (document["acked_seq"], document["oldest_unacked_s"]) == (12, 3.25)
