"""`rentgate terminal add|revoke`: give a co-ordinator's handheld its token, or take it back."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.config import Config


def add_parsers(commands: Any) -> None:
    terminal = commands.add_parser("terminal", help="handheld terminals: issue or revoke tokens")
    actions = terminal.add_subparsers(dest="terminal_command", required=True)
    add = actions.add_parser("add", help="issue a terminal's token (re-issuing revokes the old)")
    add.add_argument("--config", type=Path, required=True)
    add.add_argument("terminal", help="terminal id, e.g. T-01")
    revoke = actions.add_parser("revoke", help="the terminal's token stops working at once")
    revoke.add_argument("--config", type=Path, required=True)
    revoke.add_argument("terminal")


def run_terminal(config: Config, args: argparse.Namespace) -> int:
    from gateway.api.server import fingerprint, self_signed
    from gateway.clock import SystemClock
    from gateway.residence.intake import issue_token_offline
    from gateway.runtime.parts import open_store
    from gateway.store import terminal_records
    from gateway.store.db import connect, transaction
    from gateway.store.errors import StoreError

    open_store(config)
    clock = SystemClock(config.gateway.timezone)
    try:
        if args.terminal_command == "add":
            token = issue_token_offline(config.gateway.database, args.terminal, clock)
        else:
            conn = connect(config.gateway.database)
            try:
                with transaction(conn):
                    revoked = terminal_records.revoke_terminal(conn, args.terminal, clock.now())
            finally:
                conn.close()
            if not revoked:
                print(f"no active terminal {args.terminal!r}", file=sys.stderr)
                return 1
            print(f"terminal {args.terminal}: token revoked")
            return 0
    except (StoreError, ValueError) as exc:
        print(f"rentgate terminal: {exc}", file=sys.stderr)
        return 2
    cert = config.api.cert
    if cert is None:
        cert, _key = self_signed(config.web_state_dir / "tls", config.api.host)
    print(f"terminal {args.terminal}: token (shown once, keep it on the handheld only):")
    print(token)
    print(f"gateway certificate for the terminal's CA file: {cert}")
    print(f"  SHA-256 fingerprint {fingerprint(cert)}")
    return 0
