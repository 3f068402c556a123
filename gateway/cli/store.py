"""`rentgate backup` (online) and `rentgate restore` (gateway stopped) of the store file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.ops.status import read_status_file


def add_parsers(commands: Any) -> None:
    backup = commands.add_parser("backup", help="copy the store while the gateway runs")
    backup.add_argument("--config", type=Path, required=True)
    backup.add_argument("--out", type=Path, required=True, help="the backup file to write")
    restore = commands.add_parser("restore", help="put a backup back (gateway stopped)")
    restore.add_argument("--config", type=Path, required=True)
    restore.add_argument("backup", type=Path)


def run_store_command(config: Config, args: argparse.Namespace) -> int:
    from gateway.store import maintenance
    from gateway.store.errors import StoreError

    database = config.gateway.database
    try:
        if args.command == "backup":
            maintenance.backup(database, args.out)
            print(f"backup written to {args.out} ({args.out.stat().st_size} bytes, checked)")
            print("it holds personal data sealed with the gateway's key file: keep both safe")
            return 0
        live = read_status_file(config.gateway.status_file)
        if live is not None and live.running:
            print("rentgate restore: the gateway is running; stop it first", file=sys.stderr)
            return 1
        kept = maintenance.restore(args.backup, database)
    except (StoreError, OSError) as exc:
        print(f"rentgate {args.command}: {exc}", file=sys.stderr)
        return 1
    print(f"restored {args.backup} into {database}")
    if kept is not None:
        print(f"the store it replaced is kept as {kept}")
    print("undelivered events recorded after the backup are not in it: they are lost")
    return 0
