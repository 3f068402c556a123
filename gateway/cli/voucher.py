"""`rentgate voucher …`: issue residence-registration vouchers (the platform's side, for tests,
demos and integrators) and verify them as a door or terminal would, offline.

Exit codes: 0 valid (or done), 1 voucher rejected or not the holder's, 2 usage.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from gateway.domain.ids import IdNumber, mask
from gateway.domain.signing import SigningKey, SigningKeyError, VerifyKey
from gateway.domain.voucher import (
    BINDING_KEY_BYTES,
    MAX_TEXT,
    Voucher,
    VoucherError,
    issue,
    mask_name,
    verify,
)
from gateway.errors import RentgateError

EXIT_REJECTED = 1
EXIT_USAGE = 2
QR_ERROR_LEVEL = "m"
"""15 % of the symbol may be lost: enough for a scuffed print, still version 11 for a voucher."""


class UsageError(RentgateError):
    """A file or argument the command cannot use; printed, exit 2."""


def add_parsers(commands: Any) -> None:
    """Register `voucher` and its actions on the main parser's subcommands."""
    voucher = commands.add_parser("voucher", help="issue and verify registration vouchers")
    actions = voucher.add_subparsers(dest="voucher_command", required=True)

    binding = actions.add_parser("binding-key", help="create the platform's ID binding key")
    binding.add_argument("--out", type=Path, required=True, help="file to create (mode 0600)")

    make = actions.add_parser("issue", help="sign a voucher and print its RV1: text")
    make.add_argument(
        "--key", type=Path, required=True, metavar="PRIVATE.pem", help="platform private key (PEM)"
    )
    make.add_argument(
        "--binding-key", type=Path, required=True, metavar="FILE", help="ID binding key file"
    )
    make.add_argument("--registration", required=True, help="registration id")
    make.add_argument("--name", required=True, help="holder's name")
    make.add_argument("--id-number", required=True, help="holder's 18-character ID number")
    make.add_argument("--building", required=True)
    make.add_argument("--unit", required=True)
    make.add_argument("--registered-on", type=_iso_date, required=True, metavar="DATE")
    make.add_argument("--valid-until", type=_iso_date, required=True, metavar="DATE")
    make.add_argument("--voucher-id", type=uuid.UUID, help="default: a random UUID")
    make.add_argument("--png", type=Path, metavar="FILE", help="also draw the QR code as PNG")
    make.add_argument("--svg", type=Path, metavar="FILE", help="also draw the QR code as SVG")

    check = actions.add_parser("verify", help="verify a voucher offline and say whose it is")
    check.add_argument(
        "--keys",
        nargs="+",
        action="extend",
        required=True,
        metavar="PUB",
        help="trusted platform public keys: PEM files, or directories of *.pub",
    )
    check.add_argument(
        "--binding-key", type=Path, metavar="FILE", help="ID binding key, to check --id-number"
    )
    check.add_argument("--id-number", help="ID number read from the card presented with it")
    check.add_argument(
        "--today", type=_iso_date, metavar="DATE", help="validity on this day (default: today)"
    )
    check.add_argument("text", nargs="?", metavar="TEXT", help="RV1: text, @FILE, or - for stdin")


