"""`rentgate demo`: the embedded default, on real parts.

A private Mosquitto on a free loopback port and a gateway with three readers,
each a simulator speaking its device's real protocol to the real driver: an
OSDP card reader at the front door (a libosdp peripheral on a pty, secure
channel on, its relay driving the strike and its door contact watched), an
ID-card SAM reader at unit 3's door (the SAM frame protocol on a pty), and a
line reader on a FIFO at the front door that now and then gets a garbled line.
Demo tenants are enrolled; cards are shown (known, unknown, a lost one), ID
cards laid on the SAM reader, the front door opened after a grant and now and
then forced. A platform-side subscriber prints every event the platform
receives, residence alerts and door alarms included, and opens the sealed
personal fields of terminal captures with the demo platform's encryption key
(made in the work dir, configured as `[platform] encryption_key`). Ctrl-C (or
--duration) stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import secrets
import shutil
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.api.auth import hash_password
from gateway.clock import SystemClock
from gateway.config import Config, load_config
from gateway.devices.osdp.keys import write_key
from gateway.devices.osdp.simulator import OsdpSimBus, SimPeripheral
from gateway.devices.sam.simulator import SamSimulator, make_card
from gateway.domain.credentials import CredentialKind, CredentialStatus, parse_credential
from gateway.domain.idcard import CardKind, IdCard
from gateway.domain.ids import IdNumber, check_character
from gateway.domain.people import CredentialGrant, Enrolment, Tenancy
from gateway.domain.personal import open_event
from gateway.domain.sealed_box import OpeningKey, SealError
from gateway.domain.signing import SigningKey
from gateway.runtime.gateway import run_gateway
from gateway.runtime.parts import open_store
from gateway.store import registry, users
from gateway.store.db import connect, transaction
from gateway.sync.local_broker import LocalBroker
from gateway.sync.platform_acks import AckTracker, ack_command, envelope_seqs, state_acked_seq

GATEWAY_ID = "GW-DEMO"


def demo_id_number(first17: str) -> IdNumber:
    return IdNumber(first17 + check_character(first17))


TENANTS = (
    ("王小明", demo_id_number("34100219900101123"), "04A1B2C3D4", "3", "301"),
    ("李娜", demo_id_number("51010719950615002"), "04E5F60718", "3", "302"),
    ("陈刚", demo_id_number("41010219881120051"), "04C0FFEE42", "5", "501"),
)
LOST_CARD = "0499887766"
UNKNOWN_CARDS = ("04DEADBEEF", "0411223344")
GARBLE = (b"\x00\x01\xfe\n", b"not-a-card\n", b"Z" * 3000 + b"\n")


def platform_key(workdir: Path) -> tuple[OpeningKey, Path]:
    """The demo platform's encryption key pair (kept in the work dir, reused on a re-run)."""
    folder = workdir / "platform-keys"
    existing = sorted(folder.glob("x-*.key")) if folder.exists() else []
    if existing:
        return OpeningKey.load(existing[0]), existing[0].with_suffix(".pub")
    key = OpeningKey.generate()
    return key, key.save(folder)[1]


def platform_signer(workdir: Path) -> tuple[SigningKey, Path]:
    """The demo platform's signing key pair: it signs the acks of what it has shown, so the
    gateway counts those events delivered (kept in the work dir, reused on a re-run)."""
    folder = workdir / "platform-keys"
    existing = sorted(folder.glob("k-*.key")) if folder.exists() else []
    if existing:
        return SigningKey.load(existing[0]), existing[0].with_suffix(".pub")
    key = SigningKey.generate()
    return key, key.save(folder)[1]


def write_config(
    workdir: Path,
    broker_url: str,
    sam_path: str,
    osdp_path: str,
    web_port: int = 0,
    *,
    encryption_key: Path | None = None,
) -> Path:
    path = workdir / "gateway.toml"
    data = workdir / "data"
    path.write_text(
        f"""# Written by `rentgate demo`.
[gateway]
id = "{GATEWAY_ID}"
data_dir = "{data}"

[mqtt]
url = "{broker_url}"
reconnect_max_s = 5

[api]
listen = "127.0.0.1:{web_port}"

[platform]
encryption_key = "{encryption_key or platform_key(workdir)[1]}"
keys = ["{platform_signer(workdir)[1]}"]

[[doors]]
name = "front"
held_open_s = 8

[[devices]]
kind = "osdp"
door = "front"
path = "{osdp_path}"
address = 1
key_file = "{workdir / "front-osdp.key"}"
name = "front-osdp"

[[doors]]
name = "unit-3"
units = ["3"]

[[devices]]
kind = "line"
door = "front"
path = "{workdir / "front.reader"}"
credential = "card_uid"

[[devices]]
kind = "idcard-sam"
door = "unit-3"
path = "{sam_path}"
name = "unit-3-idcard"
""",
        encoding="utf-8",
    )
    return path


