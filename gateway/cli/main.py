"""`rentgate`: the parser and dispatch of every command group; `run` and `demo` themselves."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.cli.enroll import add_parsers as add_enroll_parsers
from gateway.cli.enroll import run_enroll
from gateway.cli.exit_codes import EXIT_CONFIG, EXIT_FAILURE
from gateway.cli.platform import add_parsers as add_platform_parsers
from gateway.cli.platform import run_alerts, run_platform
from gateway.cli.service import add_parsers as add_service_parsers
from gateway.cli.service import run_install_service
from gateway.cli.status import add_parsers as add_status_parsers
from gateway.cli.status import run_status
from gateway.cli.store import add_parsers as add_store_parsers
from gateway.cli.store import run_store_command
from gateway.cli.terminal_tokens import add_parsers as add_terminal_parsers
from gateway.cli.terminal_tokens import run_terminal
from gateway.cli.users import add_parsers as add_user_parsers
from gateway.cli.users import run_users
from gateway.cli.voucher import add_parsers as add_voucher_parsers
from gateway.cli.voucher import run_voucher
from gateway.config import Config, ConfigError, load_config, missing_files
from gateway.domain.sealed_box import SealingKeyError
from gateway.domain.signing import SigningKeyError
from gateway.ops.logs import FORMATS, configure_logging
from gateway.store.errors import StoreError

DESCRIPTION = "Rentgate's edge gateway: run it, enrol tenants, show its status, run the demo."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rentgate", description=DESCRIPTION)
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
    run.add_argument(
        "--web",
        choices=("child", "none"),
        default="child",
        help="child: start the web process too (one command); none: the door core only, the"
        " web runs as `rentgate web` under a unit and a user of its own",
    )
    web = commands.add_parser(
        "web", help="run the web UI, REST API and terminal endpoint (beside a running door core)"
    )
    web.add_argument("--config", type=Path, required=True)

    demo = commands.add_parser("demo", help="local broker + gateway + simulated taps")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument("--rate", type=float, default=1.0, help="simulated taps per second")
    demo.add_argument("--workdir", type=Path, default=None, help="keep the demo's files here")
    demo.add_argument(
        "--web-port", type=int, default=8443, help="the web UI's port (any free one if taken)"
    )
    add_enroll_parsers(commands)
    add_status_parsers(commands)
    add_platform_parsers(commands)
    add_voucher_parsers(commands)
    add_terminal_parsers(commands)
    add_store_parsers(commands)
    add_service_parsers(commands)
    add_user_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "install-service":  # its unit files are for systemd and root to read
        os.umask(0o077)  # the data dir, backups, keys: readable by this user only
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
    except (SigningKeyError, SealingKeyError) as exc:  # a platform key the config names
        print(f"rentgate: {exc}", file=sys.stderr)
        return EXIT_CONFIG
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
        return _run(config, args)
    commands = {
        "web": lambda: _web(config),
        "terminal": lambda: run_terminal(config, args),
        "user": lambda: run_users(config, args),
        "backup": lambda: run_store_command(config, args),
        "restore": lambda: run_store_command(config, args),
        "alerts": lambda: run_alerts(config, as_json=args.json),
        "enroll": lambda: run_enroll(config, args),
        "status": lambda: run_status(config, as_json=args.json),
    }
    return commands[args.command]()


def _run(config: Config, args: argparse.Namespace) -> int:
    from gateway.runtime.gateway import run_gateway

    path = args.config.resolve() if args.web == "child" else None
    log_settings = (args.log_format, args.log_level)
    asyncio.run(
        run_gateway(
            config, asyncio.Event(), config_path=path, log_settings=log_settings, web=args.web
        )
    )
    return 0


def _web(config: Config) -> int:
    from gateway.runtime.web_process import run_web

    asyncio.run(run_web(config, asyncio.Event()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
