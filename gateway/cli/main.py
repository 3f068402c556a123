"""`rentgate`: run the gateway, enrol tenants, show status, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.cli.platform import add_parsers, run_alerts, run_platform
from gateway.cli.service import add_parsers as add_service_parsers
from gateway.cli.service import run_install_service
from gateway.cli.store import add_parsers as add_store_parsers
from gateway.cli.store import run_store_command
from gateway.cli.terminal_tokens import add_parsers as add_terminal_parsers
from gateway.cli.terminal_tokens import run_terminal
from gateway.cli.users import add_parsers as add_user_parsers
from gateway.cli.users import run_users
from gateway.cli.voucher import add_parsers as add_voucher_parsers
from gateway.cli.voucher import run_voucher
from gateway.clock import iso_ms
from gateway.config import Config, ConfigError, load_config, missing_files
from gateway.ops.logs import FORMATS, configure_logging
from gateway.ops.status import GatewayStatus, read_status_file
from gateway.store.errors import StoreError

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rentgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rentgate {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("RENTGATE_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("RENTGATE_LOG_FORMAT", "json"),
        help="json: one JSON object per line (journald, log shippers); text: for people",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the gateway in the foreground")
    run.add_argument("--config", type=Path, required=True)

    enroll = commands.add_parser("enroll", help="enrol a tenant: person, credentials, tenancy")
    enroll.add_argument("--config", type=Path, required=True)
    enroll.add_argument("--id-number", required=True, help="18-character resident ID number")
    enroll.add_argument("--name", required=True)
    enroll.add_argument("--card-uid", action="append", default=[], help="card serial (hex)")
    enroll.add_argument(
        "--id-card",
        action="store_true",
        help="also let the ID number itself open doors (SAM readers)",
    )
    enroll.add_argument("--unit", help="unit the tenancy is for")
    enroll.add_argument("--room")
    enroll.add_argument("--from", dest="valid_from", help="tenancy start (ISO date/time)")
    enroll.add_argument("--to", dest="valid_to", help="tenancy end (ISO date/time)")

    status = commands.add_parser("status", help="link, outbox depth, oldest unsent, last PUBACK")
    status.add_argument("--config", type=Path, required=True)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    demo = commands.add_parser("demo", help="local broker + gateway + simulated taps")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument("--rate", type=float, default=1.0, help="simulated taps per second")
    demo.add_argument("--workdir", type=Path, default=None, help="keep the demo's files here")
    demo.add_argument(
        "--web-port", type=int, default=8443, help="the web UI's port (any free one if taken)"
    )
    add_parsers(commands)
    add_voucher_parsers(commands)
    add_terminal_parsers(commands)
    add_store_parsers(commands)
    add_service_parsers(commands)
    add_user_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        configure_logging(args.log_format, args.log_level)
    except ValueError as exc:
        print(f"rentgate: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:  # a store from a newer release, an unreadable key file, …
        print(f"rentgate: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from gateway.runtime.demo import run_demo

        return run_demo(args.duration, args.rate, args.workdir, args.web_port)
    if args.command == "platform":
        return run_platform(args)
    if args.command == "voucher":
        return run_voucher(args)
    if args.command == "install-service":
        return run_install_service(args)
    config = load_config(args.config)
    if args.command == "run":
        if problems := missing_files(config):
            raise ConfigError(str(args.config), problems)
        return _run(config)
    commands = {
        "terminal": lambda: run_terminal(config, args),
        "user": lambda: run_users(config, args),
        "backup": lambda: run_store_command(config, args),
        "restore": lambda: run_store_command(config, args),
        "alerts": lambda: run_alerts(config, as_json=args.json),
        "enroll": lambda: _enroll(config, args),
        "status": lambda: _status(config, as_json=args.json),
    }
    return commands[args.command]()


def _run(config: Config) -> int:
    from gateway.runtime.gateway import run_gateway

    asyncio.run(run_gateway(config, asyncio.Event()))
    return 0


def _moment(text: str | None, zone: str) -> datetime | None:
    if text is None:
        return None
    from zoneinfo import ZoneInfo

    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))


def _enroll(config: Config, args: argparse.Namespace) -> int:
    from gateway.clock import SystemClock
    from gateway.domain.credentials import CredentialError, CredentialKind, parse_credential
    from gateway.domain.ids import IdNumber
    from gateway.domain.people import CredentialGrant, Enrolment, Tenancy
    from gateway.runtime.parts import open_store
    from gateway.store import registry
    from gateway.store.db import connect, transaction
    from gateway.store.errors import StoreError

    clock = SystemClock(config.gateway.timezone)
    try:
        id_number = IdNumber(args.id_number)
        grants = [
            CredentialGrant(parse_credential(CredentialKind.CARD_UID, uid)) for uid in args.card_uid
        ]
        if args.id_card:
            grants.append(
                CredentialGrant(parse_credential(CredentialKind.ID_NUMBER, id_number.value))
            )
        tenancy = None
        if args.unit:
            start = _moment(args.valid_from, config.gateway.timezone) or clock.now()
            tenancy = Tenancy(
                args.unit, start, _moment(args.valid_to, config.gateway.timezone), args.room
            )
        enrolment = Enrolment(id_number, args.name, tuple(grants), tenancy)
    except (ValueError, CredentialError) as exc:
        print(f"rentgate enroll: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    keys = open_store(config)
    conn = connect(config.gateway.database)
    try:
        with transaction(conn):
            result = registry.enrol(conn, keys, enrolment, clock.now())
    except StoreError as exc:
        print(f"rentgate enroll: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        conn.close()
    verb = "enrolled" if result.new_person else "updated"
    print(
        f"{verb} {id_number.masked} as person {result.person_id}: "
        f"{len(result.credential_ids)} credential(s)"
        + (f", tenancy in unit {args.unit}" if result.tenancy_id else "")
    )
    return 0


def _status(config: Config, *, as_json: bool) -> int:
    from gateway.store import outbox, registry
    from gateway.store.db import connect
    from gateway.store.errors import StoreError

    report: dict[str, Any] = {"gateway": config.gateway.id}
    try:
        conn = connect(config.gateway.database, readonly=True)
        try:
            stats = outbox.stats(conn)
            report["outbox"] = {
                "head_seq": stats.head_seq,
                "delivered_seq": stats.delivered_seq,
                "depth": stats.depth,
                "oldest_unsent": stats.oldest_unsent_ts.isoformat()
                if stats.oldest_unsent_ts
                else None,
            }
            report["enrolled"] = registry.counts(conn)
        finally:
            conn.close()
    except StoreError as exc:
        report["store_error"] = str(exc)
    live = read_status_file(config.gateway.status_file)
    report["process"] = live.to_json() if live is not None else None
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(_render_status(report, live))
    return 0 if "store_error" not in report else EXIT_FAILURE


def _render_status(report: dict[str, Any], live: GatewayStatus | None) -> str:
    lines = [f"gateway {report['gateway']}"]
    if "store_error" in report:
        lines.append(f"  store: cannot read ({report['store_error']})")
    else:
        box = report["outbox"]
        lines.append(
            f"  outbox: {box['depth']} undelivered (head seq {box['head_seq']}, "
            f"delivered through {box['delivered_seq']})"
        )
        lines.append(f"  oldest unsent: {box['oldest_unsent'] or '-'}")
        enrolled = report["enrolled"]
        lines.append(
            f"  enrolled: {enrolled['people']} people, {enrolled['credentials']} "
            f"credentials, {enrolled['tenancies']} tenancies"
        )
    if live is None or not live.running:
        seen = f" (last seen {iso_ms(live.updated)})" if live else ""
        lines.append("  process: not running" + seen)
        return "\n".join(lines)
    lines.extend(_render_live(live))
    return "\n".join(lines)


def _render_live(live: GatewayStatus) -> list[str]:
    link = live.link
    lines = [f"  process: running (pid {live.pid}, since {iso_ms(live.started)})"]
    lines.append(
        f"  link: {'connected' if link.connected else 'DISCONNECTED'}, "
        f"{link.reconnects} reconnect(s)"
        + (f", last error: {link.last_error}" if link.last_error else "")
    )
    lines.append(f"  last PUBACK: {iso_ms(link.last_puback) if link.last_puback else '-'}")
    for name, reader in live.readers.items():
        state = "online" if reader.online else f"OFFLINE ({reader.error})"
        lines.append(f"  reader {name}: {state}")
    for name, door in live.doors.items():
        alarms = ", ".join(door.alarms) or "no alarms"
        state = "OPEN" if door.open else "closed"
        lines.append(f"  door {name}: {state}, fail-{door.fail_mode}, {alarms}")
    commands = live.commands
    if commands.received:
        lines.append(
            f"  platform commands: {commands.applied} applied, {commands.duplicates}"
            f" repeated, rejected {dict(commands.rejected) or 'none'}"
        )
    if live.rejected_inputs:
        lines.append(f"  rejected reader input: {dict(live.rejected_inputs)}")
    if live.store.failing:
        lines.append(f"  STORE FAILING: {live.store.last_error}")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
