"""A simulated ID-card SAM reader on a real pseudo-terminal, and people to put in its field.

The simulator answers find, select and read-base-information the way a
reader does (statuses, an encoded text block, a 1024-byte photo blob) from a
thread of its own, so the driver under test talks to a real tty. Faults are
injected per reply: a wrong checksum, a truncated frame, an error status,
silence, garbage before the frame.

    python -m gateway.devices.sam.simulator --count 4  # prints pty paths; runs till stdin closes
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import sys
import threading
import time
import tty
from collections import Counter, deque
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from gateway.devices.sam.frames import (
    ETHNICITIES,
    FOUND,
    NO_CARD,
    OK,
    PERMANENT,
    PHOTO_SIZE,
    SEXES,
    TEXT_SIZE,
    Frame,
    FrameDecoder,
    SamCommand,
    SamReason,
    SamRejection,
    encode_reply,
)
from gateway.domain.idcard import CardKind, IdCard
from gateway.domain.ids import check_character

# --- encoding a card as the chip returns it ------------------------------------------------

_SEX_CODES = {name: code for code, name in SEXES.items()}
_ETHNICITY_CODES = {name: f"{code:02d}" for code, name in ETHNICITIES.items()}


def encode_text_block(card: IdCard) -> bytes:
    """The 256-byte UCS-2 text block for `card` (the inverse of `parse_text_block`)."""
    block = bytearray(" ".encode("utf-16-le") * (TEXT_SIZE // 2))

    def put(offset: int, size: int, text: str) -> None:
        raw = text.encode("utf-16-le")
        if len(raw) > size:
            raise ValueError(f"{text!r} does not fit {size} bytes at {offset}")
        block[offset : offset + len(raw)] = raw

    valid_to = PERMANENT if card.valid_to is None else f"{card.valid_to:%Y%m%d}"
    if card.kind is CardKind.FOREIGNER:
        put(0, 120, card.name)
        put(120, 2, _SEX_CODES[card.sex])
        put(122, 30, card.id_number)
        put(152, 6, card.ethnicity)
        put(188, 16, f"{card.valid_from:%Y%m%d}")
        put(204, 16, valid_to)
        put(220, 4, "05")
        put(224, 8, card.issuing_authority)
        put(232, 16, f"{card.birth_date:%Y%m%d}")
        put(248, 2, "I")
        return bytes(block)
    put(0, 30, card.name)
    put(30, 2, _SEX_CODES[card.sex])
    put(32, 4, _ETHNICITY_CODES.get(card.ethnicity, card.ethnicity))
    put(36, 16, f"{card.birth_date:%Y%m%d}")
    put(52, 70, card.address)
    put(122, 36, card.id_number)
    put(158, 30, card.issuing_authority)
    put(188, 16, f"{card.valid_from:%Y%m%d}")
    put(204, 16, valid_to)
    if card.kind is CardKind.HMT_PERMIT:
        put(220, 18, card.pass_number or "")
        put(238, 4, "00")
        put(248, 2, "J")
    return bytes(block)


def photo_blob(card: IdCard) -> bytes:
    """The card's own 1024-byte photo, or random-looking bytes fixed by its ID number."""
    if len(card.photo) == PHOTO_SIZE:
        return card.photo
    return b"WLf" + random.Random(card.id_number).randbytes(PHOTO_SIZE - 3)  # noqa: S311 (no secret)


def base_info_reply(card: IdCard) -> bytes:
    """The whole 1295-byte reply to read-base-information."""
    data = TEXT_SIZE.to_bytes(2, "big") + PHOTO_SIZE.to_bytes(2, "big")
    return encode_reply(OK, data + encode_text_block(card) + photo_blob(card))


# --- the simulator -------------------------------------------------------------------------


