"""The residence-registration voucher (居住登记凭证, domain.md R1): a QR code verified offline.

Wire form, outermost first (the EU Digital COVID Certificate's shape):
`"RV1:" + Base45(zlib(COSE_Sign1(EdDSA, kid in the protected header, CBOR claims)))`.
The claims are a CBOR map with short integer keys, all required, nothing else:

| key | claim | CBOR type |
| --- | --- | --- |
| 1 | voucher id | bstr, the 16 bytes of a UUID |
| 2 | registration id | tstr |
| 3 | holder's name | tstr |
| 4 | holder's ID number masked to first 3 and last 4 | tstr, 18 characters |
| 5 | ID binding: first 16 bytes of HMAC-SHA256(binding key, full ID number) | bstr |
| 6 | building | tstr |
| 7 | unit | tstr |
| 8 | registered on | uint, days since 1970-01-01 |
| 9 | valid until (inclusive) | uint, days since 1970-01-01 |
| 10 | issued at | uint, seconds since 1970-01-01T00:00Z |

The issuer key id is the COSE kid (`k-` + 16 hex digits, as ASCII bytes). The
binding lets a door holding the platform's binding key check that the ID card
a SAM reader just read is the holder's; a terminal without that key can still
compare the masked number. Every refusal carries a `VoucherRejection`.
"""

from __future__ import annotations

import hmac
import re
import uuid
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

import cbor2

from gateway.domain import base45, cose
from gateway.domain.credentials import MAX_CREDENTIAL_LENGTH
from gateway.domain.ids import IdNumber
from gateway.domain.signing import SigningKey, VerifyKey
from gateway.errors import RentgateError

PREFIX = "RV1:"
MAX_TEXT = MAX_CREDENTIAL_LENGTH
"""Longest voucher text looked at; the same bound door readers apply to any credential."""
MAX_INFLATED = 4096
"""Decompression stops here, so a few hundred bytes cannot expand into megabytes."""
CLOCK_SKEW = timedelta(days=1)
"""How far in the future an issue time may lie: issuer and door may sit in other time zones."""
BINDING_BYTES = 16
BINDING_KEY_BYTES = 32
_EPOCH = date(1970, 1, 1)
_MAX_SECONDS = 1 << 40
_MASKED_ID = re.compile(r"[1-9][0-9]{2}\*{11}[0-9]{3}[0-9X]")
_KID = re.compile(r"k-[0-9a-f]{16}")
_TEXT_LIMITS = {"registration_id": 32, "holder_name": 32, "building": 48, "unit": 16}
"""Characters per text claim: with the signature and ids, a voucher stays a small QR code."""


class VoucherRejection(StrEnum):
    """Why a text is not a valid voucher, in the order `verify` checks."""

    OVERSIZED = "oversized"
    WRONG_PREFIX = "wrong_prefix"
    BAD_BASE45 = "bad_base45"
    BAD_COMPRESSION = "bad_compression"
    BAD_COSE = "bad_cose"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    BAD_CLAIMS = "bad_claims"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"


