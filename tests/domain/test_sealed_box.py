"""Sealed boxes: only the platform's private key opens them, and only in the event they were
made for; anything forged, corrupted or moved fails with a reason."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.events import EventType
from gateway.domain.personal import SEALED_FIELDS, open_event, seal_fields
from gateway.domain.sealed_box import (
    OpeningKey,
    SealError,
    SealingKey,
    SealingKeyError,
    SealProblem,
    open_box,
)

FIELDS = {
    "id_number": "11010519491231002X",
    "name": "张三",
    "phone": "+86 138 0013 8000",
    "workplace": None,
    "voucher": None,
}
CAPTURED = EventType.REGISTRATION_CAPTURED
RECORD = "0192f1c0-0000-7000-8000-000000000001"


def _event(key: SealingKey, gateway: str = "GW-1", record: str = RECORD) -> dict[str, Any]:
    box = seal_fields(key, FIELDS, gateway_id=gateway, event_type=CAPTURED, subject=record)
    return {"seq": 1, "type": CAPTURED.value, "record": record, "sealed": box}


def test_a_box_opens_with_the_private_key_and_gives_back_exactly_what_was_sealed() -> None:
    platform = OpeningKey.generate()
    event = _event(platform.public)
    text = json.dumps(event, ensure_ascii=False)
    for secret in (FIELDS["id_number"], "张三", "13800"):
        assert secret not in text
    assert event["sealed"]["kid"] == platform.kid
    clear = {k: v for k, v in event.items() if k != "sealed"}
    assert open_event([platform], "GW-1", event) == clear | FIELDS


def test_two_boxes_of_the_same_fields_differ_and_hide_the_length_of_a_name() -> None:
    key = OpeningKey.generate().public
    first, second = (_event(key)["sealed"] for _ in range(2))
    assert first["enc"] != second["enc"]
    assert first["ct"] != second["ct"]
    longer = seal_fields(
        key, FIELDS | {"name": "张三丰"}, gateway_id="GW-1", event_type=CAPTURED, subject=RECORD
    )
    assert len(longer["ct"]) == len(first["ct"])  # padded to the same size


def _flip(text: str, at: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    raw[at] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


TAMPERING = {
    "ciphertext bit": (lambda e: e["sealed"].update(ct=_flip(e["sealed"]["ct"], 3)),
                       SealProblem.FAILED_AUTHENTICATION),
    "tag bit": (lambda e: e["sealed"].update(ct=_flip(e["sealed"]["ct"], -1)),
                SealProblem.FAILED_AUTHENTICATION),
    "encapsulated key bit": (lambda e: e["sealed"].update(enc=_flip(e["sealed"]["enc"], 5)),
                          SealProblem.FAILED_AUTHENTICATION),
    "moved to another record": (lambda e: e.update(record=RECORD[:-1] + "2"),
                                SealProblem.FAILED_AUTHENTICATION),
    "moved to another event type": (lambda e: e.update(type="alert.raised"),
                                    SealProblem.MALFORMED),
    "unknown key id": (lambda e: e["sealed"].update(kid="x-0000000000000000"),
                       SealProblem.UNKNOWN_KEY),
    "version 2": (lambda e: e["sealed"].update(v=2), SealProblem.UNKNOWN_VERSION),
    "version true": (lambda e: e["sealed"].update(v=True), SealProblem.UNKNOWN_VERSION),
    "truncated": (lambda e: e["sealed"].update(ct=e["sealed"]["ct"][:20]), SealProblem.MALFORMED),
    "not base64": (lambda e: e["sealed"].update(ct="***"), SealProblem.MALFORMED),
    "extra member": (lambda e: e["sealed"].update(alg="none"), SealProblem.MALFORMED),
    "not an object": (lambda e: e.update(sealed="plain"), SealProblem.MALFORMED),
    "enc a number": (lambda e: e["sealed"].update(enc=7), SealProblem.MALFORMED),
}  # fmt: skip


@pytest.mark.parametrize(("tamper", "problem"), TAMPERING.values(), ids=list(TAMPERING))
def test_a_forged_corrupted_or_moved_box_fails_to_open_with_a_reason(
    tamper: Any, problem: SealProblem
) -> None:
    platform = OpeningKey.generate()
    event = _event(platform.public)
    tamper(event)
    with pytest.raises(SealError) as raised:
        open_event([platform], "GW-1", event)
    assert raised.value.problem is problem
    assert problem.value in str(raised.value)


def test_a_box_from_another_gateway_or_for_another_key_does_not_open() -> None:
    platform, other = OpeningKey.generate(), OpeningKey.generate()
    event = _event(platform.public)
    with pytest.raises(SealError) as moved:
        open_event([platform], "GW-2", event)
    assert moved.value.problem is SealProblem.FAILED_AUTHENTICATION
    with pytest.raises(SealError) as unknown:
        open_event([other], "GW-1", event)
    assert unknown.value.problem is SealProblem.UNKNOWN_KEY
    # A forger who knows the public key can make a box, but only of their own content,
    # and a box re-labelled with the real key id does not open under the real key.
    forged = copy.deepcopy(_event(other.public))
    forged["sealed"]["kid"] = platform.kid
    with pytest.raises(SealError) as relabelled:
        open_event([platform], "GW-1", forged)
    assert relabelled.value.problem is SealProblem.FAILED_AUTHENTICATION


def test_after_rotation_the_platform_opens_boxes_of_either_key() -> None:
    old, new = OpeningKey.generate(), OpeningKey.generate()
    for key in (old, new):
        assert open_event([old, new], "GW-1", _event(key.public))["name"] == "张三"


def test_a_box_holding_other_fields_is_refused() -> None:
    platform = OpeningKey.generate()
    context = "GW-1\0registration.captured\0" + RECORD
    box = platform.public.seal(b'{"name":"x"}', context)
    event = {"type": CAPTURED.value, "record": RECORD, "sealed": box}
    with pytest.raises(SealError) as raised:
        open_event([platform], "GW-1", event)
    assert raised.value.problem is SealProblem.MALFORMED
    assert open_box([platform], box, context) == b'{"name":"x"}'
    with pytest.raises(ValueError, match="seals exactly"):
        seal_fields(
            platform.public, {"name": "x"}, gateway_id="G", event_type=CAPTURED, subject="r"
        )
    assert set(SEALED_FIELDS[CAPTURED.value]) == set(FIELDS)


def test_keys_round_trip_through_files_and_raw_base64(tmp_path: Path) -> None:
    platform = OpeningKey.generate()
    private, public = platform.save(tmp_path)
    assert private.stat().st_mode & 0o777 == 0o600
    assert private.name == f"{platform.kid}.key"
    assert OpeningKey.load(private).kid == platform.kid
    assert SealingKey.load(public) == platform.public
    raw = base64.b64encode(platform.public.raw)
    assert SealingKey.from_text(raw + b"\n") == platform.public
    for bad in (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", b"abc", b"!!"):
        with pytest.raises(SealingKeyError):
            SealingKey.from_text(bad)
    with pytest.raises(SealingKeyError, match="cannot read"):
        SealingKey.load(tmp_path / "missing.pub")
    with pytest.raises(SealingKeyError, match=r"not an X25519 private key|not an unencrypted"):
        OpeningKey.load(public)


def test_a_low_order_public_key_is_refused_when_sealing() -> None:
    with pytest.raises(SealingKeyError, match="not a usable"):
        SealingKey(bytes(32)).seal(b"x", "c")
