"""Signed platform commands through a real Mosquitto into a running gateway, and the replies."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.cli import main
from gateway.devices.sim import SimLock
from gateway.domain.signing import SigningKey
from gateway.runtime.gateway import Gateway
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    allowlist_version,
    load,
    wait_for_index,
    wait_until,
    write_config,
    write_taps,
)
from tests.support.platform import Platform, key_file, person_entry

GW = "GW-CMD"
REPLY_PREFIX = "platform/replies/"


@dataclass
class Rig:
    gateway: Gateway
    platform: Platform
    fifo: Path
    subscriber: Subscriber
    key: SigningKey

    def allowlist_version(self) -> int:
        return allowlist_version(self.gateway.config.gateway.database)

    def index_caught_up(self) -> None:
        wait_for_index(self.gateway)

    def decisions(self, count: int) -> list[dict[str, Any]]:
        wait_until(
            lambda: len(self.subscriber.decisions()) >= count, 15, f"{count} access decisions"
        )
        return self.subscriber.decisions()

    def tap(self, *cards: str) -> list[dict[str, Any]]:
        before = len(self.subscriber.decisions())
        write_taps(self.fifo, list(cards))
        return self.decisions(before + len(cards))[before:]


@pytest.fixture
def rig(tmp_path: Path, broker: LocalBroker) -> Iterator[Rig]:
    key, public = key_file(tmp_path / "platform")
    path = write_config(
        tmp_path,
        f"mqtt://127.0.0.1:{broker.port}",
        gateway_id=GW,
        extra=f'[platform]\nkeys = ["{public}"]\nreply_prefix = "{REPLY_PREFIX}"\n',
    )
    subscriber = Subscriber(broker.port, f"rentgate/v1/{GW}/#", client_id="downlink-test")
    running = InProcessGateway(load(path)).start()
    platform = Platform(broker, GW, key, running.gateway.clock)
    running.wait_connected()
    try:
        yield Rig(running.gateway, platform, tmp_path / "front.reader", subscriber, key)
    finally:
        platform.close()
        running.stop()
        subscriber.close()


def snapshot(version: int, people: int, first_card: int = 0) -> dict[str, Any]:
    return {
        "version": version,
        "people": [person_entry(i, [f"C{first_card + i:06X}"]) for i in range(people)],
    }


def test_snapshot_then_deltas_are_applied_replied_and_decide_doors(rig: Rig) -> None:
    reply = rig.platform.send("allowlist.snapshot", snapshot(1, 50))
    assert reply["ok"] is True
    assert reply["allowlist_version"] == 1
    assert (reply["page"], reply["pages"], reply["staged"]) == (1, 1, 1)
    rig.index_caught_up()
    assert [d["result"] for d in rig.tap("C000001", "C0000FF")] == ["allow", "deny"]

    delta = {
        "from_version": 1,
        "to_version": 2,
        "upsert": [person_entry(1, ["C0000AA"]), person_entry(900, ["C000384"])],
        "remove": ["P-2"],
    }
    reply = rig.platform.send("allowlist.delta", delta)
    assert reply["ok"] is True
    assert reply["allowlist_version"] == 2
    rig.index_caught_up()
    results = rig.tap("C000001", "C0000AA", "C000002", "C000384", "C000003")
    assert [(d["result"], d["reason"]) for d in results] == [
        ("deny", "unknown"),  # P-1's old card was replaced
        ("allow", "granted"),
        ("deny", "unknown"),  # P-2 removed
        ("allow", "granted"),  # P-900 added
        ("allow", "granted"),  # untouched
    ]
    assert rig.allowlist_version() == 2


def test_delta_on_the_wrong_base_asks_for_a_snapshot(rig: Rig) -> None:
    assert rig.platform.send("allowlist.snapshot", snapshot(5, 3))["ok"]
    reply = rig.platform.send(
        "allowlist.delta", {"from_version": 3, "to_version": 4, "remove": ["P-0"]}
    )
    assert reply["ok"] is False
    assert reply["reason"] == "stale_version"
    reply = rig.platform.send(
        "allowlist.delta", {"from_version": 6, "to_version": 7, "remove": ["P-0"]}
    )
    assert (reply["ok"], reply["reason"], reply["need"]) == (
        False,
        "version_mismatch",
        "allowlist.snapshot",
    )
    assert rig.allowlist_version() == 5
    rig.index_caught_up()
    assert rig.tap("C000000")[0]["result"] == "allow"


def _flip_signature(payload: bytes) -> bytes:
    document = json.loads(payload)
    signature = bytearray(base64.urlsafe_b64decode(document["sig"] + "=="))
    signature[5] ^= 0x01
    document["sig"] = base64.urlsafe_b64encode(bytes(signature)).rstrip(b"=").decode()
    return json.dumps(document).encode()


def _tamper_body(payload: bytes) -> bytes:
    document = json.loads(payload)
    document["body"]["version"] += 1
    return json.dumps(document).encode()


def _unsigned(payload: bytes) -> bytes:
    document = json.loads(payload)
    del document["sig"]
    return json.dumps(document).encode()


def test_every_rejection_has_its_reason_and_changes_nothing(rig: Rig) -> None:
    assert rig.platform.send("allowlist.snapshot", snapshot(10, 5))["ok"]
    rig.index_caught_up()
    platform = rig.platform
    now = int(platform.clock.now().timestamp())
    stranger = SigningKey.generate()
    newer = snapshot(11, 2, first_card=0x100)
    good = platform.signed("allowlist.snapshot", newer)
    cases: list[tuple[str, str, bytes]] = [
        ("unsigned", "allowlist.snapshot", _unsigned(good)),
        ("bad_signature", "allowlist.snapshot", _flip_signature(good)),
        ("bad_signature", "allowlist.snapshot", _tamper_body(good)),
        (
            "unknown_key",
            "allowlist.snapshot",
            platform.signed("allowlist.snapshot", newer, key=stranger),
        ),
        (
            "expired",
            "allowlist.snapshot",
            platform.signed("allowlist.snapshot", newer, issued_at=now - 600, ttl_s=300),
        ),
        (
            "not_yet_valid",
            "allowlist.snapshot",
            platform.signed("allowlist.snapshot", newer, issued_at=now + 3600),
        ),
        (
            "stale_version",
            "allowlist.snapshot",
            platform.signed("allowlist.snapshot", snapshot(9, 2)),
        ),
        (
            "wrong_gateway",
            "allowlist.snapshot",
            platform.signed("allowlist.snapshot", newer, gateway_id="GW-OTHER"),
        ),
        ("malformed", "allowlist.snapshot", b"{not json"),
        (
            "malformed",
            "allowlist.snapshot",
            platform.signed("allowlist.snapshot", {"version": 12, "people": "x"}),
        ),
        (
            "malformed",
            "allowlist.snapshot",
            platform.signed(
                "allowlist.snapshot",
                {
                    "version": 12,
                    "people": [{**person_entry(1, ["C1"]), "id_number": "110105194912310021"}],
                },
            ),
        ),
        ("malformed", "door.unlock", platform.signed("door.unlock", {"door": "front"}, ttl_s=3600)),
        (
            "oversized",
            "door.unlock",
            platform.signed("door.unlock", {"door": "front", "pad": "x" * 70_000}),
        ),
        ("unknown_command", "self.destruct", platform.signed("resync", {})),
        ("invalid", "door.unlock", platform.signed("door.unlock", {"door": "garage"}, ttl_s=30)),
        (
            "invalid",
            "config.set",
            platform.signed("config.set", {"settings": {"mqtt.url": "mqtt://evil"}}),
        ),
    ]
    replies = [(expected, platform.send_raw(name, payload)) for expected, name, payload in cases]
    assert [(r["ok"], r["reason"]) for _, r in replies] == [(False, e) for e, _ in replies]
    assert all(r["detail"] for _, r in replies)
    assert rig.allowlist_version() == 10
    assert (
        rig.gateway.parts.devices.locks["front"].commands == SimLock("front").commands
    )  # never unlocked
    assert [d["result"] for d in rig.tap("C000000", "C000100")] == ["allow", "deny"]
    assert sum(rig.gateway.parts.downlink.stats().rejected.values()) == len(cases)


def test_a_command_is_applied_once_and_a_resend_says_so(rig: Rig) -> None:
    command_id = str(uuid.uuid4())
    payload = rig.platform.signed(
        "door.unlock", {"door": "front", "seconds": 3}, ttl_s=30, command_id=command_id
    )
    first = rig.platform.send_raw("door.unlock", payload)
    again = rig.platform.send_raw("door.unlock", payload)
    assert first["ok"] is True
    assert (again["ok"], again["reason"], again["original"]) == (
        False,
        "already_seen",
        {"ok": True, "reason": None},
    )
    assert [c.seconds for c in rig.gateway.parts.devices.locks["front"].commands] == [3.0]
    wait_until(
        lambda: any(e["type"] == "door.unlocked" for e in rig.subscriber.events()), 10, "event"
    )
    unlocked = [e for e in rig.subscriber.events() if e["type"] == "door.unlocked"]
    assert unlocked[0]["command"] == command_id


def test_mqtt5_response_topic_and_correlation_data_are_honoured(rig: Rig) -> None:
    payload = rig.platform.signed("resync", {})
    reply = rig.platform.send_raw("resync", payload, response_topic=f"{REPLY_PREFIX}xyz")
    assert reply["ok"] is True
    assert reply["cmd"] == "resync"


def test_no_reply_goes_where_an_unauthenticated_sender_names(rig: Rig, broker: LocalBroker) -> None:
    """Issue 13: a response topic on an unsigned command made the gateway publish its refusal
    wherever the sender named, under its own identity (its own events and state, another
    gateway's cmd/door.unlock). Only an authentic command's response topic under the
    configured platform prefix is answered."""
    targets = [
        f"rentgate/v1/{GW}/events",
        f"rentgate/v1/{GW}/state",
        "rentgate/v1/GW-OTHER/cmd/door.unlock",
        "elsewhere/replies/x",
    ]
    watcher = Subscriber(broker.port, "#", client_id="response-topic-watch")
    try:
        good = rig.platform.signed("resync", {})
        forged = [_unsigned(good), _flip_signature(good), b"{not json"]
        for target in targets:
            for payload in forged:
                rig.platform.client.publish(
                    f"rentgate/v1/{GW}/cmd/resync", payload, response_topic=target
                )
        # Authentic, but its response topic lies outside the prefix: cmd-reply only.
        rig.platform.client.publish(
            f"rentgate/v1/{GW}/cmd/resync",
            rig.platform.signed("resync", {}),
            response_topic="rentgate/v1/GW-OTHER/cmd/door.unlock",
        )
        # The last word: an authentic command answered under the prefix. Everything sent
        # before it was judged and answered (or not) before it.
        last = rig.platform.send_raw(
            "resync", rig.platform.signed("resync", {}), response_topic=f"{REPLY_PREFIX}last"
        )
        assert last["ok"] is True
        wait_until(
            lambda: any(m.topic == f"{REPLY_PREFIX}last" for m in watcher.snapshot()),
            10,
            "the last reply seen by the watcher",
        )
        replies_elsewhere = [
            m.topic for m in watcher.snapshot() if m.topic in targets and _is_reply(m.payload)
        ]
        assert replies_elsewhere == []
        refused = rig.gateway.parts.downlink.stats().rejected
        assert refused.get("unsigned", 0) >= len(targets)
    finally:
        watcher.close()


def _is_reply(payload: bytes) -> bool:
    try:
        document = json.loads(payload)
    except ValueError:
        return False
    return isinstance(document, dict) and {"ok", "cmd", "id"} <= set(document)


def test_resync_republishes_the_state(rig: Rig) -> None:
    wait_until(lambda: len(rig.subscriber.states()) >= 1, 10, "birth")
    before = len(rig.subscriber.states())
    assert rig.platform.send("resync", {})["ok"]
    wait_until(lambda: len(rig.subscriber.states()) > before, 10, "second birth")
    assert rig.subscriber.states()[-1]["online"] is True


def test_keys_rotate_adds_a_key_and_retires_the_old_one(rig: Rig) -> None:
    successor = SigningKey.generate()
    pem = successor.public.pem().decode()
    reply = rig.platform.send("keys.rotate", {"add": [pem]})
    assert reply["ok"] is True
    assert successor.kid in reply["keys"]
    reply = rig.platform.send("keys.rotate", {"retire": [rig.key.kid]}, key=successor)
    assert reply["ok"] is True
    assert reply["keys"] == [successor.kid]
    refused = rig.platform.send("resync", {})
    assert (refused["ok"], refused["reason"]) == (False, "unknown_key")
    assert rig.platform.send("resync", {}, key=successor)["ok"] is True
    last = rig.platform.send("keys.rotate", {"retire": [successor.kid]}, key=successor)
    assert (last["ok"], last["reason"]) == (False, "invalid")


def test_config_set_changes_unlock_time_atomically_and_persists(rig: Rig) -> None:
    assert rig.platform.send("allowlist.snapshot", snapshot(1, 2))["ok"]
    rig.index_caught_up()
    reply = rig.platform.send("config.set", {"settings": {"doors.front.unlock_seconds": 9}})
    assert reply["ok"] is True
    assert rig.tap("C000000")[0]["result"] == "allow"
    assert rig.gateway.parts.devices.locks["front"].commands[-1].seconds == 9.0
    saved = json.loads((rig.gateway.config.gateway.data_dir / "settings.json").read_text())
    assert saved == {"doors.front.unlock_seconds": 9}
    refused = rig.platform.send(
        "config.set", {"settings": {"doors.front.unlock_seconds": 5, "gateway.id": "X"}}
    )
    assert (refused["ok"], refused["reason"]) == (False, "invalid")
    saved = json.loads((rig.gateway.config.gateway.data_dir / "settings.json").read_text())
    assert saved == {"doors.front.unlock_seconds": 9}  # nothing of a refused command applied


def test_revoked_card_is_denied_and_raises_an_alert(rig: Rig) -> None:
    assert rig.platform.send("allowlist.snapshot", snapshot(1, 3))["ok"]
    rig.index_caught_up()
    reply = rig.platform.send(
        "credential.revoke", {"kind": "card_uid", "value": "C000001", "status": "cancelled"}
    )
    assert reply["ok"] is True
    rig.index_caught_up()
    decision = rig.tap("C000001")[0]
    assert (decision["result"], decision["reason"], decision["credential_status"]) == (
        "deny",
        "revoked",
        "cancelled",
    )
    wait_until(
        lambda: any(e["type"] == "alert.raised" for e in rig.subscriber.events()), 10, "alert"
    )
    alert = next(e for e in rig.subscriber.events() if e["type"] == "alert.raised")
    assert alert["rule"] == "credential.cancelled_used"
    assert alert["door"] == "front"
    assert alert["id_masked"].count("*") == 11
    unknown = rig.platform.send(
        "credential.revoke", {"kind": "card_uid", "value": "FFFF01", "status": "lost"}
    )
    assert (unknown["ok"], unknown["reason"]) == (False, "invalid")


def test_the_platform_tool_makes_keys_sends_pages_and_watches(
    rig: Rig, tmp_path: Path, broker: LocalBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["platform", "keygen", "--dir", str(tmp_path / "keys")]) == 0
    made = capsys.readouterr().out
    assert "key id k-" in made
    private = next((tmp_path / "keys").glob("*.key"))
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    assert main(["platform", "keygen", "--dir", str(tmp_path / "keys")]) == 0  # another pair
    capsys.readouterr()

    key_path = tmp_path / "platform.key"
    key_path.write_bytes(
        rig.key._private.private_bytes(  # the rig's trusted key, as a file
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    people = [person_entry(i, [f"D{i:05X}"]) for i in range(2500)]
    (tmp_path / "allowlist.json").write_text(json.dumps({"version": 7, "people": people}))
    common = ["--broker", broker.url, "--gateway", GW, "--key", str(key_path)]
    code = main(["platform", "send", *common, "allowlist.snapshot", f"@{tmp_path}/allowlist.json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "page 1/3 staged" in err
    assert json.loads(out)["allowlist_version"] == 7
    refused = main(["platform", "send", *common, "door.unlock", '{"door": "nowhere"}'])
    out, _ = capsys.readouterr()
    assert refused == 1
    assert json.loads(out)["reason"] == "invalid"
    assert main(["platform", "send", *common, "self.destruct"]) == 2
    assert "unknown command" in capsys.readouterr().err
    stranger = SigningKey.generate()
    stranger.save(tmp_path / "stranger")
    other = [
        "--broker",
        broker.url,
        "--gateway",
        GW,
        "--key",
        str(next((tmp_path / "stranger").glob("*.key"))),
    ]
    assert main(["platform", "send", *other, "resync"]) == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "unknown_key"
    unreachable = ["--broker", "mqtt://127.0.0.1:1", "--gateway", GW, "--key", str(key_path)]
    assert main(["platform", "send", *unreachable, "resync"]) == 3
    assert "cannot reach broker" in capsys.readouterr().err
    assert (
        main(["platform", "watch", "--broker", broker.url, "--gateway", GW, "--seconds", "1"]) == 0
    )
    assert f"rentgate/v1/{GW}/state" in capsys.readouterr().out  # the retained birth
