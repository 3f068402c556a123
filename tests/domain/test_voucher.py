"""The RV1 voucher: round trip, every rejection with its reason, Base45 vectors, QR size.

Each case of the brief's must-show list names the `VoucherRejection` it gets:
forged with another key (unknown_key, or bad_signature when it claims a trusted
kid), tampered (every byte position of the COSE structure and of the compressed
bytes), expired, unknown key id, truncated at every length, wrong prefix,
oversized, random payloads.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import zlib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import cbor2
import numpy as np
import pytest
import segno
import zxingcpp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain import base45, cose
from gateway.domain import voucher as vmod
from gateway.domain.ids import IdNumber
from gateway.domain.signing import SigningKey, VerifyKey
from gateway.domain.voucher import (
    PREFIX,
    Voucher,
    VoucherError,
    VoucherRejection,
    binding_hash,
    issue,
    verify,
)

R = VoucherRejection
KEY = SigningKey.generate()
OTHER = SigningKey.generate()
KEYS = {KEY.kid: KEY.public}
BINDING_KEY = bytes(range(32))
HOLDER = IdNumber("330106199003071236")
TODAY = date(2025, 6, 1)
QR_ONLY = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
SLOW = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def make(**changes: Any) -> Voucher:
    fields: dict[str, Any] = {
        "registration_id": "330106-2025-000123",
        "holder_name": "张伟",
        "id_number": HOLDER,
        "binding_key": BINDING_KEY,
        "building": "西溪花园7幢",
        "unit": "1203",
        "registered_on": date(2025, 3, 1),
        "valid_until": date(2026, 2, 28),
        "issued_at": datetime(2025, 3, 1, 8, 30, tzinfo=UTC),
        "voucher_id": UUID("5fa85a78-10d6-49ef-bf93-7e59687bfed0"),
    }
    return Voucher.new(**(fields | changes))


VOUCHER = make()
TEXT = issue(VOUCHER, KEY)
COMPRESSED = base45.decode(TEXT[len(PREFIX) :])
COSE = zlib.decompress(COMPRESSED)


def reason(text: str, keys: dict[str, VerifyKey] = KEYS, today: date = TODAY) -> R:
    with pytest.raises(VoucherError) as caught:
        verify(text, keys, today)
    return caught.value.reason


def outcome(text: str) -> Voucher | R:
    try:
        return verify(text, KEYS, TODAY)
    except VoucherError as exc:
        return exc.reason


def wrap(cose_bytes: bytes) -> str:
    return PREFIX + base45.encode(zlib.compress(cose_bytes, 9))


def signed(payload: bytes, key: SigningKey = KEY) -> str:
    return wrap(cose.sign(payload, key))


def sign1(protected: bytes, payload: bytes, key: SigningKey = KEY, **shape: Any) -> bytes:
    """A COSE_Sign1 built by hand, for headers `cose.sign` would never write."""
    signature = key.sign(cose.sig_structure(protected, payload))
    parts = [protected, shape.get("unprotected", {}), payload, shape.get("signature", signature)]
    return cbor2.dumps(cbor2.CBORTag(shape.get("tag", 18), parts))


# --- round trip ------------------------------------------------------------------------------


def test_round_trip_gives_back_every_claim_and_the_signer() -> None:
    got = verify(TEXT, KEYS, TODAY)
    assert got.issuer == KEY.kid
    assert got == Voucher(
        **{**{f: getattr(VOUCHER, f) for f in VOUCHER.__slots__}, "issuer": KEY.kid}
    )
    assert got.holder_name == "张伟"
    assert got.id_masked == "330***********1236"
    assert got.issued_at == datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
    assert got.building == "西溪花园7幢"
    assert got.unit == "1203"


def test_valid_on_its_last_day_and_expired_the_day_after() -> None:
    assert verify(TEXT, KEYS, VOUCHER.valid_until).voucher_id == VOUCHER.voucher_id
    assert reason(TEXT, today=VOUCHER.valid_until + timedelta(days=1)) is R.EXPIRED


def test_trusting_several_keys_finds_the_signer_by_kid() -> None:
    keys = {OTHER.kid: OTHER.public, KEY.kid: KEY.public}
    assert verify(TEXT, keys, TODAY).issuer == KEY.kid
    assert verify(issue(VOUCHER, OTHER), keys, TODAY).issuer == OTHER.kid


texts = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1, max_size=16
)


@SLOW
@given(
    name=texts,
    building=texts,
    unit=texts,
    registration=texts,
    registered=st.dates(date(2000, 1, 1), date(2040, 1, 1)),
    days=st.integers(0, 3650),
)
def test_any_valid_voucher_round_trips(
    name: str, building: str, unit: str, registration: str, registered: date, days: int
) -> None:
    voucher = make(
        holder_name=name,
        building=building,
        unit=unit,
        registration_id=registration,
        registered_on=registered,
        valid_until=registered + timedelta(days=days),
        issued_at=datetime(registered.year, registered.month, registered.day, tzinfo=UTC),
    )
    got = verify(issue(voucher, KEY), KEYS, registered)
    assert (got.holder_name, got.building, got.unit) == (name, building, unit)
    assert (got.registered_on, got.valid_until) == (voucher.registered_on, voucher.valid_until)


def test_repr_masks_the_name_and_never_shows_the_full_id_number() -> None:
    for text in (repr(VOUCHER), str(VOUCHER), repr(verify(TEXT, KEYS, TODAY))):
        assert "张*" in text
        assert "张伟" not in text
        assert HOLDER.value not in text
        assert "330***********1236" in text


# --- the must-show rejections ----------------------------------------------------------------


def test_forged_with_another_key_is_an_unknown_key() -> None:
    assert reason(issue(VOUCHER, OTHER)) is R.UNKNOWN_KEY


def test_forged_with_another_key_claiming_a_trusted_kid_is_a_bad_signature() -> None:
    protected = cbor2.dumps({1: -8, 4: KEY.kid.encode()})
    payload = cose.parse(COSE).payload
    assert reason(wrap(sign1(protected, payload, key=OTHER))) is R.BAD_SIGNATURE


def test_changed_claims_under_the_original_signature_are_a_bad_signature() -> None:
    parsed = cose.parse(COSE)
    claims = cbor2.loads(parsed.payload)
    claims[9] += 365  # a year more
    forged = cbor2.dumps(
        cbor2.CBORTag(18, [parsed.protected, {}, cbor2.dumps(claims), parsed.signature])
    )
    assert reason(wrap(forged)) is R.BAD_SIGNATURE


def _regions() -> Callable[[int], R]:
    """Expected reason for a flipped byte at each offset of the COSE structure."""
    parsed = cose.parse(COSE)
    kid_at = COSE.index(parsed.kid)
    payload_at = COSE.index(parsed.payload)
    signature_at = COSE.index(parsed.signature)

    def expected(i: int) -> R:
        if kid_at <= i < kid_at + len(parsed.kid):
            return R.UNKNOWN_KEY
        if payload_at <= i < payload_at + len(parsed.payload):
            return R.BAD_SIGNATURE
        if signature_at <= i < signature_at + len(parsed.signature):
            return R.BAD_SIGNATURE
        return R.BAD_COSE  # tag, array and string heads, header map, alg

    return expected


def test_tampered_cose_every_byte_flipped_is_rejected_with_the_reason_of_its_region() -> None:
    expected = _regions()
    seen: Counter[R] = Counter()
    for i in range(len(COSE)):
        flipped = bytearray(COSE)
        flipped[i] ^= 0xFF
        got = reason(wrap(bytes(flipped)))
        assert got is expected(i), f"byte {i}"
        seen[got] += 1
    assert seen[R.BAD_SIGNATURE] >= 64 + 100
    assert seen[R.UNKNOWN_KEY] == 18
    assert seen[R.BAD_COSE] >= 10


@SLOW
@given(st.data())
def test_tampered_cose_any_change_of_one_byte_is_rejected(data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(COSE) - 1), label="position")
    mask = data.draw(st.integers(1, 255), label="xor")
    flipped = bytearray(COSE)
    flipped[i] ^= mask
    assert reason(wrap(bytes(flipped))) in {R.BAD_COSE, R.UNKNOWN_KEY, R.BAD_SIGNATURE}


def test_tampered_compressed_every_byte_flipped_is_bad_compression() -> None:
    for i in range(len(COMPRESSED)):
        flipped = bytearray(COMPRESSED)
        flipped[i] ^= 0xFF
        assert reason(PREFIX + base45.encode(bytes(flipped))) is R.BAD_COMPRESSION, f"byte {i}"


@SLOW
@given(st.data())
def test_tampered_compressed_never_yields_a_different_voucher(data: st.DataObject) -> None:
    """The zlib layer is malleable in a few bits (FLEVEL, final padding) that change no
    output: such a text decodes to the very same signed bytes, never to other claims."""
    i = data.draw(st.integers(0, len(COMPRESSED) - 1), label="position")
    mask = data.draw(st.integers(1, 255), label="xor")
    flipped = bytearray(COMPRESSED)
    flipped[i] ^= mask
    got = outcome(PREFIX + base45.encode(bytes(flipped)))
    if isinstance(got, Voucher):
        assert zlib.decompress(bytes(flipped)) == COSE
        assert got == verify(TEXT, KEYS, TODAY)
    else:
        assert got is R.BAD_COMPRESSION


def test_tampered_text_every_character_changed_is_rejected() -> None:
    for i in range(len(PREFIX), len(TEXT)):
        char = base45.ALPHABET[(base45.ALPHABET.index(TEXT[i]) + 1) % 45]
        changed = TEXT[:i] + char + TEXT[i + 1 :]
        assert reason(changed) in {R.BAD_BASE45, R.BAD_COMPRESSION}, f"char {i}"


def test_expired() -> None:
    old = issue(make(valid_until=date(2025, 5, 31)), KEY)
    with pytest.raises(VoucherError, match=r"expired: valid until 2025-05-31, today is 2025-06-01"):
        verify(old, KEYS, TODAY)


def test_issued_in_the_future_beyond_the_skew_is_not_yet_valid() -> None:
    tomorrow = datetime(2025, 6, 2, 23, 59, tzinfo=UTC)
    assert verify(issue(make(issued_at=tomorrow), KEY), KEYS, TODAY).issued_at == tomorrow
    later = make(issued_at=datetime(2025, 6, 3, tzinfo=UTC))
    assert reason(issue(later, KEY)) is R.NOT_YET_VALID


def test_unknown_key_id() -> None:
    assert reason(TEXT, keys={}) is R.UNKNOWN_KEY
    assert reason(TEXT, keys={OTHER.kid: OTHER.public}) is R.UNKNOWN_KEY


def test_truncated_at_every_length_is_rejected() -> None:
    for cut in range(len(TEXT)):
        got = reason(TEXT[:cut])
        body = cut - len(PREFIX)
        if body < 0:
            assert got is R.WRONG_PREFIX, cut
        elif body % 3 == 1:
            assert got is R.BAD_BASE45, cut
        elif body % 3 == 0:
            assert got is R.BAD_COMPRESSION, cut  # whole bytes, but the zlib stream is cut short
        else:
            assert got in {R.BAD_BASE45, R.BAD_COMPRESSION}, cut  # a 2-char tail may exceed 255


@pytest.mark.parametrize(
    "text",
    ["", "RV1", "RV2:" + TEXT[4:], "rv1:" + TEXT[4:], "HC1:" + TEXT[4:], " " + TEXT, TEXT[4:]],
)
def test_wrong_prefix(text: str) -> None:
    assert reason(text) is R.WRONG_PREFIX


def test_oversized_is_refused_before_decoding_and_the_limit_is_inclusive() -> None:
    assert reason(TEXT + "0" * (vmod.MAX_TEXT - len(TEXT) + 1)) is R.OVERSIZED
    assert reason("x" * 1_000_000) is R.OVERSIZED
    at_limit = PREFIX + "0" * (vmod.MAX_TEXT - len(PREFIX))
    assert len(at_limit) == vmod.MAX_TEXT
    assert reason(at_limit) is not R.OVERSIZED


@SLOW
@given(st.text(max_size=1100))
def test_random_text_is_rejected_never_a_crash(text: str) -> None:
    assert reason(text) in set(R)


@SLOW
@given(st.binary(max_size=700))
def test_random_base45_payloads_are_rejected(raw: bytes) -> None:
    assert reason(PREFIX + base45.encode(raw)) in {R.BAD_COMPRESSION, R.BAD_COSE}


@SLOW
@given(st.binary(max_size=700))
def test_random_compressed_payloads_are_bad_cose(raw: bytes) -> None:
    assert reason(wrap(raw)) is R.BAD_COSE


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.integers(-10, 12), inner),
    max_leaves=20,
)


@SLOW
@given(cbor_values)
def test_random_cbor_in_every_slot_is_rejected(value: Any) -> None:
    protected = cbor2.dumps({1: -8, 4: KEY.kid.encode()})
    assert reason(wrap(cbor2.dumps(value))) is R.BAD_COSE
    assert reason(wrap(cbor2.dumps(cbor2.CBORTag(18, value)))) is R.BAD_COSE
    assert reason(wrap(sign1(cbor2.dumps(value), b"x"))) is R.BAD_COSE
    empty = value == {}  # the one unprotected header allowed: on to the claims, b"x"
    expected = R.BAD_CLAIMS if empty else R.BAD_COSE
    assert reason(wrap(sign1(protected, b"x", unprotected=value))) is expected
    # correctly signed by a trusted key, but not a claim set: still refused
    assert reason(signed(cbor2.dumps(value))) is R.BAD_CLAIMS


# --- other rejections ------------------------------------------------------------------------


def test_zip_bomb_stops_at_the_inflate_limit() -> None:
    bomb = wrap(b"\0" * 500_000)
    assert len(bomb) < vmod.MAX_TEXT  # 500 kB of zeros fit in the text limit ...
    with pytest.raises(VoucherError, match="expands past 4096 bytes") as caught:
        verify(bomb, KEYS, TODAY)  # ... and inflate stops at 4 KiB
    assert caught.value.reason is R.BAD_COMPRESSION
    assert reason(wrap(b"\0" * vmod.MAX_INFLATED)) is R.BAD_COSE  # at the limit: inflated
    assert reason(wrap(b"\0" * (vmod.MAX_INFLATED + 1))) is R.BAD_COMPRESSION


def test_bytes_after_the_zlib_stream_are_bad_compression() -> None:
    assert reason(PREFIX + base45.encode(COMPRESSED + b"\0")) is R.BAD_COMPRESSION


protected_ok = cbor2.dumps({1: -8, 4: KEY.kid.encode()})
payload_ok = cose.parse(COSE).payload


@pytest.mark.parametrize(
    ("cose_bytes", "why"),
    [
        (cbor2.dumps([protected_ok, {}, payload_ok, b"s" * 64]), "not tagged"),
        (sign1(protected_ok, payload_ok, tag=98), "COSE_Sign (multi-signer)"),
        (sign1(cbor2.dumps({1: -7, 4: KEY.kid.encode()}), payload_ok), "ES256"),
        (sign1(cbor2.dumps({1: -8.0, 4: KEY.kid.encode()}), payload_ok), "alg as float"),
        (sign1(cbor2.dumps({1: -8}), payload_ok), "no kid"),
        (sign1(cbor2.dumps({1: -8, 4: KEY.kid}), payload_ok), "kid as text"),
        (sign1(cbor2.dumps({1: -8, 4: b"k", 3: 0}), payload_ok), "extra header"),
        (sign1(cbor2.dumps({1: -8}), payload_ok, unprotected={4: KEY.kid.encode()}), "kid out"),
        (sign1(protected_ok, payload_ok, signature=b"s" * 63), "short signature"),
        (sign1(protected_ok, payload_ok)[:-1], "cut short"),
        (sign1(protected_ok, payload_ok) + b"\0", "trailing byte"),
        (cbor2.dumps(cbor2.CBORTag(18, [protected_ok, {}, None, b"s" * 64])), "detached payload"),
        (
            b"\xd2\x9f" + cbor2.dumps(protected_ok) + b"\xa0\x41x\x58\x40" + b"s" * 64 + b"\xff",
            "indef",
        ),
    ],
)
def test_malformed_cose_is_bad_cose(cose_bytes: bytes, why: str) -> None:
    assert reason(wrap(cose_bytes)) is R.BAD_COSE, why


def _claims(**changes: Any) -> dict[Any, Any]:
    claims: dict[Any, Any] = cbor2.loads(cose.parse(COSE).payload)
    for label, value in changes.items():
        key = int(label[1:])
        if value is None:
            del claims[key]
        else:
            claims[key] = value
    return claims


@pytest.mark.parametrize(
    "payload",
    [
        cbor2.dumps(_claims(c3=None)),  # a claim missing
        cbor2.dumps(_claims() | {11: 1}),  # an unknown claim
        cbor2.dumps(_claims() | {"1": 1}),  # text key
        cbor2.dumps(_claims(c9=True)),  # bool is not a number of days
        cbor2.dumps(_claims(c1=b"short")),  # voucher id not 16 bytes
        cbor2.dumps(_claims(c4="330106199003071236")),  # the full ID number, unmasked
        cbor2.dumps(_claims(c5=b"\0" * 15)),  # binding too short
        cbor2.dumps(_claims(c8=20_100, c9=20_000)),  # valid until before registered on
        cbor2.dumps(_claims(c9=10**12)),  # no such date
        cbor2.dumps(_claims(c10=-1)),  # issued before 1970
        cbor2.dumps(_claims(c3="")),  # empty name
        cbor2.dumps(_claims(c3="张\n伟")),  # control character
        cbor2.dumps(_claims(c7="x" * 17)),  # unit too long
        cbor2.dumps(list(_claims().items())),  # not a map
        cbor2.dumps(_claims()) + b"\0",  # trailing byte
    ],
)
def test_signed_but_malformed_claims_are_bad_claims(payload: bytes) -> None:
    assert reason(signed(payload)) is R.BAD_CLAIMS


def test_every_reason_is_distinct_and_every_rejection_is_counted() -> None:
    assert len({r.value for r in R}) == len(R)
    before = vmod.rejected.copy()
    reason("HC1:x")
    reason(TEXT, keys={})
    assert vmod.rejected[R.WRONG_PREFIX] == before[R.WRONG_PREFIX] + 1
    assert vmod.rejected[R.UNKNOWN_KEY] == before[R.UNKNOWN_KEY] + 1
    verify(TEXT, KEYS, TODAY)
    assert sum(vmod.rejected.values()) == sum(before.values()) + 2


# --- the voucher value -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"holder_name": ""}, "holder_name"),
        ({"holder_name": " 张伟"}, "spaces"),
        ({"holder_name": "x" * 33}, "holder_name"),
        ({"building": "a\tb"}, "building"),
        ({"unit": "1" * 17}, "unit"),
        ({"registration_id": "r" * 33}, "registration_id"),
        ({"valid_until": date(2025, 2, 28)}, "before registered on"),
        ({"registered_on": datetime(2025, 3, 1, tzinfo=UTC)}, "registered_on"),
        ({"issued_at": datetime(2025, 3, 1, 8)}, "time zone"),
        ({"registered_on": date(2025, 3, 3)}, "after the voucher was issued"),
    ],
)
def test_a_voucher_validates_itself(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**changes)


def test_a_voucher_refuses_an_unmasked_id_a_bad_binding_and_a_bad_issuer() -> None:
    fields = {f: getattr(VOUCHER, f) for f in VOUCHER.__slots__}
    with pytest.raises(ValueError, match="masked"):
        Voucher(**(fields | {"id_masked": HOLDER.value}))
    with pytest.raises(ValueError, match="binding"):
        Voucher(**(fields | {"id_binding": b"\0" * 32}))
    with pytest.raises(ValueError, match="issuer"):
        Voucher(**(fields | {"issuer": "platform"}))


def test_issue_refuses_a_voucher_naming_another_issuer() -> None:
    other = verify(issue(VOUCHER, OTHER), {OTHER.kid: OTHER.public}, TODAY)
    with pytest.raises(ValueError, match="names issuer"):
        issue(other, KEY)
    assert issue(other, OTHER).startswith(PREFIX)  # re-issuing with its own key is fine


def test_longest_claims_in_four_byte_characters_still_fit_the_text_limit() -> None:
    rare = "".join(chr(0x20000 + (i * 7919) % 40000) for i in range(48))  # CJK Ext. B, 4 bytes
    longest = make(
        registration_id=rare[:32], holder_name=rare[16:48], building=rare, unit=rare[:16]
    )
    text = issue(longest, KEY)
    assert len(text) <= vmod.MAX_TEXT
    assert verify(text, KEYS, TODAY).holder_name == rare[16:48]


# --- binding to the ID card ------------------------------------------------------------------


def test_binding_hash_is_the_first_128_bits_of_hmac_sha256_over_the_id_number() -> None:
    expected = hmac.new(BINDING_KEY, b"330106199003071236", hashlib.sha256).digest()[:16]
    assert binding_hash(BINDING_KEY, "330106199003071236") == expected
    assert VOUCHER.id_binding == expected


def test_binds_only_the_holders_id_number_under_the_binding_key() -> None:
    got = verify(TEXT, KEYS, TODAY)
    assert got.binds("330106199003071236", BINDING_KEY)
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in "330106199003071236")  # as typed
    assert got.binds(full_width, BINDING_KEY)
    assert not got.binds("11010519491231002X", BINDING_KEY)  # someone else
    assert not got.binds("330106199003071236", os.urandom(32))  # another platform's key
    assert not got.binds("330106199003071237", BINDING_KEY)  # bad check character
    with pytest.raises(ValueError, match="32 bytes"):
        got.binds("330106199003071236", b"short")


def test_without_the_binding_key_only_the_visible_digits_are_compared() -> None:
    got = verify(TEXT, KEYS, TODAY)
    assert got.shows("330106199003071236")
    assert not got.shows("11010519491231002X")
    assert not got.shows("not a number")


# --- Base45 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"AB", "BB8"),
        (b"Hello!!", "%69 VD92EX0"),
        (b"base-45", "UJCLQE7W581"),
        (b"ietf!", "QED8WEX0"),
        (b"", ""),
    ],
)
def test_base45_rfc_9285_vectors(raw: bytes, text: str) -> None:
    assert base45.encode(raw) == text
    assert base45.decode(text) == raw


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("GGW", "out of range"),  # 65536: one more than two bytes hold
        (":::", "out of range"),
        ("ZZ", "out of range"),  # a last pair of 1610 > 255
        ("A", "one character over"),
        ("BB8B", "one character over"),
        ("bb8", "not a Base45 character"),
        ("BB\n", "not a Base45 character"),
        ("BB_", "not a Base45 character"),
    ],
)
def test_base45_strict_decoding(text: str, why: str) -> None:
    with pytest.raises(base45.Base45Error, match=why):
        base45.decode(text)


@given(st.binary(max_size=600))
def test_base45_round_trip(raw: bytes) -> None:
    text = base45.encode(raw)
    assert base45.decode(text) == raw
    assert len(text) == len(raw) // 2 * 3 + len(raw) % 2 * 2
    assert not text.endswith(" ")  # why stripping a scanned voucher text is safe


@given(st.text(base45.ALPHABET, max_size=60))
def test_base45_decoding_accepts_only_what_encoding_produces(text: str) -> None:
    try:
        raw = base45.decode(text)
    except base45.Base45Error:
        return
    assert base45.encode(raw) == text


# --- size and QR code ------------------------------------------------------------------------


def test_a_typical_voucher_is_a_small_qr_code_that_a_real_decoder_reads() -> None:
    assert len(TEXT) <= 350
    versions = {
        level: int(segno.make_qr(TEXT, error=level, boost_error=False).version) for level in "mq"
    }
    print(f"voucher {len(TEXT)} characters; QR version {versions['m']}-M, {versions['q']}-Q")
    assert versions["m"] <= 11  # 61x61 modules: 0.4 mm each in a 25 mm print
    assert versions["q"] <= 13
    qr = segno.make_qr(TEXT, error="m", boost_error=False)
    assert qr.mode == "alphanumeric"
    modules = np.array([list(row) for row in qr.matrix], dtype=np.uint8)
    image = np.where(np.kron(modules, np.ones((4, 4), np.uint8)) > 0, 0, 255).astype(np.uint8)
    image = np.pad(image, 16, constant_values=255)  # the quiet zone
    (read,) = zxingcpp.read_barcodes(image, formats=QR_ONLY)
    assert read.text == TEXT
    assert verify(read.text, KEYS, TODAY) == verify(TEXT, KEYS, TODAY)
