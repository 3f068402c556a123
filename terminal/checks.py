"""The co-ordinator's checks: whose voucher is this, whose ID card, is the application complete.

    rentgate-terminal scan --image photo.jpg | --video clip.mp4 | --camera 0
    rentgate-terminal read-id --sam /dev/ttyUSB0
    rentgate-terminal precheck application.json

Vouchers are verified offline against the platform's public keys kept in
`<home>/platform-keys/` (copied there by `init --platform-key`). The ID-card
reader is the gateway's own SAM driver; the pre-check is the rules' one
complete list of missing materials (R3, 一次性告知).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gateway.domain.eligibility import Applicant, Eligibility, check_application
from gateway.domain.signing import SigningKeyError, VerifyKey
from gateway.domain.voucher import Voucher, VoucherError, verify
from gateway.errors import RentgateError

KEYS_DIR = "platform-keys"
OK, FAILED, BAD_INPUT = 0, 1, 2


class CheckError(RentgateError):
    """Refused before anything was checked; the message says what to fix."""


def add_commands(commands: Any, handler: Callable[..., int]) -> None:
    """Register scan, read-id and precheck; `handler` wraps each run function."""
    scan = commands.add_parser("scan", help="read a voucher QR and say whose it is")
    source = scan.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="a photo of the voucher")
    source.add_argument("--video", type=Path, help="a video file")
    source.add_argument("--camera", type=int, help="camera index (OpenCV VideoCapture)")
    scan.add_argument("--seconds", type=float, default=15.0, help="give up after (camera/video)")
    scan.set_defaults(run=handler(run_scan))

    read_id = commands.add_parser("read-id", help="read an ID card on a SAM reader")
    read_id.add_argument("--sam", type=Path, required=True, help="the reader's serial port")
    read_id.add_argument("--seconds", type=float, default=20.0, help="wait this long for a card")
    read_id.set_defaults(run=handler(run_read_id))

    precheck = commands.add_parser("precheck", help="pre-check a residence-permit application")
    precheck.add_argument("application", type=Path, help="the application's facts (JSON)")
    precheck.add_argument("--today", type=date.fromisoformat, default=None)
    precheck.set_defaults(run=handler(run_precheck))


# -- vouchers ------------------------------------------------------------------


def platform_keys(home: Path) -> dict[str, VerifyKey]:
    directory = home / KEYS_DIR
    keys: dict[str, VerifyKey] = {}
    for path in sorted(directory.glob("*.pub")) if directory.is_dir() else []:
        try:
            key = VerifyKey.load(path)
        except SigningKeyError as exc:
            raise CheckError(f"platform key {path} is unusable: {exc}") from exc
        keys[key.kid] = key
    if not keys:
        raise CheckError(
            f"no platform keys in {directory}: run `rentgate-terminal init … --platform-key"
            " PLATFORM.pub` (from the platform) to verify vouchers"
        )
    return keys


def read_image(path: Path) -> Any:
    """A photo as a BGR frame; `CheckError` saying why when it cannot be read or decoded."""
    import cv2
    import numpy as np

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckError(f"cannot read image {path}: {exc.strerror}") from exc
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if frame is None:
        raise CheckError(f"{path} is not a readable image (corrupt or unsupported)")
    return frame


def frames(args: argparse.Namespace) -> Iterator[Any]:
    """Frames from an image, a video file or a camera, for at most `seconds`."""
    import cv2

    if args.image is not None:
        yield read_image(args.image)
        return
    source = str(args.video) if args.video is not None else args.camera
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise CheckError(f"cannot open {'video ' + str(args.video) if args.video else 'camera'}")
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def describe(voucher: Voucher, today: date) -> str:
    left = (voucher.valid_until - today).days
    return "\n".join(
        [
            f"Voucher {voucher.voucher_id} — VALID (until {voucher.valid_until}, {left} days left)",
            f"  holder:       {voucher.holder_name} ({voucher.id_masked})",
            f"  registered:   {voucher.building}, unit {voucher.unit}, on {voucher.registered_on}",
            f"  registration: {voucher.registration_id}; signed by {voucher.issuer}",
        ]
    )


def run_scan(args: argparse.Namespace, home: Path) -> int:
    from terminal.scan import decode

    keys = platform_keys(home)
    today = date.today()
    seen: set[str] = set()
    for frame in frames(args):
        for text in decode(frame):
            if text in seen:
                continue
            seen.add(text)
            try:
                voucher = verify(text, keys, today)
            except VoucherError as exc:
                print(f"Not a valid voucher: {exc.reason.value} ({exc.detail})")
                continue
            print(describe(voucher, today))
            return OK
    if seen:
        return FAILED
    print("No QR code found: hold the voucher flat, fill the frame, avoid glare.")
    return BAD_INPUT


# -- ID cards ------------------------------------------------------------------


def run_read_id(args: argparse.Namespace, _home: Path) -> int:
    from terminal.idcard_reader import read_one_card

    card = asyncio.run(read_one_card(args.sam, args.seconds))
    if card is None:
        print(f"No ID card read within {args.seconds:.0f} s: lay the card flat on the reader.")
        return FAILED
    print(f"{card.kind.value} card {card.masked_id}")
    print(f"  name:      {card.name}")
    print(f"  born:      {card.birth_date}   sex: {card.sex}   ethnicity: {card.ethnicity}")
    print(f"  household: {card.address}")
    print(f"  valid:     {card.valid_from} to {card.valid_to or '长期 (no end)'}")
    return OK


# -- permit pre-check ------------------------------------------------------------


_APPLICANT = TypeAdapter(Applicant)


def run_precheck(args: argparse.Namespace, _home: Path) -> int:
    try:
        facts = json.loads(args.application.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckError(f"cannot read {args.application}: {exc.strerror}") from exc
    except ValueError as exc:
        raise CheckError(f"{args.application} is not JSON: {exc}") from exc
    try:
        applicant = _APPLICANT.validate_python(facts)
    except (ValidationError, ValueError) as exc:
        raise CheckError(f"{args.application}: {exc}") from exc
    result = check_application(applicant, args.today or date.today())
    headline = {
        Eligibility.ELIGIBLE: "ELIGIBLE: the materials are complete; the application can be filed.",
        Eligibility.INCOMPLETE: (
            "INCOMPLETE: eligible, but these materials are missing (all of them):"
        ),
        Eligibility.INELIGIBLE: "INELIGIBLE, because:",
    }[result.outcome]
    print(headline)
    for reason in result.reasons:
        print(f"  - {reason.description}")
    if result.outcome is Eligibility.INELIGIBLE and result.missing:
        print("Also missing, should the facts change:")
    for material in result.missing:
        print(f"  - {material.description}")
    return OK if result.outcome is Eligibility.ELIGIBLE else FAILED
