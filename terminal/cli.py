"""`rentgate-terminal`: capture registrations offline on a handheld, sync them when online.

    rentgate-terminal init --terminal T-01 --gateway https://gw:8443 --token-file T --ca ca.pem
    rentgate-terminal capture registration --id-number … --name … --building B1 --unit 302
    rentgate-terminal pending
    rentgate-terminal sync
    rentgate-terminal status
    rentgate-terminal scan --image voucher.jpg | --camera 0
    rentgate-terminal read-id --sam /dev/ttyUSB0
    rentgate-terminal precheck application.json

Every command says what it did and what is still pending. Exit status: 0 done,
1 the gateway or the queue failed (nothing lost: records stay pending), 2 bad
input or no config (nothing changed).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from gateway.devices.protocols import ReaderError
from gateway.domain.capture import CapturedRecord, CaptureKind
from gateway.domain.events import uuid7
from gateway.domain.signing import SigningKeyError, VerifyKey
from terminal import config as cfg
from terminal.checks import KEYS_DIR, CheckError, add_commands, read_image
from terminal.queue import Queue, QueuedRecord, QueueError, RecordState, create_key, load_key
from terminal.sync import GatewayClient, GatewaySettings, SyncError, sync

OK, FAILED, BAD_INPUT = 0, 1, 2
BAR_WIDTH = 20


class _BadInput(Exception):
    """Refused before anything changed; the message says what to fix."""


def main(argv: Sequence[str] | None = None) -> int:
    # The co-ordinator reads stderr: progress and clear messages, not httpx's request log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    home: Path = args.home or cfg.default_home()
    try:
        return int(args.run(args, home))
    except (_BadInput, cfg.TerminalConfigError, CheckError) as exc:
        print(f"rentgate-terminal: {exc}", file=sys.stderr)
        return BAD_INPUT
    except ReaderError as exc:
        print(f"rentgate-terminal: the ID-card reader failed: {exc}", file=sys.stderr)
        return FAILED
    except QueueError as exc:
        print(f"rentgate-terminal: {exc}", file=sys.stderr)
        return FAILED


def _now() -> datetime:
    return datetime.now().astimezone()


def _open_queue(home: Path) -> Queue:
    return Queue(home / cfg.QUEUE_NAME, load_key(home / cfg.KEY_NAME))


# -- init ----------------------------------------------------------------------


def _init(args: argparse.Namespace, home: Path) -> int:
    token = args.token
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _BadInput(f"cannot read the token file: {exc}") from exc
    if not token:
        raise _BadInput("give the terminal's token with --token or --token-file")
    try:
        config = cfg.TerminalConfig(
            terminal=args.terminal, gateway_url=args.gateway, token=token, ca_file=args.ca
        )
    except ValidationError as exc:
        raise _BadInput(f"not set up: {cfg.describe(exc)}") from exc
    create_key(home / cfg.KEY_NAME)
    with _open_queue(home) as queue:
        pending = queue.pending_count()
        if (home / cfg.CONFIG_NAME).exists():
            old = cfg.load(home)
            if old.terminal != config.terminal and pending:
                raise _BadInput(
                    f"{pending} record(s) captured as terminal {old.terminal} are still pending:"
                    " sync them before changing the terminal id (or use another --home)"
                )
        path = cfg.save(home, config)
    for key_path in args.platform_key:
        try:
            key = VerifyKey.load(key_path)
        except SigningKeyError as exc:
            raise _BadInput(f"platform key not kept: {exc}") from exc
        (home / KEYS_DIR).mkdir(exist_ok=True)
        (home / KEYS_DIR / f"{key.kid}.pub").write_bytes(key.pem())
        print(f"Platform key {key.kid} kept for verifying vouchers.")
    print(f"Terminal {config.terminal} set up for gateway {config.gateway_url}.")
    print(f"Config written to {path} (it holds the token: readable by you only).")
    print(f"{_records(pending)} pending. Check the gateway with `rentgate-terminal status`.")
    return OK


# -- capture -------------------------------------------------------------------


def _capture(args: argparse.Namespace, home: Path) -> int:
    config = cfg.load(home)
    kind = CaptureKind(args.kind)
    now = _now()
    voucher = args.voucher
    if args.voucher_image is not None:
        voucher = _voucher_from_image(args.voucher_image)
    moved_in, moved_out = args.moved_in, args.moved_out
    defaulted = ""
    if kind is CaptureKind.DEPARTURE and moved_out is None:
        moved_out, defaulted = now.date(), " (today: give --moved-out for another day)"
    elif kind is not CaptureKind.DEPARTURE and moved_in is None:
        moved_in, defaulted = now.date(), " (today: give --moved-in for another day)"
    try:
        record = CapturedRecord(
            record_id=uuid7(),
            terminal=config.terminal,
            kind=kind,
            captured_at=now,
            id_number=args.id_number,
            name=args.name,
            building=args.building,
            unit=args.unit,
            room=args.room,
            moved_in_on=moved_in,
            moved_out_on=moved_out,
            workplace=args.workplace,
            phone=args.phone,
            voucher=voucher,
        )
    except ValidationError as exc:
        raise _BadInput(f"not captured: {cfg.describe(exc)}") from exc
    with _open_queue(home) as queue:
        queue.add(record)
        pending = queue.pending_count()
    place = f"building {record.building}, unit {record.unit}"
    if record.room:
        place += f", room {record.room}"
    when = (
        f"moved out {record.moved_out_on}"
        if kind is CaptureKind.DEPARTURE
        else f"since {record.moved_in_on}"
    )
    print(
        f"Captured {kind.value} {record.record_id} for {record.id_masked} at {place},"
        f" {when}{defaulted}{', with voucher' if voucher else ''}."
    )
    print(f"Saved on this terminal: {_records(pending)} pending sync.")
    return OK


def _voucher_from_image(path: Path) -> str:
    """The voucher QR text in a photo: the hook to the scanner (verification is elsewhere)."""
    from terminal.scan import decode

    try:
        frame = read_image(path)
    except CheckError as exc:
        raise _BadInput(f"not captured: {exc}") from exc
    texts = sorted(set(decode(frame)))
    if not texts:
        raise _BadInput(f"not captured: no voucher QR code found in {path}; take another photo")
    if len(texts) > 1:
        raise _BadInput(f"not captured: {len(texts)} different QR codes in {path}; photograph one")
    return texts[0]


# -- pending / status ---------------------------------------------------------------


def _pending(args: argparse.Namespace, home: Path) -> int:
    cfg.load(home)
    with _open_queue(home) as queue:
        counts = queue.counts()
        waiting = queue.listed(RecordState.PENDING, args.limit)
        rejected = queue.listed(RecordState.REJECTED, args.limit)
    if not counts.pending and not counts.rejected:
        print(f"Nothing pending: all {_records(counts.sent)} captured here are at the gateway.")
        return OK
    if counts.pending:
        print(f"{_records(counts.pending)} pending sync (oldest first):")
        for item in waiting:
            print(f"  {_line(item)}")
        if counts.pending > len(waiting):
            print(f"  … and {counts.pending - len(waiting)} more")
    if counts.rejected:
        print(f"{_records(counts.rejected)} rejected by the gateway (kept here):")
        for item in rejected:
            line = _line(item)
            print(f"  {line}\n      why: {item.reason}")
        print("  After the cause is fixed: `rentgate-terminal sync --retry-rejected`.")
    if counts.pending:
        print("Run `rentgate-terminal sync` when the gateway is reachable.")
    return OK


def _line(item: QueuedRecord) -> str:
    captured = item.captured_at[:16].replace("T", " ")
    return (
        f"#{item.n:<5} {item.kind:<12} {item.record_id[:13]}  {item.id_masked}"
        f"  {item.building}/{item.unit}  captured {captured}"
    )


def _status(_args: argparse.Namespace, home: Path) -> int:
    config = cfg.load(home)
    with _open_queue(home) as queue:
        counts = queue.counts()
        last = queue.get_meta("last_sync")
    print(f"Terminal {config.terminal}, gateway {config.gateway_url}")
    print(
        f"Queue: {counts.pending} pending, {counts.sent} at the gateway,"
        f" {counts.rejected} rejected ({_records(counts.total)} captured here)"
    )
    print(f"Last sync: {last or 'never'}")
    try:
        with _client(config, timeout_s=5) as client:
            known_as = client.ping()
    except SyncError as exc:
        print(f"Gateway: not usable now ({exc.reason.value}): {exc}")
        print("Captures keep working offline; they stay queued until a sync gets through.")
        return OK
    if known_as != config.terminal:
        print(f"Gateway: reachable, but the token belongs to terminal {known_as}")
    else:
        print("Gateway: reachable, token accepted.")
    return OK


def _client(config: cfg.TerminalConfig, timeout_s: float = 30.0) -> GatewayClient:
    return GatewayClient(
        GatewaySettings(config.gateway_url, config.token, config.ca_file, timeout_s=timeout_s)
    )


# -- sync ----------------------------------------------------------------------


class _Bar:
    """`[#####-----] 250/500` on stderr: redrawn in place on a terminal, a line each otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        filled = BAR_WIDTH * done // total if total else BAR_WIDTH
        bar = f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done}/{total}"
        self._stream.write(f"\r{bar}" if self._tty else f"{bar}\n")
        self._stream.flush()
        self.drawn = True

    def end(self) -> None:
        if self._tty and self.drawn:
            self._stream.write("\n")
            self._stream.flush()


