"""The SAM frame codec: known frames, the text block at the spec's offsets, and fuzzing.

The fuzz tests (over 10,000 examples in all) hold the decoder to four rules:
whatever the chunking, the output is the same; every byte is either part of a
valid frame or covered by a rejection; memory stays within one frame; valid
frames come out byte for byte.
"""

from __future__ import annotations

import random
from datetime import date
from functools import reduce
from operator import xor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.devices.sam.frames import (
    BASE_INFO_FRAME,
    ETHNICITIES,
    MAX_FRAME,
    MAX_LEN,
    PREAMBLE,
    STATUS_REASONS,
    Frame,
    FrameDecoder,
    Reply,
    SamCommand,
    SamError,
    SamReason,
    SamRejection,
    checksum,
    encode_command,
    encode_frame,
    encode_reply,
    parse_base_info,
    parse_text_block,
)
from gateway.devices.sam.simulator import base_info_reply, encode_text_block, make_card, make_people
from gateway.domain.idcard import CardKind
from gateway.domain.ids import IdNumber

Item = Frame | SamRejection
FRAME_REASONS = {
    SamReason.BAD_PREAMBLE,
    SamReason.BAD_LENGTH,
    SamReason.BAD_CHECKSUM,
    SamReason.TRUNCATED,
    SamReason.OVERSIZED,
}
FIND_FOUND = bytes.fromhex("aaaaaa9669 0008 00009f 00000000 97")
FIND_NONE = bytes.fromhex("aaaaaa9669 0004 000080 84")
SELECTED = bytes.fromhex("aaaaaa9669 000c 000090 0000000000000000 9c")
PEOPLE = [make_card(random.Random(kind), kind, date(2026, 6, 1)) for kind in CardKind]
PEOPLE += make_people(40, seed=7, today=date(2026, 6, 1))


def xor_all(data: bytes) -> int:
    """The spec's checksum, the plain way (the module folds it faster)."""
    return reduce(xor, data, 0)


