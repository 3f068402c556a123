"""Frames of the ID-card SAM reader protocol, and the card's text block, as values.

Pure: bytes in, frames, rejections or an `IdCard` out; no I/O, no clock. A
frame is `AA AA AA 96 69 | LEN (2, big-endian) | CMD PARA or SW1 SW2 SW3 | DATA |
CHK`, where LEN counts every byte after itself and CHK is the XOR of LEN through
the last data byte. The decoder accepts arbitrary chunks, resynchronises on the
preamble, keeps at most one frame's worth of bytes, and its output depends
only on the byte stream, never on where the chunks were cut.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from enum import Enum, StrEnum

from gateway.domain.idcard import CardKind, IdCard
from gateway.domain.ids import IdNumber
from gateway.errors import RentgateError

PREAMBLE = b"\xaa\xaa\xaa\x96\x69"
HEADER = len(PREAMBLE) + 2
MIN_LEN = 3
"""A command is CMD PARA CHK; a reply (SW1 SW2 SW3 CHK) is one byte longer."""
MAX_LEN = 1300
"""The longest reply we ask for (base information) has LEN 1288."""
MAX_FRAME = HEADER + MAX_LEN
TEXT_SIZE = 256
PHOTO_SIZE = 1024
BASE_INFO_FRAME = HEADER + 3 + 4 + TEXT_SIZE + PHOTO_SIZE + 1
"""1295 bytes: the whole reply to read-base-information."""


class SamReason(StrEnum):
    """Why a frame, a reply or a card was refused; counted per reader."""

    # our side of the line
    BAD_PREAMBLE = "bad_preamble"
    BAD_LENGTH = "bad_length"
    BAD_CHECKSUM = "bad_checksum"
    TRUNCATED = "truncated"
    OVERSIZED = "oversized"
    TIMEOUT = "timeout"
    UNEXPECTED_REPLY = "unexpected_reply"
    # SW3 statuses the reader's SAM reports
    NO_CARD = "no_card"
    SELECT_FAILED = "select_failed"
    READ_FAILED = "read_failed"
    CARD_AUTH_FAILED = "card_auth_failed"
    SAM_AUTH_FAILED = "sam_auth_failed"
    VERIFY_FAILED = "verify_failed"
    DEVICE_CHECKSUM_ERROR = "device_checksum_error"
    DEVICE_LENGTH_ERROR = "device_length_error"
    DEVICE_COMMAND_ERROR = "device_command_error"
    UNAUTHORIZED = "unauthorized"
    UNRECOGNISED_ERROR = "unrecognised_error"
    UNKNOWN_CARD_TYPE = "unknown_card_type"
    RANDOM_FAILED = "random_failed"
    SAM_SELF_TEST_FAILED = "sam_self_test_failed"
    SAM_UNAUTHORIZED = "sam_unauthorized"
    NO_CONTENT = "no_content"
    UNKNOWN_STATUS = "unknown_status"
    # the card's content
    BAD_TEXT = "bad_text"
    BAD_FIELD = "bad_field"
    BAD_ID_NUMBER = "bad_id_number"
    BAD_ID_CHECK = "bad_id_check"
    UNKNOWN_CARD_KIND = "unknown_card_kind"
    UNSUPPORTED_CARD = "unsupported_card"


OK = 0x90
FOUND = 0x9F
NO_CARD = 0x80

STATUS_REASONS: dict[int, SamReason] = {
    0x10: SamReason.DEVICE_CHECKSUM_ERROR,  # the reader got a frame with a bad checksum
    0x11: SamReason.DEVICE_LENGTH_ERROR,  # ... with a bad length
    0x21: SamReason.DEVICE_COMMAND_ERROR,  # unknown command or bad parameters
    0x23: SamReason.UNAUTHORIZED,  # operation out of range (越权操作)
    0x24: SamReason.UNRECOGNISED_ERROR,
    0x31: SamReason.CARD_AUTH_FAILED,  # the card did not accept the SAM
    0x32: SamReason.SAM_AUTH_FAILED,  # the SAM did not accept the card
    0x33: SamReason.VERIFY_FAILED,  # information verification error
    0x40: SamReason.UNKNOWN_CARD_TYPE,
    0x41: SamReason.READ_FAILED,
    0x47: SamReason.RANDOM_FAILED,  # getting the card's random number failed
    0x60: SamReason.SAM_SELF_TEST_FAILED,
    0x66: SamReason.SAM_UNAUTHORIZED,
    0x80: SamReason.NO_CARD,  # find card: none in the field
    0x81: SamReason.SELECT_FAILED,
    0x91: SamReason.NO_CONTENT,  # no such data
}
"""Public SAM status list (SW3); 0x90 and 0x9F are success and are not here."""


def status_reason(sw3: int) -> SamReason:
    return STATUS_REASONS.get(sw3, SamReason.UNKNOWN_STATUS)


class SamError(RentgateError):
    """A reply or card that cannot be used; `reason` is what callers branch and count on."""

    def __init__(self, reason: SamReason, detail: str, status: int | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.status = status


class SamCommand(Enum):
    FIND = b"\x20\x01"
    SELECT = b"\x20\x02"
    READ_BASE = b"\x30\x01"


def checksum(data: bytes | bytearray) -> int:
    """XOR of all bytes, folded as one big integer (5x faster than a byte loop on 1288 bytes)."""
    folded = int.from_bytes(data, "little")
    width = 1 << max(0, (len(data) - 1).bit_length())
    while width > 1:
        width //= 2
        folded = (folded >> (8 * width)) ^ (folded & ((1 << (8 * width)) - 1))
    return folded


def encode_frame(body: bytes) -> bytes:
    """Preamble, LEN, `body` (CMD PARA DATA or SW DATA) and its checksum."""
    length = len(body) + 1
    if not MIN_LEN <= length <= MAX_LEN:
        raise ValueError(f"frame body of {len(body)} bytes")
    head = length.to_bytes(2, "big") + body
    return PREAMBLE + head + bytes([checksum(head)])


def encode_command(command: SamCommand, data: bytes = b"") -> bytes:
    return encode_frame(command.value + data)


def encode_reply(sw3: int, data: bytes = b"", sw1: int = 0, sw2: int = 0) -> bytes:
    return encode_frame(bytes([sw1, sw2, sw3]) + data)


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole frame whose length and checksum are right."""

    raw: bytes

    @property
    def body(self) -> bytes:
        """Everything between LEN and CHK."""
        return self.raw[HEADER:-1]