def enrol_tenants(config: Config) -> None:
    keys = open_store(config)
    clock = SystemClock(config.gateway.timezone)
    now = clock.now()
    conn = connect(config.gateway.database)
    try:
        with transaction(conn):
            for name, id_number, card, unit, room in TENANTS:
                grants = (
                    CredentialGrant(parse_credential(CredentialKind.CARD_UID, card)),
                    CredentialGrant(parse_credential(CredentialKind.ID_NUMBER, id_number.value)),
                )
                tenancy = Tenancy(unit, now - timedelta(days=30), now + timedelta(days=335), room)
                registry.enrol(conn, keys, Enrolment(id_number, name, grants, tenancy), now)
            lost = registry.enrol(
                conn,
                keys,
                Enrolment(
                    TENANTS[0][1],
                    TENANTS[0][0],
                    (CredentialGrant(parse_credential(CredentialKind.CARD_UID, LOST_CARD)),),
                ),
                now,
            )
            registry.set_credential_status(conn, lost.credential_ids[0], CredentialStatus.LOST, now)
    finally:
        conn.close()


WEB_PORT = 8443
DEMO_ACCOUNTS = (("demo-admin", "admin", ()), ("demo-landlord", "landlord", ("3",)))


def free_web_port(preferred: int) -> int:
    """`preferred` if nothing listens there on loopback, else any free port."""
    for port in (preferred, 0):
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
            return int(probe.getsockname()[1])
    return 0


def add_demo_accounts(config: Config) -> dict[str, str]:
    """An admin and the landlord of unit 3, each with a fresh random password (printed once:
    there is no default password, in the demo either)."""
    passwords = {name: secrets.token_urlsafe(9) for name, _role, _units in DEMO_ACCOUNTS}
    conn = connect(config.gateway.database)
    try:
        with transaction(conn):
            for name, role, units in DEMO_ACCOUNTS:
                users.create_user(
                    conn,
                    name=name,
                    role=role,
                    password_hash=hash_password(passwords[name]),
                    created_at=SystemClock(config.gateway.timezone).now().isoformat(),
                    units=units,
                )
    finally:
        conn.close()
    return passwords


def make_fifo(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.mkfifo(path, 0o600)


def id_cards() -> list[IdCard]:
    """The tenants' ID cards as the SAM simulator holds them (one household is local)."""
    rng = random.Random(3)  # noqa: S311 - made-up people
    addresses = (
        "浙江省杭州市西湖区文三路 90 号",
        "四川省成都市武侯区人民南路 4 段",
        "河南省郑州市金水区",
    )
    return [
        dataclasses.replace(
            make_card(rng, CardKind.RESIDENT), name=name, id_number=id_number.value, address=address
        )
        for (name, id_number, *_rest), address in zip(TENANTS, addresses, strict=True)
    ]


async def feed_taps(
    workdir: Path, rate: float, stop: asyncio.Event, sam: SamSimulator, osdp: SimPeripheral
) -> None:
    """Simulated taps at about `rate` per second: cards at the front, ID cards on the SAM reader."""
    front = os.open(workdir / "front.reader", os.O_RDWR | os.O_NONBLOCK)
    chooser = random.Random(7)  # noqa: S311 - a demo's taps, not a secret
    cards = id_cards()
    loop = asyncio.get_running_loop()
    card_away_at = 0.0
    try:
        while not stop.is_set():
            roll = chooser.random()
            if roll < 0.45:
                card = chooser.choice(TENANTS)[2]
                osdp.present_card(int(card, 16), 4 * len(card))
                if chooser.random() < 0.3:  # the tenant walks through
                    loop.call_later(0.5, lambda: osdp.set_contact(open_=True))
                    loop.call_later(2.5, lambda: osdp.set_contact(open_=False))
            elif roll < 0.5:
                if chooser.random() < 0.2:  # somebody forces the door
                    osdp.set_contact(open_=True)
                    loop.call_later(1.5, lambda: osdp.set_contact(open_=False))
                else:
                    os.write(front, chooser.choice(TENANTS)[2].encode() + b"\n")
            elif roll < 0.7:
                if loop.time() > card_away_at + 1.0:  # the last card has left the field
                    sam.present(chooser.choice(cards))
                    loop.call_later(0.8, sam.remove)  # lifted off after a moment
                    card_away_at = loop.time() + 0.8
            elif roll < 0.8:
                osdp.present_card(int(LOST_CARD, 16), 4 * len(LOST_CARD))
            elif roll < 0.93:
                unknown = chooser.choice(UNKNOWN_CARDS)
                osdp.present_card(int(unknown, 16), 4 * len(unknown))
            else:
                os.write(front, chooser.choice(GARBLE))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=chooser.expovariate(rate))
    finally:
        os.close(front)