def ucs2(text: str, size: int) -> bytes:
    raw = text.encode("utf-16-le")
    assert len(raw) <= size
    return raw + " ".encode("utf-16-le") * ((size - len(raw)) // 2)


def text_block(fields: dict[int, tuple[int, str]]) -> bytes:
    """A 256-byte block written straight from the spec's offset table, not by our encoder."""
    block = bytearray(ucs2("", 256))
    for offset, (size, text) in fields.items():
        block[offset : offset + size] = ucs2(text, size)
    return bytes(block)


def base_info_frame(block: bytes, photo: bytes) -> bytes:
    body = bytes.fromhex("000090 0100 0400") + block + photo
    head = (len(body) + 1).to_bytes(2, "big") + body
    return PREAMBLE + head + bytes([xor_all(head)])


RESIDENT = {
    0: (30, "张伟"),
    30: (2, "1"),
    32: (4, "01"),
    36: (16, "19900307"),
    52: (70, "浙江省杭州市西湖区文三路398号"),
    122: (36, "330106199003071236"),
    158: (30, "杭州市公安局西湖分局"),
    188: (16, "20150601"),
    204: (16, "20350601"),
}


def decode(stream: bytes, cuts: int | None = None) -> tuple[list[Item], int]:
    """Feed `stream` whole or in chunks of 1-97 bytes picked by the seed `cuts`, then expire;
    also gives the most the decoder held at once."""
    decoder = FrameDecoder()
    out: list[Item] = []
    peak = 0
    position = 0
    sizes = random.Random(cuts)
    while position < len(stream):
        size = len(stream) if cuts is None else sizes.randint(1, 97)
        out += decoder.feed(stream[position : position + size])
        peak = max(peak, decoder.buffered)
        position += size
    out += decoder.expire()
    assert decoder.buffered == 0
    return out, peak


def check_invariants(stream: bytes, out: list[Item], peak: int) -> None:
    frames = [item for item in out if isinstance(item, Frame)]
    rejections = [item for item in out if isinstance(item, SamRejection)]
    for frame in frames:
        assert frame.raw.startswith(PREAMBLE)
        assert int.from_bytes(frame.raw[5:7], "big") == len(frame.raw) - 7
        assert xor_all(frame.raw[5:-1]) == frame.raw[-1]
        assert frame.raw in stream
    assert all(r.reason in FRAME_REASONS and r.detail for r in rejections)
    assert (b"".join(f.raw for f in frames) == stream) == (not rejections), (
        "every byte is in a valid frame, or a rejection says why not"
    )
    assert peak <= MAX_FRAME


# --- known frames --------------------------------------------------------------------------


def test_commands_are_the_public_protocol_bytes() -> None:
    assert encode_command(SamCommand.FIND) == bytes.fromhex("aaaaaa9669 0003 2001 22")
    assert encode_command(SamCommand.SELECT) == bytes.fromhex("aaaaaa9669 0003 2002 21")
    assert encode_command(SamCommand.READ_BASE) == bytes.fromhex("aaaaaa9669 0003 3001 32")
    assert encode_reply(0x9F, bytes(4)) == FIND_FOUND
    assert encode_reply(0x80) == FIND_NONE


@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 8, 9, 255, 256, 1287, 1288, 1299])
def test_the_fast_checksum_is_the_xor_of_all_bytes(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert checksum(data) == checksum(bytearray(data)) == xor_all(data)


def test_known_replies_decode_to_their_statuses() -> None:
    out, _ = decode(FIND_FOUND + FIND_NONE + SELECTED)
    replies = [Reply.of(item) for item in out if isinstance(item, Frame)]
    assert [r.sw3 for r in replies] == [0x9F, 0x80, 0x90]
    assert [len(r.data) for r in replies] == [4, 0, 8]


@pytest.mark.parametrize("code", sorted(STATUS_REASONS))
def test_every_status_has_its_own_reason(code: int) -> None:
    with pytest.raises(SamError) as caught:
        Reply.of(Frame(encode_reply(code))).expect(0x90, SamCommand.READ_BASE)
    assert caught.value.reason is STATUS_REASONS[code]
    assert caught.value.status == code
    assert f"0x{code:02X}" in str(caught.value)


def test_an_unknown_status_keeps_its_code() -> None:
    with pytest.raises(SamError) as caught:
        Reply.of(Frame(encode_reply(0x5A))).expect(0x90, SamCommand.READ_BASE)
    assert caught.value.reason is SamReason.UNKNOWN_STATUS
    assert "0x5A" in str(caught.value)
    assert len(set(STATUS_REASONS.values())) == len(STATUS_REASONS)


def test_garbage_then_frame_gives_one_rejection_then_the_frame() -> None:
    out, _ = decode(b"\x00\xaa\xaa\x13" * 50 + FIND_FOUND, 3)
    assert [type(i) for i in out] == [SamRejection, Frame]
    assert out[0] == SamRejection(SamReason.BAD_PREAMBLE, out[0].detail)  # type: ignore[union-attr]


def test_bad_checksum_is_rejected_and_the_next_frame_still_read() -> None:
    spoiled = FIND_FOUND[:-1] + b"\x00"
    out, _ = decode(spoiled + FIND_NONE)
    assert [getattr(i, "reason", None) for i in out] == [SamReason.BAD_CHECKSUM, None]
    assert out[1] == Frame(FIND_NONE)


@pytest.mark.parametrize(
    ("length", "reason"),
    [(MAX_LEN + 1, SamReason.OVERSIZED), (0xFFFF, SamReason.OVERSIZED), (2, SamReason.BAD_LENGTH)],
)
def test_impossible_lengths_are_refused_at_once(length: int, reason: SamReason) -> None:
    decoder = FrameDecoder()
    out = decoder.feed(PREAMBLE + length.to_bytes(2, "big"))
    assert [getattr(i, "reason", None) for i in out] == [reason]
    assert decoder.feed(FIND_NONE) == [Frame(FIND_NONE)]


@pytest.mark.parametrize("keep", [3, 6, 7, 12])
def test_a_frame_cut_short_is_truncated_once_the_line_goes_quiet(keep: int) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(FIND_FOUND[:keep]) == []
    out = decoder.expire()
    reason = SamReason.BAD_PREAMBLE if keep < len(PREAMBLE) else SamReason.TRUNCATED
    assert [getattr(i, "reason", None) for i in out] == [reason]
    assert decoder.buffered == 0


def test_byte_by_byte_is_the_same_as_all_at_once() -> None:
    stream = b"".join(LONG) + FIND_FOUND
    decoder = FrameDecoder()
    out = [item for byte in stream for item in decoder.feed(bytes([byte]))]
    assert out == [Frame(f) for f in (*LONG, FIND_FOUND)]


def test_a_frame_inside_a_false_one_is_found() -> None:
    false_start = PREAMBLE + bytes.fromhex("0020")  # claims 32 bytes, covering the real frame
    out, _ = decode(false_start + FIND_FOUND + bytes(40), 5)
    assert [getattr(i, "reason", i) for i in out] == [
        SamReason.BAD_CHECKSUM,
        Frame(FIND_FOUND),
        SamReason.BAD_PREAMBLE,
    ]


def test_a_frame_after_a_truncated_one_is_recovered() -> None:
    decoder = FrameDecoder()
    reply = base_info_reply(PEOPLE[0])
    assert decoder.feed(reply[:700] + FIND_NONE) == []  # waits for 1295 bytes
    out = decoder.expire()
    assert [getattr(i, "reason", None) for i in out] == [SamReason.TRUNCATED, None]
    assert out[1] == Frame(FIND_NONE)


def test_a_megabyte_of_noise_costs_a_few_bytes_of_memory() -> None:
    rng = random.Random(3)
    decoder = FrameDecoder()
    rejections = 0
    for _ in range(256):
        rejections += len(decoder.feed(rng.randbytes(4096)))
        assert decoder.buffered < len(PREAMBLE)
    assert rejections >= 1
    assert decoder.feed(FIND_NONE)[-1] == Frame(FIND_NONE)


def test_a_stalled_long_frame_holds_at_most_one_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(PREAMBLE + MAX_LEN.to_bytes(2, "big") + bytes(MAX_LEN - 1))
    assert decoder.buffered == MAX_FRAME - 1


# --- the text block ------------------------------------------------------------------------


def test_resident_block_at_the_spec_offsets() -> None:
    photo = bytes(range(256)) * 4
    frame = base_info_frame(text_block(RESIDENT), photo)
    assert len(frame) == BASE_INFO_FRAME == 1295
    assert frame[10:14] == bytes.fromhex("0100 0400")
    out, _ = decode(frame, 100)
    assert len(out) == 1
    assert isinstance(out[0], Frame)
    card = parse_base_info(Reply.of(out[0]))
    assert card.kind is CardKind.RESIDENT
    assert (card.name, card.sex, card.ethnicity) == ("张伟", "男", "汉")
    assert card.birth_date == date(1990, 3, 7)
    assert card.address == "浙江省杭州市西湖区文三路398号"
    assert card.id_number == "330106199003071236"
    assert card.issuing_authority == "杭州市公安局西湖分局"
    assert (card.valid_from, card.valid_to) == (date(2015, 6, 1), date(2035, 6, 1))
    assert card.pass_number is None
    assert card.photo == photo == frame[270:1294]
    assert "330106199003071236" not in repr(card) + str(card)


def test_permanent_validity_and_other_ethnicities() -> None:
    fields = RESIDENT | {204: (16, "长期"), 32: (4, "22"), 30: (2, "2")}
    card = parse_text_block(text_block(fields))
    assert (card.valid_to, card.ethnicity, card.sex) == (None, "畲", "女")
    assert len(ETHNICITIES) == 58
    assert (ETHNICITIES[1], ETHNICITIES[56], ETHNICITIES[98]) == ("汉", "基诺", "外国血统")


def test_hmt_permit_block() -> None:
    fields = RESIDENT | {
        32: (4, ""),
        122: (36, "810000198507011233"),
        220: (18, "H12345678"),
        238: (4, "01"),
        248: (2, "J"),
    }
    card = parse_text_block(text_block(fields))
    assert card.kind is CardKind.HMT_PERMIT
    assert card.id_number == "810000198507011233"
    assert (card.pass_number, card.ethnicity) == ("H12345678", "")


def test_foreigner_block() -> None:
    fields = {
        0: (120, "SMITH, JOHN"),
        120: (2, "1"),
        122: (30, "USA330802140011"),
        152: (6, "USA"),
        158: (30, "史密斯"),
        188: (16, "20200110"),
        204: (16, "20300110"),
        220: (4, "05"),
        224: (8, "1500"),
        232: (16, "19800214"),
        248: (2, "I"),
    }
    card = parse_text_block(text_block(fields))
    assert card.kind is CardKind.FOREIGNER
    assert (card.name, card.sex, card.ethnicity, card.id_number) == (
        "SMITH, JOHN",
        "男",
        "USA",
        "USA330802140011",
    )
    assert (card.birth_date, card.issuing_authority) == (date(1980, 2, 14), "1500")
    assert (card.valid_from, card.valid_to) == (date(2020, 1, 10), date(2030, 1, 10))
    assert card.address == ""


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({122: (36, "330106199003071237")}, SamReason.BAD_ID_CHECK),
        ({122: (36, "33010619900307123")}, SamReason.BAD_ID_NUMBER),
        ({122: (36, "33010619901307123X")}, SamReason.BAD_ID_NUMBER),  # month 13
        ({30: (2, "3")}, SamReason.BAD_FIELD),
        ({32: (4, "57")}, SamReason.BAD_FIELD),
        ({32: (4, "")}, SamReason.BAD_FIELD),
        ({36: (16, "19900230")}, SamReason.BAD_FIELD),
        ({188: (16, "2015-6-1")}, SamReason.BAD_FIELD),
        ({204: (16, "永久")}, SamReason.BAD_FIELD),
        ({0: (30, "")}, SamReason.BAD_FIELD),
        ({0: (30, "张\x07伟")}, SamReason.BAD_TEXT),
        ({248: (2, "X")}, SamReason.UNKNOWN_CARD_KIND),
        ({248: (2, "I"), 122: (30, "USA33080214001")}, SamReason.BAD_ID_NUMBER),
    ],
)
def test_bad_fields_are_refused_with_a_reason(
    change: dict[int, tuple[int, str]], reason: SamReason
) -> None:
    with pytest.raises(SamError) as caught:
        parse_text_block(text_block(RESIDENT | change))
    assert caught.value.reason is reason
    assert "330106" not in str(caught.value), "no personal data in the message"


