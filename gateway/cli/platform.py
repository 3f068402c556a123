"""`rentgate platform …` (the platform's tool) and `rentgate alerts` (what is due here)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from gateway.cli import platform_ingest as ingest_cli
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

    keygen = actions.add_parser(
        "keygen", help="create a platform key pair: Ed25519 signing, or X25519 encryption"
    )
    keygen.add_argument("--dir", type=Path, required=True, help="where to write KID.key/.pub")
    keygen.add_argument(
        "--encryption",
        action="store_true",
        help="an X25519 pair that gateways seal personal data to ([platform] encryption_key)",
    )

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
    watch.add_argument(
        "--decrypt-key",
        type=Path,
        action="append",
        default=[],
        help="platform encryption private key (PEM) that opens sealed fields; repeat per key id",
    )
    watch.add_argument(
        "--ack",
        action="store_true",
        help="acknowledge what is seen (each gateway's highest contiguous seq), signed by --key",
    )
    watch.add_argument("--key", type=Path, help="platform signing private key (PEM), for --ack")

    ingest_cli.add_parsers(actions, _broker_options)

    alerts = commands.add_parser("alerts", help="open residence alerts at this gateway")
    alerts.add_argument("--config", type=Path, required=True)
    alerts.add_argument("--json", action="store_true")


def _broker_options(parser: argparse.ArgumentParser, *, several: bool = False) -> None:
    """The same broker options for `send`, `watch` and `ingest`, named as the gateway's [mqtt]
    keys; `several` takes a cluster's nodes."""
    if several:
        parser.add_argument(
            "--broker",
            required=True,
            nargs="+",
            help="mqtt://host:port or mqtts://host:port, one per node of a cluster",
        )
    else:
        parser.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    parser.add_argument(
        "--protocol",
        choices=("auto", "5", "3.1.1"),
        default="auto",
        help="MQTT version; auto: 5, or 3.1.1 where the broker refuses 5 (default: auto)",
    )
    parser.add_argument("--username", help="broker user name")
    parser.add_argument(
        "--password-file", type=Path, help="file holding the broker password (not on the line)"
    )
    parser.add_argument("--ca", type=Path, help="CA certificate (PEM) to verify an mqtts:// broker")
    parser.add_argument("--cert", type=Path, help="client certificate (PEM), with --client-key")
    parser.add_argument("--client-key", type=Path, help="client certificate's key (PEM)")