@dataclass(frozen=True, slots=True)
class SamRejection:
    """Bytes the decoder threw away, and why."""

    reason: SamReason
    detail: str


_GARBAGE = "bytes outside any frame"
"""One detail for any garbage, so that rejections do not depend on where chunks were cut."""


def _prefix_tail(buf: bytearray) -> int:
    """Length of the longest end of `buf` that could still grow into a preamble."""
    for size in range(min(len(buf), len(PREAMBLE) - 1), 0, -1):
        if buf.endswith(PREAMBLE[:size]):
            return size
    return 0


class FrameDecoder:
    """Turns chunks of bytes into `Frame`s and `SamRejection`s, in stream order.

    One rejection is given per run of discarded bytes: garbage between frames,
    or a frame with a bad length or checksum (after which the decoder looks for
    a preamble again one byte further on, so a frame hidden inside is found).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._quiet = False
        """The bytes being discarded are part of a run already reported."""

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Frame | SamRejection]:
        self._buf += chunk
        return list(self._scan(final=False))

    def expire(self) -> list[Frame | SamRejection]:
        """The line went quiet: what is buffered will never be completed."""
        out = list(self._scan(final=True))
        self._quiet = False
        return out

    def _drop(self, count: int, reason: SamReason, detail: str) -> Iterator[SamRejection]:
        del self._buf[:count]
        if not self._quiet:
            self._quiet = True
            yield SamRejection(reason, detail)

    def _refuse(self, reason: SamReason, detail: str) -> Iterator[SamRejection]:
        """Reject the frame at the head; look for a preamble from its second byte."""
        self._quiet = False
        yield from self._drop(1, reason, detail)

    def _scan(self, *, final: bool) -> Iterator[Frame | SamRejection]:
        buf = self._buf
        while buf:
            start = buf.find(PREAMBLE)
            if start < 0:
                keep = 0 if final else _prefix_tail(buf)
                if len(buf) > keep:
                    yield from self._drop(len(buf) - keep, SamReason.BAD_PREAMBLE, _GARBAGE)
                return
            if start:
                yield from self._drop(start, SamReason.BAD_PREAMBLE, _GARBAGE)
            if len(buf) < HEADER:
                if not final:
                    return
                yield from self._refuse(SamReason.TRUNCATED, "ended before LEN")
                continue
            length = int.from_bytes(buf[len(PREAMBLE) : HEADER], "big")
            if length > MAX_LEN:
                yield from self._refuse(SamReason.OVERSIZED, f"LEN {length} over {MAX_LEN}")
                continue
            if length < MIN_LEN:
                yield from self._refuse(SamReason.BAD_LENGTH, f"LEN {length} under {MIN_LEN}")
                continue
            end = HEADER + length
            if len(buf) < end:
                if not final:
                    return
                yield from self._refuse(SamReason.TRUNCATED, f"{len(buf)} of {end} bytes")
                continue
            if checksum(buf[len(PREAMBLE) : end - 1]) != buf[end - 1]:
                yield from self._refuse(SamReason.BAD_CHECKSUM, f"frame of {end} bytes")
                continue
            frame = Frame(bytes(buf[:end]))
            del buf[:end]
            self._quiet = False
            yield frame


@dataclass(frozen=True, slots=True)
class Reply:
    sw1: int
    sw2: int
    sw3: int
    data: bytes

    @classmethod
    def of(cls, frame: Frame) -> Reply:
        body = frame.body
        if len(body) < 3:
            raise SamError(SamReason.UNEXPECTED_REPLY, f"reply of {len(body)} bytes has no status")
        return cls(body[0], body[1], body[2], body[3:])

    def expect(self, sw3: int, command: SamCommand) -> None:
        """Raise the status's reason unless SW3 is the one `command` succeeds with."""
        if self.sw3 != sw3:
            reason = status_reason(self.sw3)
            raise SamError(reason, f"status 0x{self.sw3:02X} to {command.name}", self.sw3)