def test_text_that_is_not_ucs2_is_refused() -> None:
    block = bytearray(text_block(RESIDENT))
    block[2:4] = b"\x00\xd8"  # a lone high surrogate
    with pytest.raises(SamError) as caught:
        parse_text_block(bytes(block))
    assert caught.value.reason is SamReason.BAD_TEXT


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("0100 0400") + bytes(256 + 1023),
        bytes.fromhex("0100 0300") + bytes(256 + 1024),
        bytes.fromhex("00ff 0400") + bytes(256 + 1024),
        b"",
    ],
)
def test_a_read_reply_of_the_wrong_shape_is_refused(data: bytes) -> None:
    with pytest.raises(SamError) as caught:
        parse_base_info(Reply(0, 0, 0x90, data))
    assert caught.value.reason is SamReason.UNEXPECTED_REPLY


def test_a_read_reply_with_an_error_status_gives_that_status() -> None:
    with pytest.raises(SamError) as caught:
        parse_base_info(Reply.of(Frame(encode_reply(0x41))))
    assert caught.value.reason is SamReason.READ_FAILED


def test_generated_people_survive_the_round_trip() -> None:
    kinds = {card.kind for card in PEOPLE}
    assert kinds == set(CardKind)
    assert any(card.valid_to is None for card in PEOPLE)
    assert any(card.address.startswith("浙江省") for card in PEOPLE)
    assert any(not card.address.startswith("浙江省") for card in PEOPLE if card.address)
    for card in PEOPLE:
        assert parse_text_block(encode_text_block(card), card.photo) == card
        if card.kind is not CardKind.FOREIGNER:
            assert IdNumber(card.id_number).birth_date == card.birth_date
        assert card.valid_to is None or card.valid_to > date(2026, 6, 1)


