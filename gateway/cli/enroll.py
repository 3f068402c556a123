"""`rentgate enroll`: a tenant, their credentials and tenancy, from the gateway's shell.

Works while the gateway runs: the change is logged with the person it concerns,
and the running gateway applies it to its access index within a second.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.cli.exit_codes import EXIT_CONFIG, EXIT_FAILURE
from gateway.config import Config


def add_parsers(commands: Any) -> None:
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


def _moment(text: str | None, zone: str) -> datetime | None:
    if text is None:
        return None
    from zoneinfo import ZoneInfo

    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))


def run_enroll(config: Config, args: argparse.Namespace) -> int:
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
