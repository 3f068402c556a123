"""`rentgate user add|disable|list`: accounts for the web UI, from the gateway's shell.

Passwords are typed twice at a prompt (never on the command line, where `ps`
and shell history would keep them) or read from a file. Every change is
written to the audit log as done by `cli:{os user}`.
"""

from __future__ import annotations

import argparse
import getpass
import sqlite3
import sys
from pathlib import Path
from typing import Any

from gateway.config import Config


def add_parsers(commands: Any) -> None:
    user = commands.add_parser("user", help="web UI accounts: add, disable, list")
    actions = user.add_subparsers(dest="user_command", required=True)
    add = actions.add_parser("add", help="add an account (prompts for the password twice)")
    add.add_argument("--config", type=Path, required=True)
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["admin", "landlord", "coordinator"])
    add.add_argument(
        "--unit", action="append", default=[], help="a unit the landlord owns (repeat for more)"
    )
    add.add_argument("--password-file", type=Path, help="read the password from this file")
    disable = actions.add_parser("disable", help="the account can no longer log in; sessions end")
    disable.add_argument("--config", type=Path, required=True)
    disable.add_argument("name")
    listing = actions.add_parser("list", help="accounts, roles, units, disabled or not")
    listing.add_argument("--config", type=Path, required=True)


def run_users(config: Config, args: argparse.Namespace) -> int:
    from gateway.clock import SystemClock
    from gateway.runtime.parts import open_store
    from gateway.store.db import connect
    from gateway.store.errors import StoreError

    open_store(config)
    now = SystemClock(config.gateway.timezone).now().isoformat()
    conn = connect(config.gateway.database)
    try:
        if args.user_command == "list":
            return _list(conn)
        if args.user_command == "disable":
            return _disable(conn, args.name, now)
        return _add(conn, args, now)
    except StoreError as exc:  # AccountError included: the name is taken, no such user, …
        print(f"rentgate user: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()


def _list(conn: sqlite3.Connection) -> int:
    from gateway.store import users

    for user in users.list_users(conn):
        state = f"disabled {user.disabled_at}" if user.disabled_at else "active"
        print(f"{user.name}\t{user.role}\t{','.join(sorted(user.units)) or '-'}\t{state}")
    return 0


def _disable(conn: sqlite3.Connection, name: str, now: str) -> int:
    from gateway.store import users
    from gateway.store.db import transaction

    with transaction(conn):
        users.disable_user(conn, name, now)
        users.append_audit(
            conn,
            at=now,
            user_id=None,
            actor=_actor(),
            action="user.disable",
            subject=f"user:{name}",
        )
    print(f"user {name}: disabled, sessions ended")
    return 0


def _add(conn: sqlite3.Connection, args: argparse.Namespace, now: str) -> int:
    from gateway.api import auth
    from gateway.store import users
    from gateway.store.db import transaction

    problem = auth.name_problem(args.name)
    if args.role == "landlord" and not args.unit:
        problem = "a landlord needs at least one --unit"
    if problem:
        print(f"rentgate user: {problem}", file=sys.stderr)
        return 2
    password = _password(args.password_file)
    if password is None:
        return 2
    password_hash = auth.hash_password(password)
    units = sorted(set(args.unit))
    with transaction(conn):
        users.create_user(
            conn,
            name=args.name,
            role=args.role,
            password_hash=password_hash,
            created_at=now,
            units=units,
        )
        users.append_audit(
            conn,
            at=now,
            user_id=None,
            actor=_actor(),
            action="user.add",
            subject=f"user:{args.name}",
            detail=f"role {args.role}, units {','.join(units) or '-'}",
        )
    print(f"user {args.name}: added as {args.role}")
    return 0


def _password(path: Path | None) -> str | None:
    """The new password (checked against the policy), or None after saying why not."""
    from gateway.api.auth import password_problem

    if path is not None:
        try:
            password = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"rentgate user: cannot read {path}: {exc}", file=sys.stderr)
            return None
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("rentgate user: the two passwords differ", file=sys.stderr)
            return None
    if problem := password_problem(password):
        print(f"rentgate user: {problem}", file=sys.stderr)
        return None
    return password


def _actor() -> str:
    """Who made a change from the shell, for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"