# --- fuzzing -------------------------------------------------------------------------------

KNOWN = [FIND_FOUND, FIND_NONE, SELECTED, *(encode_command(c) for c in SamCommand)]
LONG = [base_info_reply(card) for card in PEOPLE[:3]]
valid_frames = st.one_of(
    st.sampled_from(KNOWN),
    st.binary(min_size=2, max_size=80).map(encode_frame),
    st.sampled_from(LONG),
)
chunk_cuts = st.integers(0, 2**32)
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
noise = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.just(PREAMBLE),
        st.sampled_from([PREAMBLE[:k] for k in range(1, 5)]),
        st.binary(max_size=4).map(lambda tail: PREAMBLE + tail),
        st.sampled_from(KNOWN),
    ),
    max_size=16,
).map(b"".join)


@settings(FUZZ, max_examples=2500)
@given(stream=st.one_of(st.binary(max_size=600), noise), cuts=chunk_cuts)
def test_fuzz_random_bytes(stream: bytes, cuts: int) -> None:
    whole, _ = decode(stream)
    out, peak = decode(stream, cuts)
    assert out == whole
    check_invariants(stream, out, peak)


@settings(FUZZ, max_examples=2000)
@given(frames=st.lists(valid_frames, min_size=1, max_size=5), cuts=chunk_cuts)
def test_fuzz_valid_frames_decode_identically_however_chunked(
    frames: list[bytes], cuts: int
) -> None:
    out, peak = decode(b"".join(frames), cuts)
    assert out == [Frame(f) for f in frames]
    assert peak <= MAX_FRAME