# --- the card's text block -----------------------------------------------------------------

SEXES = {"0": "未知", "1": "男", "2": "女", "9": "未说明"}
"""GB/T 2261.1 sex codes, as the card prints them."""

_ETHNIC_TEXT = (
    "汉 蒙古 回 藏 维吾尔 苗 彝 壮 布依 朝鲜 满 侗 瑶 白 土家 哈尼 哈萨克 傣 黎 "
    "傈僳 佤 畲 高山 拉祜 水 东乡 纳西 景颇 柯尔克孜 土 达斡尔 仫佬 羌 布朗 "
    "撒拉 毛南 仡佬 锡伯 阿昌 普米 塔吉克 怒 乌孜别克 俄罗斯 鄂温克 德昂 "
    "保安 裕固 京 塔塔尔 独龙 鄂伦春 赫哲 门巴 珞巴 基诺"
)
ETHNICITIES = dict(enumerate(_ETHNIC_TEXT.split(), start=1)) | {97: "其他", 98: "外国血统"}
"""GB 3304 ethnicity codes (01-56, 97, 98) to the names the card prints."""

PERMANENT = "长期"
"""Valid-to of a card valid for life."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DATE = re.compile(r"^\d{8}$")
_PERMIT = re.compile(r"^[A-Z]{3}\d{12}$")
_TYPE_OFFSET = 248


def parse_base_info(reply: Reply) -> IdCard:
    """The card in a successful read-base-information reply; `SamError` if it is not one."""
    reply.expect(OK, SamCommand.READ_BASE)
    data = reply.data
    text_len = int.from_bytes(data[0:2], "big")
    photo_len = int.from_bytes(data[2:4], "big")
    if (text_len, photo_len, len(data)) != (TEXT_SIZE, PHOTO_SIZE, 4 + TEXT_SIZE + PHOTO_SIZE):
        raise SamError(
            SamReason.UNEXPECTED_REPLY,
            f"text {text_len} and photo {photo_len} bytes in {len(data)} bytes of data",
        )
    return parse_text_block(data[4 : 4 + TEXT_SIZE], data[4 + TEXT_SIZE :])


def parse_text_block(block: bytes, photo: bytes = b"") -> IdCard:
    """Decode the 256-byte UCS-2 block; the card type mark at byte 248 picks the layout."""
    if len(block) != TEXT_SIZE:
        raise SamError(SamReason.UNEXPECTED_REPLY, f"text block of {len(block)} bytes")
    mark = _field(block, _TYPE_OFFSET, 2)
    if mark == "I":
        return _foreigner(block, photo)
    if mark not in ("", "J"):
        raise SamError(SamReason.UNKNOWN_CARD_KIND, f"card type mark {mark!r}")
    hmt = mark == "J"
    number = _field(block, 122, 36)
    try:
        id_number = IdNumber(number).value
    except ValueError as exc:
        bad_check = "check character" in str(exc)
        reason = SamReason.BAD_ID_CHECK if bad_check else SamReason.BAD_ID_NUMBER
        raise SamError(reason, str(exc)) from exc
    ethnicity = _field(block, 32, 4)
    return IdCard(
        kind=CardKind.HMT_PERMIT if hmt else CardKind.RESIDENT,
        name=_required(block, 0, 30, "name"),
        sex=_sex(block, 30),
        ethnicity=ethnicity if hmt and not ethnicity else _ethnicity(ethnicity),
        birth_date=_date(block, 36, "birth date"),
        address=_field(block, 52, 70),
        id_number=id_number,
        issuing_authority=_field(block, 158, 30),
        valid_from=_date(block, 188, "valid from"),
        valid_to=_valid_to(block),
        pass_number=_required(block, 220, 18, "pass number") if hmt else None,
        photo=bytes(photo),
    )


def _foreigner(block: bytes, photo: bytes) -> IdCard:
    """Foreigners' permanent residence card (`I`): English name first, nationality code.

    `IdCard` has no nationality field: the ISO 3166-1 alpha-3 nationality goes in
    `ethnicity`, and the Chinese name (optional on these cards) is not kept.
    """
    permit = _field(block, 122, 30)
    if not _PERMIT.match(permit):
        raise SamError(SamReason.BAD_ID_NUMBER, "permit number must be 3 letters and 12 digits")
    return IdCard(
        kind=CardKind.FOREIGNER,
        name=_required(block, 0, 120, "English name"),
        sex=_sex(block, 120),
        ethnicity=_required(block, 152, 6, "nationality"),
        birth_date=_date(block, 232, "birth date"),
        address="",
        id_number=permit,
        issuing_authority=_field(block, 224, 8),
        valid_from=_date(block, 188, "valid from"),
        valid_to=_valid_to(block),
        photo=bytes(photo),
    )


def _field(block: bytes, offset: int, size: int) -> str:
    try:
        text = block[offset : offset + size].decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise SamError(SamReason.BAD_TEXT, f"field at byte {offset} is not UCS-2") from exc
    text = text.rstrip(" \x00")
    if _CONTROL.search(text):
        raise SamError(SamReason.BAD_TEXT, f"field at byte {offset} has control characters")
    return text


def _required(block: bytes, offset: int, size: int, what: str) -> str:
    text = _field(block, offset, size)
    if not text:
        raise SamError(SamReason.BAD_FIELD, f"{what} is empty")
    return text


def _sex(block: bytes, offset: int) -> str:
    code = _field(block, offset, 2)
    if code not in SEXES:
        raise SamError(SamReason.BAD_FIELD, f"sex code {code!r}")
    return SEXES[code]


def _ethnicity(code: str) -> str:
    if len(code) != 2 or not code.isdigit() or int(code) not in ETHNICITIES:
        raise SamError(SamReason.BAD_FIELD, f"ethnicity code {code!r}")
    return ETHNICITIES[int(code)]


def _date(block: bytes, offset: int, what: str) -> date:
    text = _field(block, offset, 16)
    if not _DATE.match(text):
        raise SamError(SamReason.BAD_FIELD, f"{what} is not YYYYMMDD")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError as exc:
        raise SamError(SamReason.BAD_FIELD, f"{what} is not a date") from exc


def _valid_to(block: bytes) -> date | None:
    if _field(block, 204, 16) == PERMANENT:
        return None
    return _date(block, 204, "valid to")