class FaultKind(StrEnum):
    BAD_CHECKSUM = "bad_checksum"
    TRUNCATE = "truncate"
    STATUS = "status"
    SILENCE = "silence"
    GARBAGE = "garbage"


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one reply: to the next reply to `command`, or to the next reply at all."""

    kind: FaultKind
    command: SamCommand | None = None
    status: int = 0x41
    """SW3 sent instead of the real reply (STATUS)."""
    keep: int | None = None
    """Bytes of the reply that are sent (TRUNCATE); half the frame when None."""
    garbage: bytes = b"\x00\x13\xaa\x55\xff\x96"


_DEVICE_STATUS = {
    SamReason.BAD_CHECKSUM: 0x10,
    SamReason.BAD_LENGTH: 0x11,
    SamReason.OVERSIZED: 0x11,
}
_WRITE_TIMEOUT_S = 1.0


class SamSimulator:
    """A SAM reader on the master side of a pty; the driver opens `path`."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = Path(os.ttyname(self._slave))
        self._lock = threading.Lock()
        self._card: IdCard | None = None
        self._faults: deque[Fault] = deque()
        self._silent = False
        self.replies: Counter[str] = Counter()
        """Replies sent, by kind: find_found, find_no_card, select, read, status_XX, silent."""
        self.read_written: deque[float] = deque(maxlen=100_000)
        """`time.perf_counter()` at the write() that completed each reply to a read command
        (taken just before that call: the reader cannot have seen the bytes any earlier)."""
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._closed = False

    def present(self, card: IdCard) -> None:
        with self._lock:
            self._card = card

    def remove(self) -> None:
        with self._lock:
            self._card = None

    def inject(self, fault: Fault, times: int = 1) -> None:
        with self._lock:
            self._faults.extend([fault] * times)

    def silence(self, silent: bool = True) -> None:
        """Stop (or resume) answering anything, like a reader that lost power."""
        with self._lock:
            self._silent = silent

    def start(self) -> SamSimulator:
        self._thread = threading.Thread(target=self._serve, name=f"samsim:{self.path}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close both ends of the pty (the reader sees its device go)."""
        if self._closed:
            return  # closing again could close descriptors that now belong to others
        self._closed = True
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(5)
            self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> SamSimulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        decoder = FrameDecoder()
        poller = select.poll()
        poller.register(self._master, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll(1000)}
            if self._wake_r in ready:
                return
            if not ready:
                decoder.expire()
                continue
            try:
                chunk = os.read(self._master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return
            for item in decoder.feed(chunk):
                self._answer(item)

    def _answer(self, item: Frame | SamRejection) -> None:
        if isinstance(item, SamRejection):  # what a reader says to a bad frame; garbage: nothing
            status = _DEVICE_STATUS.get(item.reason)
            if status is not None:
                self._send(encode_reply(status), f"status_{status:02x}")
            return
        try:
            command = SamCommand(item.body[:2])
        except ValueError:
            self._send(encode_reply(0x21), "status_21")
            return
        with self._lock:
            card = self._card
            silent = self._silent
            fault = next((f for f in self._faults if f.command in (None, command)), None)
            if fault is not None:
                self._faults.remove(fault)
        if silent or (fault is not None and fault.kind is FaultKind.SILENCE):
            self.replies["silent"] += 1
            return
        reply, kind = self._reply(command, card)
        if fault is not None:
            reply, kind = _spoil(reply, kind, fault)
        self._send(reply, kind, command is SamCommand.READ_BASE)

    @staticmethod
    def _reply(command: SamCommand, card: IdCard | None) -> tuple[bytes, str]:
        if command is SamCommand.FIND:
            if card is None:
                return encode_reply(NO_CARD), "find_no_card"
            return encode_reply(FOUND, bytes(4)), "find_found"
        if card is None:
            status = 0x81 if command is SamCommand.SELECT else 0x41
            return encode_reply(status), f"status_{status:02x}"
        if command is SamCommand.SELECT:
            return encode_reply(OK, bytes(8)), "select"
        return base_info_reply(card), "read"

    def _send(self, data: bytes, kind: str, is_read: bool = False) -> None:
        deadline = time.monotonic() + _WRITE_TIMEOUT_S
        writable = select.poll()
        writable.register(self._master, select.POLLOUT)
        view = memoryview(data)
        started = 0.0
        while view:
            started = time.perf_counter()  # before the write that may complete the reply
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                written = 0
            except OSError:
                return
            view = view[written:]
            if view:
                left = deadline - time.monotonic()
                if left <= 0:
                    return  # nobody reads the other end; drop the rest
                writable.poll(left * 1000)
        if is_read:
            self.read_written.append(started)
        self.replies[kind] += 1


def _spoil(reply: bytes, kind: str, fault: Fault) -> tuple[bytes, str]:
    if fault.kind is FaultKind.BAD_CHECKSUM:
        return reply[:-1] + bytes([reply[-1] ^ 0x5A]), kind
    if fault.kind is FaultKind.TRUNCATE:
        return reply[: len(reply) // 2 if fault.keep is None else fault.keep], kind
    if fault.kind is FaultKind.GARBAGE:
        return fault.garbage + reply, kind
    return encode_reply(fault.status), f"status_{fault.status:02x}"


# --- realistic people ----------------------------------------------------------------------

_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛段雷侯龙史陶贺顾毛郝龚邵"
)
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华建国志红玉梅海燕晓文斌鹏宇浩然欣怡子涵"
_UYGHUR = ("阿卜杜拉·买买提", "古丽娜尔·艾力", "艾克拜尔·吐尔逊", "热依拉·阿不都")
_REGIONS = (  # code, address prefix, issuing authority
    ("330102", "浙江省杭州市上城区", "杭州市公安局上城分局"),
    ("330106", "浙江省杭州市西湖区", "杭州市公安局西湖分局"),
    ("330108", "浙江省杭州市滨江区", "杭州市公安局滨江分局"),
    ("330203", "浙江省宁波市海曙区", "宁波市公安局海曙分局"),
    ("330302", "浙江省温州市鹿城区", "温州市公安局鹿城分局"),
    ("330402", "浙江省嘉兴市南湖区", "嘉兴市公安局南湖分局"),
    ("330602", "浙江省绍兴市越城区", "绍兴市公安局越城分局"),
    ("330782", "浙江省义乌市", "义乌市公安局"),
    ("331002", "浙江省台州市椒江区", "台州市公安局椒江分局"),
    ("341002", "安徽省黄山市屯溪区", "黄山市公安局屯溪分局"),
    ("360102", "江西省南昌市东湖区", "南昌市公安局东湖分局"),
    ("411302", "河南省南阳市宛城区", "南阳市公安局宛城分局"),
    ("430102", "湖南省长沙市芙蓉区", "长沙市公安局芙蓉分局"),
    ("511302", "四川省南充市顺庆区", "南充市公安局顺庆分局"),
    ("522601", "贵州省凯里市", "凯里市公安局"),
)
_STREETS = ("文三路", "天目山路", "解放路", "中山路", "人民路", "建设路", "学院路", "新华路")
_VILLAGES = ("石桥村", "新丰村", "红旗村", "桃源村", "王家村", "下沙村")
_FOREIGN = (("USA", "SMITH"), ("DEU", "MUELLER"), ("KOR", "KIM"), ("JPN", "TANAKA"))
_FOREIGN_GIVEN = ("JOHN", "ANNA", "MIN JUN", "KENJI", "SOPHIE", "DAVID")


def _years_later(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def _validity(birth: date, issued: date) -> int | None:
    """Years a resident card issued at that age is valid (GA 490: 5, 10, 20, for life)."""
    age = (issued - birth).days // 365
    return 5 if age < 16 else 10 if age <= 25 else 20 if age <= 45 else None


def make_card(
    rng: random.Random, kind: CardKind = CardKind.RESIDENT, today: date | None = None
) -> IdCard:
    """One plausible, currently valid card whose ID number has the right check character."""
    today = today or date.today()
    birth = today - timedelta(days=rng.randint(18 * 365, 75 * 365))
    male = rng.random() < 0.5
    order = rng.randrange(0, 1000, 2) + (1 if male else 0)
    photo = b"WLf" + rng.randbytes(PHOTO_SIZE - 3)
    code, prefix, authority = rng.choice(_REGIONS)
    if kind is CardKind.FOREIGNER:
        nation, surname = rng.choice(_FOREIGN)
        issued = today - timedelta(days=rng.randint(0, 9 * 365))
        permit = f"{nation}33{birth:%y%m%d}{order % 1000:03d}{rng.randrange(10)}"
        return IdCard(
            kind=kind,
            name=f"{surname}, {rng.choice(_FOREIGN_GIVEN)}",
            sex="男" if male else "女",
            ethnicity=nation,
            birth_date=birth,
            address="",
            id_number=permit,
            issuing_authority="1500",
            valid_from=issued,
            valid_to=_years_later(issued, 10),
            photo=photo,
        )
    region = code if kind is CardKind.RESIDENT else rng.choice(("810000", "820000", "830000"))
    first17 = f"{region}{birth:%Y%m%d}{order % 1000:03d}"
    ethnicity = "汉" if rng.random() < 0.85 else rng.choice(("回", "壮", "苗", "满", "土家", "畲"))
    name = rng.choice(_SURNAMES) + "".join(rng.choices(_GIVEN, k=rng.randint(1, 2)))
    if kind is CardKind.RESIDENT and rng.random() < 0.03:
        ethnicity, name = "维吾尔", rng.choice(_UYGHUR)
    if kind is CardKind.HMT_PERMIT or code.startswith("33"):
        address = f"{prefix}{rng.choice(_STREETS)}{rng.randint(1, 999)}号"
        address += f"{rng.randint(1, 30)}幢{rng.randint(1, 30)}0{rng.randint(1, 6)}室"
    else:
        address = f"{prefix}{rng.choice(_VILLAGES)}{rng.randint(1, 12)}组{rng.randint(1, 99)}号"
    recent = 4 if kind is CardKind.HMT_PERMIT else 9
    issued = max(today - timedelta(days=rng.randint(0, recent * 365)), _years_later(birth, 16))
    years = 5 if kind is CardKind.HMT_PERMIT else _validity(birth, issued)
    return IdCard(
        kind=kind,
        name=name,
        sex="男" if male else "女",
        ethnicity="" if kind is CardKind.HMT_PERMIT else ethnicity,
        birth_date=birth,
        address=address,
        id_number=first17 + check_character(first17),
        issuing_authority=authority,
        valid_from=issued,
        valid_to=None if years is None else _years_later(issued, years),
        pass_number=_pass_number(rng, region) if kind is CardKind.HMT_PERMIT else None,
        photo=photo,
    )


def _pass_number(rng: random.Random, region: str) -> str:
    digits = f"{rng.randrange(10**8):08d}"
    return {"810000": "H", "820000": "M"}.get(region, "") + digits


def make_people(count: int, seed: int = 0, today: date | None = None) -> list[IdCard]:
    """`count` cards: mostly resident (some valid for life), about 1 in 10 `J`, 1 in 40 `I`."""
    rng = random.Random(seed)  # noqa: S311 (made-up people, reproducible by seed)
    kinds = [CardKind.RESIDENT] * 35 + [CardKind.HMT_PERMIT] * 4 + [CardKind.FOREIGNER]
    return [make_card(rng, rng.choice(kinds), today) for _ in range(count)]


def main(argv: list[str] | None = None) -> None:
    """Serve `--count` empty readers until stdin closes (for benchmarks in another process)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1)
    args = parser.parse_args(argv)
    sims = [SamSimulator().start() for _ in range(args.count)]
    try:
        for sim in sims:
            print(sim.path, flush=True)
        sys.stdin.read()
    finally:
        for sim in sims:
            sim.stop()


if __name__ == "__main__":
    main()