def describe(event: dict[str, object]) -> str:
    kind = event.get("type")
    if kind == "access.decision":
        credential = event.get("credential") or {}
        assert isinstance(credential, dict)
        return (
            f"door={event['door']:<7} {str(event['result']).upper():<5} "
            f"{event['reason']:<14} {credential.get('kind')}:{credential.get('masked')}"
        )
    if kind == "device.status":
        return f"device={event['device']} online={event['online']}"
    if kind in ("alert.raised", "alert.cleared"):
        return f"{event['rule']} {event.get('id_masked') or ''} {event.get('deadline') or ''}"
    if kind == "door.alarm":
        return f"door={event['door']} {event['alarm']} {event['state']} {event['detail'] or ''}"
    return json.dumps(event, ensure_ascii=False)


def platform_subscriber(
    broker: LocalBroker, keys: list[OpeningKey], signer: SigningKey
) -> paho.Client:
    """The platform's view: print every envelope and state message as it arrives, sealed
    personal fields opened with the platform's `keys`, and acknowledge (signed by `signer`)
    each run of events it has shown, as the real platform does once it has stored them."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="demo-platform", protocol=paho.MQTTv5
    )
    shown = AckTracker()

    def acknowledge(through: int | None) -> None:
        if through is None:
            return
        ack = ack_command(signer, GATEWAY_ID, through, int(time.time()))
        client.publish(f"rentgate/v1/{GATEWAY_ID}/cmd/ack", ack, qos=1)

    def on_message(_c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        if not message.topic.endswith(("/events", "/state")):
            return  # its own acks, and replies to commands
        payload = bytes(message.payload)
        if (seen := envelope_seqs(payload)) is not None:
            acknowledge(shown.add(*seen))
        elif (state := state_acked_seq(payload)) is not None:
            shown.floor(*state)
        document = json.loads(message.payload)
        if message.topic.endswith("/state"):
            print(
                f"[platform] state  online={document['online']} backlog={document.get('backlog')}",
                flush=True,
            )
            return
        for sealed in document["events"]:
            try:
                event = open_event(keys, GATEWAY_ID, sealed)
            except SealError as exc:
                event = {**sealed, "sealed_error": exc.problem.value}
            print(
                f"[platform] seq {event['seq']:>5}  {event['type']:<16} {describe(event)}",
                flush=True,
            )

    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.subscribe(f"rentgate/v1/{GATEWAY_ID}/#", qos=1)
    client.loop_start()
    return client


def run_demo(
    duration: float | None, rate: float, workdir: Path | None, web_port: int = WEB_PORT
) -> int:
    keep = workdir is not None
    root = workdir or Path(tempfile.mkdtemp(prefix="rentgate-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(workdir=root)
    broker.start()
    opening_key, public_key = platform_key(root)
    subscriber = platform_subscriber(broker, [opening_key], platform_signer(root)[0])
    sam = SamSimulator().start()
    osdp_line = OsdpSimBus()
    key = secrets.token_bytes(16)
    write_key(root / "front-osdp.key", key)
    osdp_reader = osdp_line.add(1, key)
    osdp_line.start()
    try:
        port = free_web_port(web_port)
        config_file = write_config(
            root, broker.url, str(sam.path), str(osdp_line.path), port, encryption_key=public_key
        )
        config = load_config(config_file)
        make_fifo(root / "front.reader")
        enrol_tenants(config)
        passwords = add_demo_accounts(config)
        print(f"Rentgate demo: broker {broker.url}, files in {root}", flush=True)
        print(
            f"Web UI: https://127.0.0.1:{port}/ui/ (the gateway's own self-signed certificate)",
            flush=True,
        )
        for name, password in passwords.items():
            print(f"  log in as {name}, password {password}", flush=True)
        print(
            "Simulated cards and ID cards go to the readers; every line below is what the platform"
            " receives. Ctrl-C stops.",
            flush=True,
        )
        asyncio.run(
            _serve(config, config_file, rate=rate, duration=duration, sam=sam, osdp=osdp_reader)
        )
    finally:
        sam.stop()
        osdp_line.close()
        subscriber.loop_stop()
        subscriber.disconnect()
        broker.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    print("demo stopped", file=sys.stderr)
    return 0


async def _serve(
    config: Config,
    config_file: Path,
    *,
    rate: float,
    duration: float | None,
    sam: SamSimulator,
    osdp: SimPeripheral,
) -> None:
    stop = asyncio.Event()
    if duration is not None:
        asyncio.get_running_loop().call_later(duration, stop.set)
    root = config_file.parent
    taps = asyncio.create_task(feed_taps(root, rate, stop, sam, osdp), name="demo-taps")
    try:
        await run_gateway(
            config,
            stop,
            config_path=config_file,
            log_settings=("json", logging.getLevelName(logging.getLogger().level)),
        )
    finally:
        stop.set()
        await taps
