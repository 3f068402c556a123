"""`rentgate platform …` (the platform's tool) and `rentgate alerts` (what is due here)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from gateway.cli import provision
from gateway.config import Config

EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_NO_REPLY = 3


def add_parsers(commands: Any) -> None:
    """Register `platform` and `alerts` on the main parser's subcommands."""
    platform = commands.add_parser(
        "platform",
        help="the platform's side: keys, broker identities, signed commands, watching a gateway",
    )
    actions = platform.add_subparsers(dest="platform_command", required=True)

    keygen = actions.add_parser("keygen", help="create an Ed25519 platform key pair")
    keygen.add_argument("--dir", type=Path, required=True, help="where to write KID.key/.pub")

    send = actions.add_parser("send", help="sign a command, send it, print the gateway's reply")
    _broker_options(send)
    send.add_argument("--gateway", required=True, help="gateway id")
    send.add_argument("--key", type=Path, required=True, help="platform private key (PEM)")
    send.add_argument("name", help="command name, e.g. allowlist.delta")
    send.add_argument("body", nargs="?", default="{}", help="JSON body, @FILE, or - for stdin")
    send.add_argument(
        "--ttl", type=int, default=None, help="seconds until it expires (300; door.unlock 60)"
    )
    send.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the reply")
    send.add_argument("--response-topic", help="MQTT 5 response topic (default: cmd-reply)")

    provision.add_parser(actions)

    watch = actions.add_parser("watch", help="print a gateway's events, state and replies")
    _broker_options(watch)
    watch.add_argument("--gateway", default="+", help="gateway id, or + for every gateway")
    watch.add_argument("--seconds", type=float, default=60.0)

    alerts = commands.add_parser("alerts", help="open residence alerts at this gateway")
    alerts.add_argument("--config", type=Path, required=True)
    alerts.add_argument("--json", action="store_true")


def _broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    parser.add_argument("--ca", type=Path)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--client-key", type=Path)


def run_platform(args: argparse.Namespace) -> int:
    if args.platform_command == "provision":
        return provision.run_provision(args)
    return _with_keys(args)


def _with_keys(args: argparse.Namespace) -> int:
    from gateway.domain.signing import SigningKey, SigningKeyError

    try:
        if args.platform_command == "keygen":
            key = SigningKey.generate()
            private, public = key.save(args.dir)
            print(f"key id {key.kid}\n  private: {private}\n  public:  {public}")
            print("Give the public key to gateways ([platform] keys); keep the private one safe.")
            return 0
        if args.platform_command == "send":
            return _send(args, SigningKey.load(args.key))
        return _watch(args)
    except SigningKeyError as exc:
        print(f"rentgate platform: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionError as exc:
        print(f"rentgate platform: {exc}", file=sys.stderr)
        return EXIT_NO_REPLY
    except FileExistsError as exc:
        print(f"rentgate platform: {exc.filename} exists; not overwriting a key", file=sys.stderr)
        return EXIT_USAGE


def _settings(args: argparse.Namespace) -> Any:
    from gateway.sync.link import BrokerSettings, TlsSettings

    tls = (
        TlsSettings(args.ca, args.cert, args.client_key)
        if args.broker.startswith("mqtts")
        else None
    )
    return BrokerSettings.from_url(args.broker, "platform-tool", tls=tls)


def _read_body(text: str) -> Any:
    if text == "-":
        return json.load(sys.stdin)
    if text.startswith("@"):
        return json.loads(Path(text[1:]).read_text(encoding="utf-8"))
    return json.loads(text)


def _send(args: argparse.Namespace, key: Any) -> int:
    from gateway.domain.command_bodies import snapshot_pages
    from gateway.domain.signed_commands import MAX_LIFETIME_S, CommandName, sign
    from gateway.sync.platform_client import PlatformClient

    try:
        name = CommandName(args.name)
    except ValueError:
        known = ", ".join(n.value for n in CommandName)
        print(f"rentgate platform: unknown command {args.name!r} (known: {known})", file=sys.stderr)
        return EXIT_USAGE
    try:
        body = _read_body(args.body)
    except (OSError, ValueError) as exc:
        print(f"rentgate platform: cannot read the body: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ttl = args.ttl or min(300, MAX_LIFETIME_S.get(name, 300))
    bodies = [body]
    if name is CommandName.ALLOWLIST_SNAPSHOT and "page" not in body:
        bodies = snapshot_pages(body["version"], body["people"])  # one command per page
    reply = None
    with PlatformClient(_settings(args)) as client:
        for page in bodies:
            signed = sign(
                key,
                gateway_id=args.gateway,
                name=name,
                body=page,
                now=int(time.time()),
                ttl_s=ttl,
            )
            reply = client.command(
                args.gateway,
                name.value,
                signed,
                timeout=args.wait,
                response_topic=args.response_topic,
            )
            if reply is None or not reply.get("ok"):
                break
            if len(bodies) > 1:
                print(f"page {page['page']}/{page['pages']} staged", file=sys.stderr)
    if reply is None:
        print(
            f"no reply from {args.gateway} within {args.wait:.0f} s: it may be offline;"
            " re-sending is safe (a command is applied at most once)",
            file=sys.stderr,
        )
        return EXIT_NO_REPLY
    print(json.dumps(reply, ensure_ascii=False))
    return 0 if reply.get("ok") else EXIT_REJECTED


def _watch(args: argparse.Namespace) -> int:
    from gateway.sync.platform_client import PlatformClient, watch

    with PlatformClient(_settings(args)) as client:
        count = watch(client, args.gateway, print, seconds=args.seconds)
    print(f"{count} message(s) in {args.seconds:.0f} s", file=sys.stderr)
    return 0


def run_alerts(config: Config, *, as_json: bool) -> int:
    from gateway.store import residents
    from gateway.store.db import connect

    conn = connect(config.gateway.database, readonly=True)
    try:
        alerts = residents.open_alerts(conn)
    finally:
        conn.close()
    if as_json:
        rows = [
            {
                "alert": a.id,
                "rule": a.rule,
                "person": a.person_id,
                "raised": a.raised_at,
                "deadline": a.deadline,
                **a.detail,
            }
            for a in alerts
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not alerts:
        print("no open alerts")
        return 0
    for alert in alerts:
        who = alert.detail.get("id_masked") or alert.person_id
        due = f" deadline {alert.deadline}" if alert.deadline else ""
        print(f"[{alert.detail.get('severity', '?')}] {alert.rule} {who}{due}")
        print(f"    {alert.detail.get('action', '')}")
    print(f"{len(alerts)} open alert(s)")
    return 0