@st.composite
def mutated_streams(draw: st.DrawFn) -> tuple[str, list[bytes], int, bytes, bytes]:
    """A few valid frames, one damaged: (how, the frames, which one, it damaged, the stream)."""
    frames = draw(st.lists(valid_frames, min_size=1, max_size=4))
    index = draw(st.integers(0, len(frames) - 1))
    frame = frames[index]
    how = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
    position = draw(st.integers(0, len(frame) - 1))
    if how == "flip":
        damaged = bytearray(frame)
        damaged[position] ^= 1 << draw(st.integers(0, 7))
    elif how == "truncate":
        damaged = bytearray(frame[: max(1, position)])
    elif how == "insert":
        extra = bytes([draw(st.integers(0, 255))])
        damaged = bytearray(frame[:position] + extra + frame[position:])
    else:
        damaged = bytearray(frame[:position] + frame[position + 1 :])
    intact = list(frames)
    frames[index] = bytes(damaged)
    return how, intact, index, bytes(damaged), b"".join(frames)


@settings(FUZZ, max_examples=4000)
@given(case=mutated_streams(), cuts=chunk_cuts)
def test_fuzz_damaged_frames_are_rejected(
    case: tuple[str, list[bytes], int, bytes, bytes], cuts: int
) -> None:
    how, frames, index, damaged, stream = case
    whole, _ = decode(stream)
    out, peak = decode(stream, cuts)
    assert out == whole
    check_invariants(stream, out, peak)
    assert out[:index] == [Frame(f) for f in frames[:index]], "frames before it are intact"
    if how in ("flip", "truncate"):  # such a frame can never be valid
        assert any(isinstance(item, SamRejection) for item in out)
        assert Frame(damaged) not in out


@settings(FUZZ, max_examples=1500)
@given(
    parts=st.lists(
        st.tuples(st.binary(max_size=30).filter(lambda g: b"\xaa" not in g), valid_frames),
        min_size=1,
        max_size=5,
    ),
    cuts=chunk_cuts,
)
def test_fuzz_every_frame_survives_garbage_between_frames(
    parts: list[tuple[bytes, bytes]], cuts: int
) -> None:
    out, _ = decode(b"".join(garbage + frame for garbage, frame in parts), cuts)
    expected: list[object] = []
    for garbage, frame in parts:
        if garbage:
            expected.append(SamReason.BAD_PREAMBLE)
        expected.append(frame)
    assert [i.reason if isinstance(i, SamRejection) else i.raw for i in out] == expected