class VoucherError(RentgateError, ValueError):
    """A text is not a valid voucher; `reason` says why, `detail` says where."""

    def __init__(self, reason: VoucherRejection, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


rejected: Counter[VoucherRejection] = Counter()
"""Texts `verify` refused, by reason (for the health report)."""


def binding_hash(binding_key: bytes, id_number: str) -> bytes:
    """Claim 5: ties a voucher to an ID card without carrying the full number."""
    if len(binding_key) != BINDING_KEY_BYTES:
        raise ValueError(f"a binding key is {BINDING_KEY_BYTES} bytes")
    number = IdNumber(id_number).value
    return hmac.digest(binding_key, number.encode("ascii"), "sha256")[:BINDING_BYTES]


def mask_name(name: str) -> str:
    """First character kept, the rest starred: enough to tell vouchers apart in a log."""
    return name[:1] + "*" * (len(name) - 1) if len(name) > 1 else "*"


@dataclass(frozen=True, slots=True)
class Voucher:
    """A voucher's claims. Once constructed, valid; `repr` masks the holder's name."""

    voucher_id: uuid.UUID
    registration_id: str
    holder_name: str
    id_masked: str
    id_binding: bytes
    building: str
    unit: str
    registered_on: date
    valid_until: date
    issued_at: datetime
    issuer: str | None = None
    """Key id that signed it: set by `verify`, taken from the key by `issue`."""

    def __post_init__(self) -> None:
        if not isinstance(self.voucher_id, uuid.UUID):
            raise ValueError("voucher id must be a UUID")
        for name, limit in _TEXT_LIMITS.items():
            value = getattr(self, name)
            if not (isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()):
                raise ValueError(f"{name} must be 1-{limit} printable characters")
            if value != value.strip():
                raise ValueError(f"{name} must not start or end with spaces")
        if not (isinstance(self.id_masked, str) and _MASKED_ID.fullmatch(self.id_masked)):
            raise ValueError("masked ID number must keep the first 3 and last 4 characters")
        if not (isinstance(self.id_binding, bytes) and len(self.id_binding) == BINDING_BYTES):
            raise ValueError(f"ID binding must be {BINDING_BYTES} bytes")
        if self.issuer is not None and not _KID.fullmatch(self.issuer):
            raise ValueError("issuer must be a key id (k- and 16 hex digits)")
        self._check_dates()

    def _check_dates(self) -> None:
        for name in ("registered_on", "valid_until"):
            value = getattr(self, name)
            if type(value) is not date or value < _EPOCH:
                raise ValueError(f"{name} must be a date from 1970 on")
        if self.valid_until < self.registered_on:
            raise ValueError("valid until is before registered on")
        moment = self.issued_at
        if not isinstance(moment, datetime) or moment.utcoffset() is None:
            raise ValueError("issued at must be a time with a time zone")
        moment = moment.astimezone(UTC).replace(microsecond=0)
        if not 0 <= moment.timestamp() < _MAX_SECONDS:
            raise ValueError("issued at is out of range")
        object.__setattr__(self, "issued_at", moment)
        if self.registered_on > moment.date() + CLOCK_SKEW:
            raise ValueError("registered on is after the voucher was issued")

    @classmethod
    def new(
        cls,
        *,
        registration_id: str,
        holder_name: str,
        id_number: IdNumber,
        binding_key: bytes,
        building: str,
        unit: str,
        registered_on: date,
        valid_until: date,
        issued_at: datetime,
        voucher_id: uuid.UUID | None = None,
    ) -> Voucher:
        """The platform's constructor: masks and binds the full ID number, which is not kept."""
        return cls(
            voucher_id=voucher_id or uuid.uuid4(),
            registration_id=registration_id,
            holder_name=holder_name,
            id_masked=id_number.masked,
            id_binding=binding_hash(binding_key, id_number.value),
            building=building,
            unit=unit,
            registered_on=registered_on,
            valid_until=valid_until,
            issued_at=issued_at,
        )

    def binds(self, id_number: str, binding_key: bytes) -> bool:
        """Is `id_number` (as a SAM reader read it) this voucher's holder? Constant-time."""
        try:
            number = IdNumber(id_number)
        except ValueError:
            return False
        expected = binding_hash(binding_key, number.value)
        return hmac.compare_digest(expected, self.id_binding) and number.masked == self.id_masked

    def shows(self, id_number: str) -> bool:
        """The weaker check without the binding key: do the visible characters agree?"""
        try:
            return IdNumber(id_number).masked == self.id_masked
        except ValueError:
            return False

    def __repr__(self) -> str:
        return (
            f"Voucher({self.voucher_id}, registration={self.registration_id!r}, "
            f"holder={mask_name(self.holder_name)!r}, id={self.id_masked!r}, "
            f"address={self.building!r}/{self.unit!r}, registered_on={self.registered_on}, "
            f"valid_until={self.valid_until}, issuer={self.issuer!r})"
        )


def issue(voucher: Voucher, key: SigningKey) -> str:
    """The voucher's `RV1:` text, signed by `key` (the platform's side)."""
    if voucher.issuer not in (None, key.kid):
        raise ValueError(f"voucher names issuer {voucher.issuer}, the key is {key.kid}")
    signed = cose.sign(cbor2.dumps(_claims(voucher)), key)
    text = PREFIX + base45.encode(zlib.compress(signed, 9))
    if len(text) > MAX_TEXT:
        raise ValueError(f"voucher would be {len(text)} characters, over {MAX_TEXT}")
    return text


def verify(text: str, keys: Mapping[str, VerifyKey], today: date) -> Voucher:
    """The voucher `text` carries, if a trusted key signed it and `today` is in its validity.

    `keys` maps key id to trusted key. Raises `VoucherError`; never anything else.
    """
    try:
        return _verify(text, keys, today)
    except VoucherError as exc:
        rejected[exc.reason] += 1
        raise


def _verify(text: str, keys: Mapping[str, VerifyKey], today: date) -> Voucher:
    if len(text) > MAX_TEXT:
        raise VoucherError(VoucherRejection.OVERSIZED, f"{len(text)} characters, over {MAX_TEXT}")
    if not text.startswith(PREFIX):
        raise VoucherError(VoucherRejection.WRONG_PREFIX, f"does not start with {PREFIX!r}")
    try:
        compressed = base45.decode(text[len(PREFIX) :])
    except base45.Base45Error as exc:
        raise VoucherError(VoucherRejection.BAD_BASE45, str(exc)) from exc
    try:
        sign1 = cose.parse(_inflate(compressed))
    except cose.CoseError as exc:
        raise VoucherError(VoucherRejection.BAD_COSE, str(exc)) from exc
    kid = sign1.kid.decode("ascii", errors="replace")
    key = keys.get(kid)
    if key is None:
        raise VoucherError(VoucherRejection.UNKNOWN_KEY, f"no trusted key {kid[:32]!r}")
    if not sign1.verify(key):
        raise VoucherError(VoucherRejection.BAD_SIGNATURE, f"not signed by {kid}")
    voucher = _voucher(sign1.payload, kid)
    if today > voucher.valid_until:
        raise VoucherError(
            VoucherRejection.EXPIRED, f"valid until {voucher.valid_until}, today is {today}"
        )
    if voucher.issued_at.date() > today + CLOCK_SKEW:
        issued = voucher.issued_at.isoformat()
        raise VoucherError(VoucherRejection.NOT_YET_VALID, f"issued {issued}, today is {today}")
    return voucher


def _inflate(compressed: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(compressed, MAX_INFLATED)
    except zlib.error as exc:
        raise VoucherError(VoucherRejection.BAD_COMPRESSION, f"not zlib data: {exc}") from exc
    if inflater.unconsumed_tail or (len(data) == MAX_INFLATED and not inflater.eof):
        raise VoucherError(VoucherRejection.BAD_COMPRESSION, f"expands past {MAX_INFLATED} bytes")
    if not inflater.eof:
        raise VoucherError(VoucherRejection.BAD_COMPRESSION, "zlib stream is cut short")
    if inflater.unused_data:
        raise VoucherError(VoucherRejection.BAD_COMPRESSION, "bytes after the zlib stream")
    return data


def _claims(voucher: Voucher) -> dict[int, Any]:
    return {
        1: voucher.voucher_id.bytes,
        2: voucher.registration_id,
        3: voucher.holder_name,
        4: voucher.id_masked,
        5: voucher.id_binding,
        6: voucher.building,
        7: voucher.unit,
        8: (voucher.registered_on - _EPOCH).days,
        9: (voucher.valid_until - _EPOCH).days,
        10: int(voucher.issued_at.timestamp()),
    }


_CLAIM_TYPES = {1: bytes, 2: str, 3: str, 4: str, 5: bytes, 6: str, 7: str, 8: int, 9: int, 10: int}


def _voucher(payload: bytes, kid: str) -> Voucher:
    """Signed claims to a `Voucher`; a signed but malformed claim set is still refused."""
    try:
        claims = cose.strict_loads(payload, "claim set")
        if not isinstance(claims, dict) or set(claims) != set(_CLAIM_TYPES):
            raise ValueError("claims must be a map of keys 1-10")
        for label, kind in _CLAIM_TYPES.items():
            if type(claims[label]) is not kind:
                raise ValueError(f"claim {label} must be {kind.__name__}")
        if any(type(label) is not int for label in claims):
            raise ValueError("claim keys must be integers")
        return Voucher(
            voucher_id=uuid.UUID(bytes=claims[1]),
            registration_id=claims[2],
            holder_name=claims[3],
            id_masked=claims[4],
            id_binding=claims[5],
            building=claims[6],
            unit=claims[7],
            registered_on=_EPOCH + timedelta(days=claims[8]),
            valid_until=_EPOCH + timedelta(days=claims[9]),
            issued_at=datetime.fromtimestamp(claims[10], UTC),
            issuer=kid,
        )
    except (cose.CoseError, ValueError, OverflowError, OSError) as exc:
        raise VoucherError(VoucherRejection.BAD_CLAIMS, str(exc)) from exc