def _sync(args: argparse.Namespace, home: Path) -> int:
    config = cfg.load(home)
    with _open_queue(home) as queue:
        if args.retry_rejected:
            print(f"{_records(queue.retry_rejected())} rejected before put back in line.")
        before = queue.pending_count()
        if before == 0:
            print("Nothing to sync: no records pending.")
            return OK
        bar = _Bar(sys.stderr)
        try:
            with _client(config) as client:
                report = sync(
                    queue,
                    client,
                    terminal=config.terminal,
                    now=_now,
                    batch_size=args.batch,
                    progress=bar,
                )
        except SyncError as exc:
            bar.end()
            left = queue.pending_count()
            print(f"Sync stopped: {exc}.", file=sys.stderr)
            print(
                f"{before - left} of {before} records reached the gateway before that;"
                f" {_records(left)} still pending on this terminal, nothing lost."
                " Run `rentgate-terminal sync` again when this is fixed.",
                file=sys.stderr,
            )
            return FAILED
        bar.end()
        left = queue.pending_count()
        queue.set_meta("last_sync", f"{_now().isoformat(timespec='seconds')} ({report.sent} sent)")
    print(
        f"Synced {_records(report.sent)} to {config.gateway_url}: {report.stored} stored,"
        f" {report.duplicates} the gateway already had."
    )
    if report.rejected:
        print(
            f"{_records(report.rejected)} rejected by the gateway: see `rentgate-terminal pending`."
        )
    print(f"{_records(left)} pending." if left else "Nothing pending.")
    return OK if not report.rejected else FAILED