def run_voucher(args: argparse.Namespace) -> int:
    """Run one `voucher` action; print the outcome; return the exit code."""
    try:
        if args.voucher_command == "binding-key":
            return _binding_key(args.out)
        if args.voucher_command == "issue":
            return _issue(args)
        return _verify(args)
    except (UsageError, SigningKeyError) as exc:
        print(f"rentgate voucher: {exc}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (`python -m gateway.cli.voucher voucher …`) until `rentgate` has it."""
    parser = argparse.ArgumentParser(prog="rentgate")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return run_voucher(parser.parse_args(argv))


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from exc


def _binding_key(path: Path) -> int:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise UsageError(f"{path} exists; not overwriting a key") from exc
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(os.urandom(BINDING_KEY_BYTES).hex() + "\n")
    print(f"binding key written to {path}")
    print("Keep it with the platform; give it only to doors that check ID cards against vouchers.")
    return 0


def _load_binding_key(path: Path) -> bytes:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read binding key {path}: {exc}") from exc
    if mode & 0o077:
        raise UsageError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != BINDING_KEY_BYTES:
        raise UsageError(f"{path} must hold {BINDING_KEY_BYTES} bytes as hex")
    return key


def _issue(args: argparse.Namespace) -> int:
    key = SigningKey.load(args.key)
    binding_key = _load_binding_key(args.binding_key)
    try:
        voucher = Voucher.new(
            registration_id=args.registration,
            holder_name=args.name,
            id_number=IdNumber(args.id_number),
            binding_key=binding_key,
            building=args.building,
            unit=args.unit,
            registered_on=args.registered_on,
            valid_until=args.valid_until,
            issued_at=datetime.now(UTC),
            voucher_id=args.voucher_id,
        )
        text = issue(voucher, key)
    except ValueError as exc:
        raise UsageError(f"cannot issue: {exc}") from exc
    print(text)
    qr = _qr(text)
    print(
        f"voucher {voucher.voucher_id} for {mask_name(voucher.holder_name)} "
        f"({voucher.id_masked}), key {key.kid}: {len(text)} characters, "
        f"QR version {qr.version}-{QR_ERROR_LEVEL.upper()}",
        file=sys.stderr,
    )
    for path, kind in ((args.png, "png"), (args.svg, "svg")):
        if path is not None:
            try:
                qr.save(str(path), kind=kind, scale=6, border=4)
            except OSError as exc:
                raise UsageError(f"cannot write {path}: {exc.strerror}") from exc
            print(f"QR code written to {path}", file=sys.stderr)
    return 0


def _qr(text: str) -> Any:
    import segno

    return segno.make_qr(text, error=QR_ERROR_LEVEL, boost_error=False)


def _verify(args: argparse.Namespace) -> int:
    keys, source = list(args.keys), args.text
    if source is None:  # `--keys A.pub B.pub TEXT`: argparse leaves TEXT among the keys
        if len(keys) < 2:
            raise UsageError("give the voucher: RV1: text, @FILE, or - for stdin")
        source = keys.pop()
    if args.binding_key is not None and args.id_number is None:
        raise UsageError("--binding-key needs --id-number (the ID number to check)")
    trusted = _load_keys(keys)
    binding_key = None if args.binding_key is None else _load_binding_key(args.binding_key)
    today = args.today or date.today()
    try:
        voucher = verify(_read_text(source), trusted, today)
    except VoucherError as exc:
        print(f"REJECTED ({exc.reason.value}): {exc.detail}")
        return EXIT_REJECTED
    print(f"VALID voucher {voucher.voucher_id}, signed by {voucher.issuer}")
    print(f"  holder         {voucher.holder_name}, ID {voucher.id_masked}")
    print(f"  registration   {voucher.registration_id}")
    print(f"  address        {voucher.building}, unit {voucher.unit}")
    print(f"  registered on  {voucher.registered_on}")
    left = (voucher.valid_until - today).days
    print(f"  valid until    {voucher.valid_until} ({left} days left)")
    print(f"  issued at      {voucher.issued_at:%Y-%m-%d %H:%M:%S} UTC")
    if args.id_number is None:
        return 0
    if binding_key is not None:
        matches = voucher.binds(args.id_number, binding_key)
        how = "binding hash"
    else:
        matches = voucher.shows(args.id_number)
        how = "masked digits only; give --binding-key for the full check"
    verdict = "matches the holder" if matches else "does NOT match the holder"
    print(f"  ID card        {mask(args.id_number.strip())} {verdict} ({how})")
    return 0 if matches else EXIT_REJECTED


def _load_keys(paths: Sequence[str]) -> dict[str, VerifyKey]:
    trusted: dict[str, VerifyKey] = {}
    for name in paths:
        path = Path(name)
        files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
        if not files:
            raise UsageError(f"no *.pub key files in {path}")
        for file in files:
            key = VerifyKey.load(file)
            trusted[key.kid] = key
    return trusted


def _read_text(source: str) -> str:
    """The voucher text; a file or stdin is read only as far as a voucher could reach."""
    limit = MAX_TEXT * 4
    if source == "-":
        return sys.stdin.read(limit).strip()
    if source.startswith("@"):
        try:
            with open(source[1:], encoding="utf-8", errors="replace") as handle:
                return handle.read(limit).strip()
        except OSError as exc:
            raise UsageError(f"cannot read {source[1:]}: {exc.strerror}") from exc
    return source.strip()


if __name__ == "__main__":
    sys.exit(main())
