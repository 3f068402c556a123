"""ID numbers and credential parsing: pure rules, table-tested."""

from __future__ import annotations

import pytest

from gateway.domain.credentials import (
    Credential,
    CredentialError,
    CredentialKind,
    RejectReason,
    parse_credential,
)
from gateway.domain.ids import IdNumber, check_character, mask

# GB 11643-1999's own example number and a few computed ones.
VALID = ["11010519491231002X", "440524188001010014", "33010619900101123X"]


@pytest.mark.parametrize("value", VALID)
def test_valid_id_numbers(value: str) -> None:
    number = IdNumber(value)
    assert number.value == value
    assert number.region == value[:6]
    assert str(number) == number.masked == value[:3] + "*" * 11 + value[-4:]
    assert value not in repr(number)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("110105194912310021", "check character"),
        ("110105194913310021", "birth date"),
        ("01010519491231002X", "17 digits"),
        ("1101051949123100", "17 digits"),
        ("11010519491231002Y", "17 digits"),
    ],
)
def test_invalid_id_numbers(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        IdNumber(value)


def test_lowercase_x_is_normalised() -> None:
    assert IdNumber("11010519491231002x").value.endswith("X")


def test_check_character_and_mask() -> None:
    assert check_character("11010519491231002") == "X"
    assert mask("1234567") == "*******"
    assert mask("04A1B2C3D4") == "04A***C3D4"


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        (CredentialKind.CARD_UID, "04a1b2c3d4", "04A1B2C3D4"),
        (CredentialKind.CARD_UID, " 04:A1:B2:C3 ", "04A1B2C3"),
        (CredentialKind.ID_NUMBER, "11010519491231002x", "11010519491231002X"),
        (CredentialKind.VOUCHER, "RV1:6BFOXN*TS0BI$ZD4N9:9", "RV1:6BFOXN*TS0BI$ZD4N9:9"),
    ],
)
def test_parse_credential_normalises(kind: CredentialKind, text: str, value: str) -> None:
    assert parse_credential(kind, text) == Credential(kind, value)


@pytest.mark.parametrize(
    ("kind", "text", "reason"),
    [
        (CredentialKind.CARD_UID, "", RejectReason.EMPTY),
        (CredentialKind.CARD_UID, "   ", RejectReason.EMPTY),
        (CredentialKind.CARD_UID, "0" * 2000, RejectReason.TOO_LONG),
        (CredentialKind.CARD_UID, "04A1\x07B2", RejectReason.BINARY),
        (CredentialKind.CARD_UID, "卡号1234", RejectReason.BINARY),
        (CredentialKind.CARD_UID, "not-a-card", RejectReason.BAD_FORMAT),
        (CredentialKind.CARD_UID, "04A", RejectReason.BAD_FORMAT),
        (CredentialKind.ID_NUMBER, "110105194912310021", RejectReason.BAD_CHECK),
        (CredentialKind.ID_NUMBER, "hello", RejectReason.BAD_FORMAT),
        (CredentialKind.VOUCHER, "RV2:ABC", RejectReason.BAD_FORMAT),
        (CredentialKind.VOUCHER, "RV1:abc", RejectReason.BAD_FORMAT),
    ],
)
def test_parse_credential_rejects_with_reason(
    kind: CredentialKind, text: str, reason: RejectReason
) -> None:
    with pytest.raises(CredentialError) as caught:
        parse_credential(kind, text)
    assert caught.value.reason is reason


def test_credential_str_is_masked() -> None:
    credential = Credential(CredentialKind.ID_NUMBER, "11010519491231002X")
    assert "19491231" not in str(credential)
    assert "19491231" not in repr(credential)