def run_platform(args: argparse.Namespace) -> int:
    if args.platform_command == "provision":
        return provision.run_provision(args)
    if args.platform_command == "fleet":
        return ingest_cli.run_fleet(args)
    if args.platform_command == "ingest":
        try:
            return ingest_cli.run_ingest(args, [_settings(args, url) for url in args.broker])
        except UsageError as exc:
            print(f"rentgate platform: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return _with_keys(args)


def _with_keys(args: argparse.Namespace) -> int:
    from gateway.domain.sealed_box import SealingKeyError
    from gateway.domain.signing import SigningKey, SigningKeyError

    try:
        if args.platform_command == "keygen":
            return _keygen(args.dir, encryption=args.encryption)
        if args.platform_command == "send":
            return _send(args, SigningKey.load(args.key))
        return _watch(args)
    except (SigningKeyError, SealingKeyError, UsageError) as exc:
        print(f"rentgate platform: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionError as exc:
        print(f"rentgate platform: {exc}", file=sys.stderr)
        return EXIT_NO_REPLY
    except FileExistsError as exc:
        print(f"rentgate platform: {exc.filename} exists; not overwriting a key", file=sys.stderr)
        return EXIT_USAGE


def _keygen(directory: Path, *, encryption: bool) -> int:
    from gateway.domain.sealed_box import OpeningKey
    from gateway.domain.signing import SigningKey

    key = OpeningKey.generate() if encryption else SigningKey.generate()
    private, public = key.save(directory)
    print(f"key id {key.kid}\n  private: {private}\n  public:  {public}")
    where = "[platform] encryption_key" if encryption else "[platform] keys"
    print(f"Give the public key to gateways ({where}); keep the private one safe.")
    return 0


class UsageError(Exception):
    """Broker options that do not go together; the message says why."""


def _settings(args: argparse.Namespace, url: str | None = None) -> Any:
    """Broker settings from the options, refused as the gateway's config would refuse them."""
    from gateway.sync.link import BrokerSettings, TlsSettings

    url = url or args.broker
    secure = url.startswith("mqtts://")
    if not secure and any((args.ca, args.cert, args.client_key)):
        raise UsageError("--ca/--cert/--client-key need an mqtts:// broker")
    if (args.cert is None) != (args.client_key is None):
        raise UsageError("--cert and --client-key go together")
    if args.password_file is not None and args.username is None:
        raise UsageError("--password-file needs --username")
    password = None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read {args.password_file}: {exc.strerror}") from exc
    tls = TlsSettings(args.ca, args.cert, args.client_key) if secure else None
    try:
        return BrokerSettings.from_url(
            url,
            "platform-tool",
            tls=tls,
            protocol=args.protocol,
            username=args.username,
            password=password,
        )
    except ValueError as exc:
        raise UsageError(f"--broker: {exc}") from exc


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
        if args.response_topic is not None and client.protocol != "5":
            raise UsageError(
                f"--response-topic needs MQTT 5; {args.broker} speaks {client.protocol}"
                " (replies come on cmd-reply)"
            )
        if name is CommandName.ACK:  # never answered: publish it and be done
            signed = sign(key, gateway_id=args.gateway, name=name, body=body, now=int(time.time()))
            client.publish(f"rentgate/v1/{args.gateway}/cmd/ack", signed)
            print(f"ack sent to {args.gateway} (acks get no reply)", file=sys.stderr)
            return 0
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
    from gateway.domain.sealed_box import OpeningKey
    from gateway.domain.signing import SigningKey
    from gateway.sync.platform_client import Acker, PlatformClient, watch

    if args.ack and args.key is None:
        print("rentgate platform: --ack needs the platform's signing --key", file=sys.stderr)
        return EXIT_USAGE
    key = SigningKey.load(args.key) if args.ack else None
    opener = _Opener([OpeningKey.load(path) for path in args.decrypt_key])
    with PlatformClient(_settings(args)) as client:
        acker = Acker(client, key) if key is not None else None
        count = watch(client, args.gateway, opener.emit, seconds=args.seconds, acker=acker)
    print(f"{count} message(s) in {args.seconds:.0f} s", file=sys.stderr)
    if acker is not None:
        print(f"{acker.sent} ack(s) sent", file=sys.stderr)
    if opener.failed:
        print(f"{opener.failed} sealed box(es) did not open (left sealed)", file=sys.stderr)
    return 0


class _Opener:
    """Prints what `watch` sees, with sealed fields opened when a key is held.

    The cleartext goes to this operator's terminal only. A box that will not
    open (forged, corrupted, moved, another key) stays sealed, with the reason
    beside it, and is counted.
    """

    def __init__(self, keys: list[Any]) -> None:
        self._keys = keys
        self.failed = 0

    def emit(self, line: str) -> None:
        topic, _, text = line.partition(" ")
        if self._keys and topic.endswith("/events"):
            text = self._open(topic.split("/")[2], text)
        print(f"{topic} {text}")

    def _open(self, gateway_id: str, text: str) -> str:
        from gateway.domain.personal import open_event
        from gateway.domain.sealed_box import SealError

        try:
            envelope = json.loads(text)
            events = envelope["events"]
        except (ValueError, KeyError, TypeError):
            return text
        shown = []
        for event in events if isinstance(events, list) else []:
            if not isinstance(event, dict):
                shown.append(event)
                continue
            try:
                shown.append(open_event(self._keys, gateway_id, event))
            except SealError as exc:
                self.failed += 1
                shown.append({**event, "sealed_error": exc.problem.value})
        return json.dumps({**envelope, "events": shown}, ensure_ascii=False)


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
