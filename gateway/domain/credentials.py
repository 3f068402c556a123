"""Credentials as a door reader presents them, validated before anything trusts them.

A reader hands over raw text; `parse_credential` turns it into a `Credential`
or raises `CredentialError` with a reason the gateway counts. Reasons are an
enum because callers branch on them and metrics group by them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from gateway.domain.ids import IdNumber, mask
from gateway.errors import RentgateError

MAX_CREDENTIAL_LENGTH = 1024
"""Longest value any kind accepts (a voucher QR payload is the longest)."""

_CARD_UID = re.compile(r"^[0-9A-F]{4,20}$")
_CARD_SEPARATORS = re.compile(r"[\s:-]")
_VOUCHER = re.compile(r"^RV1:[0-9A-Z $%*+./:-]{1,1020}$")
_VOUCHER_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class CredentialKind(StrEnum):
    """What a presented value is."""

    CARD_UID = "card_uid"
    """A card's chip serial in hex: ID card serial, permit IC card, key fob."""
    ID_NUMBER = "id_number"
    """An 18-character resident ID number, as a SAM reader returns it."""
    VOUCHER = "voucher"
    """A residence-registration voucher: presented as its QR payload (`RV1:` + Base45),
    enrolled and decided by its voucher id (a UUID) once the payload has been verified."""


class CredentialStatus(StrEnum):
    """Life cycle of an enrolled credential (Shenzhen door-access operations)."""

    ACTIVE = "active"
    LOST = "lost"
    REVOKED = "revoked"
    RETURNED = "returned"
    CANCELLED = "cancelled"


class RejectReason(StrEnum):
    """Why a presented value was not accepted as a credential."""

    EMPTY = "empty"
    TOO_LONG = "too_long"
    BINARY = "binary"
    BAD_FORMAT = "bad_format"
    BAD_CHECK = "bad_check"
    FRAME_ERROR = "frame_error"
    """A device's protocol frame was corrupt (checksum, length, cut short)."""
    CARD_READ_FAILED = "card_read_failed"
    """The reader could not read the card (moved away too soon, select/read failed)."""
    CARD_NOT_GENUINE = "card_not_genuine"
    """The card failed the SAM's authentication: possibly forged or cloned."""
    UNSUPPORTED_CARD = "unsupported_card"
    """A card kind no credential exists for (a foreigner's permanent-residence card)."""
    DEVICE_FAULT = "device_fault"
    """The reader reported its own fault (SAM self-test, unexpected reply)."""


class CredentialError(RentgateError, ValueError):
    """A presented value is not a credential; `reason` says why."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Credential:
    """A validated credential value. `str()` is masked; the value is personal data."""

    kind: CredentialKind
    value: str

    @property
    def masked(self) -> str:
        if self.kind is CredentialKind.VOUCHER:
            return self.value[:8] + "…"  # RV1:… text, or the first 8 of a voucher id
        return mask(self.value)

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.masked}"

    def __repr__(self) -> str:
        return f"Credential({self.kind.value}, {self.masked!r})"


def parse_credential(kind: CredentialKind, text: str) -> Credential:
    """Validate and normalise a raw value of the given kind."""
    value = text.strip()
    if not value:
        raise CredentialError(RejectReason.EMPTY, "empty value")
    if len(value) > MAX_CREDENTIAL_LENGTH:
        raise CredentialError(RejectReason.TOO_LONG, f"{len(value)} characters")
    if not value.isprintable() or not value.isascii():
        raise CredentialError(RejectReason.BINARY, "non-printable or non-ASCII characters")
    if kind is CredentialKind.CARD_UID:
        uid = _CARD_SEPARATORS.sub("", value).upper()
        if not _CARD_UID.match(uid):
            raise CredentialError(RejectReason.BAD_FORMAT, "card serial must be 4-20 hex digits")
        return Credential(kind, uid)
    if kind is CredentialKind.ID_NUMBER:
        try:
            return Credential(kind, IdNumber(value).value)
        except ValueError as exc:
            reason = RejectReason.BAD_CHECK if "check" in str(exc) else RejectReason.BAD_FORMAT
            raise CredentialError(reason, str(exc)) from exc
    if _VOUCHER_ID.match(value.lower()):
        return Credential(kind, value.lower())
    if not _VOUCHER.match(value):
        raise CredentialError(
            RejectReason.BAD_FORMAT, "voucher must be RV1: followed by Base45, or a voucher id"
        )
    return Credential(kind, value)