def _records(count: int) -> str:
    return f"{count} record" if count == 1 else f"{count} records"


# -- arguments -----------------------------------------------------------------


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from exc


def _batch(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError("batch must be 1..100 records")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rentgate-terminal", description="Capture registrations offline and sync them."
    )
    parser.add_argument("--home", type=Path, help=f"terminal directory (${cfg.HOME_ENV})")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="set up this terminal for a gateway")
    init.add_argument("--terminal", required=True, help="this terminal's id, e.g. T-01")
    init.add_argument("--gateway", required=True, help="https://host:port of the gateway")
    token = init.add_mutually_exclusive_group(required=True)
    token.add_argument("--token", help="the terminal's token (from `rentgate terminal add`)")
    token.add_argument("--token-file", type=Path, help="a file holding the token")
    init.add_argument("--ca", required=True, type=Path, help="CA file for the gateway's cert")
    init.add_argument(
        "--platform-key",
        type=Path,
        action="append",
        default=[],
        help="the platform's public key (PEM) to verify vouchers with; repeatable",
    )
    init.set_defaults(run=_init)

    capture = commands.add_parser("capture", help="capture a registration, change or departure")
    capture.add_argument("kind", choices=[kind.value for kind in CaptureKind])
    capture.add_argument("--id-number", required=True)
    capture.add_argument("--name", required=True)
    capture.add_argument("--building", required=True)
    capture.add_argument("--unit", required=True)
    capture.add_argument("--room")
    capture.add_argument("--moved-in", type=_day, help="YYYY-MM-DD (default today)")
    capture.add_argument("--moved-out", type=_day, help="YYYY-MM-DD (departure; default today)")
    capture.add_argument("--workplace")
    capture.add_argument("--phone")
    voucher = capture.add_mutually_exclusive_group()
    voucher.add_argument("--voucher", help="voucher QR text, verified at the platform")
    voucher.add_argument("--voucher-image", type=Path, help="photo of the voucher QR code")
    capture.set_defaults(run=_capture)

    pending = commands.add_parser("pending", help="list records not yet at the gateway")
    pending.add_argument("--limit", type=int, default=50, help="records to list (default 50)")
    pending.set_defaults(run=_pending)

    sync_command = commands.add_parser("sync", help="send pending records to the gateway")
    sync_command.add_argument("--batch", type=_batch, default=100, help="records per request")
    sync_command.add_argument(
        "--retry-rejected", action="store_true", help="send rejected records again"
    )
    sync_command.set_defaults(run=_sync)

    status = commands.add_parser("status", help="queue counts and whether the gateway answers")
    status.set_defaults(run=_status)
    add_commands(commands, lambda run: run)
    return parser


if __name__ == "__main__":
    sys.exit(main())
