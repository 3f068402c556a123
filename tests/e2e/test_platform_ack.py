"""End-to-end acknowledgement: a PUBACK is not delivery, the platform's signed ack is.

Real Mosquitto (started by the tests), real SQLite, a real gateway and a real
platform consumer (`AckingPlatform`) that stores and acknowledges what it gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.domain.capture import CapturedRecord
from gateway.domain.events import EventType, new_event
from gateway.domain.signed_commands import CommandName, sign
from gateway.domain.signing import SigningKey
from gateway.residence.intake import captured_body
from gateway.runtime.gateway import Gateway
from gateway.store.db import connect
from gateway.sync.local_broker import LocalBroker
from gateway.sync.platform_acks import ack_command
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    enrol_cards,
    load,
    platform_encryption_key,
    stats_of,
    wait_until,
    write_config,
    write_taps,
)
from tests.support.platform import AckingPlatform, Platform, key_file
from tests.support.terminal import record_json

GW = "GW-ACK"
CARDS = ["0A000001", "0A000002"]


@dataclass
class Rig:
    running: InProcessGateway
    platform: AckingPlatform
    """Subscribed before the gateway starts, so it sees every seq from the first."""
    key: SigningKey
    fifo: Path
    broker: LocalBroker
    tmp: Path

    @property
    def gateway(self) -> Gateway:
        return self.running.gateway

    def head(self) -> int:
        return stats_of(self.gateway.config.gateway.database).head_seq

    def tap(self, count: int, first: int = 0) -> None:
        write_taps(self.fifo, [f"0B{n:06X}" for n in range(first, first + count)])

    def pubacked_to_head(self, at_least: int) -> int:
        """Until every recorded event (at least `at_least` of them) is PUBACKed; the head."""
        database = self.gateway.config.gateway.database

        def done() -> bool:
            stats = stats_of(database)
            return stats.head_seq >= at_least and stats.delivered_seq == stats.head_seq

        wait_until(done, 30, f"{at_least} events PUBACKed")
        return stats_of(database).head_seq

    def kept(self, through: int | None = None) -> int:
        """Rows in the outbox (at or below `through`, if given)."""
        conn = connect(self.gateway.config.gateway.database, readonly=True)
        try:
            if through is None:
                return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
            query = "SELECT count(*) FROM outbox WHERE seq <= ?"
            return int(conn.execute(query, (through,)).fetchone()[0])
        finally:
            conn.close()

    def captures_kept(self) -> int:
        conn = connect(self.gateway.config.gateway.database, readonly=True)
        try:
            query = "SELECT count(*) FROM outbox WHERE type = 'registration.captured'"
            return int(conn.execute(query).fetchone()[0])
        finally:
            conn.close()

    def housekeep(self) -> None:
        """One round of housekeeping now, on the gateway's loop (it also runs on its own)."""
        self.running.run(self.gateway.parts.housekeeper.check())

    def capture(self) -> None:
        """A terminal's registration record (full ID number, sealed) into the outbox."""
        record = CapturedRecord.model_validate_json(json.dumps(record_json("T-01", 7)))
        sealing = platform_encryption_key(self.tmp).opening.public
        body = captured_body(record, b"\x01" * 32, None, sealing=sealing, gateway_id=GW)
        clock = self.gateway.clock
        event = new_event(EventType.REGISTRATION_CAPTURED, clock.now(), clock.monotonic(), body)
        self.gateway.writer.append(event)


SHORT_RETENTION = (
    # Everything acknowledged may go at once: history and grace well under a second.
    "[storage]\nhistory_days = 0.000001\npersonal_grace_hours = 0.00001\ncheck_every_s = 0.2\n"
)


def _rig(
    tmp_path: Path,
    broker: LocalBroker,
    *,
    resend_s: float,
    ack: bool,
    storage: str = SHORT_RETENTION,
) -> Iterator[Rig]:
    key, public = key_file(tmp_path / "platform")
    path = write_config(
        tmp_path,
        f"mqtt://127.0.0.1:{broker.port}",
        gateway_id=GW,
        extra_mqtt=f"ack_resend_s = {resend_s}\n",
        extra=f'[platform]\nkeys = ["{public}"]\n\n{storage}',
    )
    config = load(path)
    enrol_cards(config, CARDS)
    platform = AckingPlatform(broker.port, GW, key, ack=ack)
    try:
        with InProcessGateway(config) as running:
            running.wait_connected()
            yield Rig(running, platform, key, tmp_path / "front.reader", broker, tmp_path)
    finally:
        platform.stop()


@pytest.fixture
def rig(tmp_path: Path, broker: LocalBroker) -> Iterator[Rig]:
    """A platform that stores but never acknowledges; resends after 1 s."""
    yield from _rig(tmp_path, broker, resend_s=1, ack=False)


@pytest.fixture
def acked_rig(tmp_path: Path, broker: LocalBroker) -> Iterator[Rig]:
    """A platform that acknowledges what it stores; resends after 1 s."""
    yield from _rig(tmp_path, broker, resend_s=1, ack=True)


@pytest.fixture
def keeping_rig(tmp_path: Path, broker: LocalBroker) -> Iterator[Rig]:
    """History kept (the default 30 days), no resend in the test's lifetime: only a replay
    publishes anything twice."""
    yield from _rig(tmp_path, broker, resend_s=3600, ack=True, storage="")


def _publish(rig: Rig, name: str, payload: bytes) -> None:
    """Publish a command's bytes as they are (signed, forged, unsigned) and wait for PUBACK."""
    sender = Platform(rig.broker, GW, rig.key, rig.gateway.clock)
    try:
        sender.client.publish(f"rentgate/v1/{GW}/cmd/{name}", payload)
    finally:
        sender.close()


def _ack(rig: Rig, through: int, key: SigningKey | None = None) -> bytes:
    return ack_command(key or rig.key, GW, through, int(rig.gateway.clock.now().timestamp()))


def test_without_a_platform_ack_pubacked_events_are_kept_and_sent_again_then_pruned_once_acked(
    rig: Rig,
) -> None:
    listener = rig.platform  # stores, never acknowledges
    rig.tap(5)
    rig.capture()
    head = rig.pubacked_to_head(6)
    link = rig.gateway.status().link
    assert (link.delivered_seq, link.acked_seq) == (head, 0)

    # PUBACKed, never acknowledged: after ack_resend_s the gateway publishes them again.
    wait_until(lambda: all(listener.received(s) >= 2 for s in range(1, head + 1)), 30, "again")
    assert rig.gateway.status().link.resends >= 1
    rig.housekeep()
    assert rig.kept(head) == head, "nothing PUBACKed is pruned without the platform's ack"
    assert rig.captures_kept() == 1, "nor is personal data deleted, grace period or not"
    assert stats_of(rig.gateway.config.gateway.database).acked_seq == 0

    # The platform's signed ack: retention may now prune through it, personal data too.
    _publish(rig, "ack", _ack(rig, head))
    wait_until(lambda: rig.gateway.status().link.acked_seq == head, 20, "ack recorded")
    assert stats_of(rig.gateway.config.gateway.database).acked_seq == head

    def pruned() -> bool:
        rig.housekeep()
        return rig.kept(head) == 0

    wait_until(pruned, 30, "acknowledged history pruned")
    assert rig.captures_kept() == 0
    assert rig.gateway.status().link.acks_applied == 1


def test_a_platform_down_while_taps_flow_gets_every_seq_once_back_and_acks_to_the_head(
    acked_rig: Rig,
) -> None:
    rig, platform = acked_rig, acked_rig.platform
    rig.tap(5)
    head = rig.pubacked_to_head(5)
    wait_until(lambda: rig.gateway.status().link.acked_seq == head, 20, "first acks")

    platform.stop()  # the consumer is down: the broker PUBACKs and drops (no subscriber)
    for burst in range(4):
        rig.tap(10, first=100 + 10 * burst)
    down_head = rig.pubacked_to_head(head + 40)
    assert rig.gateway.status().link.acked_seq == head, "nobody acknowledged while down"
    assert rig.kept() >= down_head - head

    platform.start()  # back: what it missed comes again, and it acks it
    rig.tap(10, first=200)
    final = rig.pubacked_to_head(down_head + 10)

    def caught_up() -> bool:
        return rig.gateway.status().link.acked_seq == rig.head() and rig.head() >= final

    wait_until(caught_up, 60, "the gateway's acked cursor at its head")
    final = rig.head()
    assert platform.unique_seqs() >= set(range(1, final + 1)), "every seq at least once"
    assert platform.acked_through() == final
    stats = stats_of(rig.gateway.config.gateway.database)
    assert (stats.acked_seq, stats.unacked) == (final, 0)
    assert rig.gateway.status().link.resends >= 1


def _forged(rig: Rig, through: int, how: str) -> bytes:
    document: dict[str, Any] = json.loads(_ack(rig, through))
    if how == "wrong key":
        return _ack(rig, through, SigningKey.generate())
    if how == "bad signature":  # signed for 0, claims more
        document = json.loads(_ack(rig, 0))
        document["body"]["through_seq"] = through
    elif how == "unsigned":
        del document["sig"]
    elif how == "malformed body":  # signed by the platform, but not a seq
        now = int(rig.gateway.clock.now().timestamp())
        body = {"through_seq": str(through)}
        return sign(rig.key, gateway_id=GW, name=CommandName.ACK, body=body, now=now)
    return json.dumps(document).encode()


def test_a_forged_or_impossible_ack_changes_nothing_and_is_counted(rig: Rig) -> None:
    listener = Subscriber(rig.broker.port, f"rentgate/v1/{GW}/#", client_id="ack-forgery-watch")
    try:
        rig.tap(4)
        head = rig.pubacked_to_head(4)
        forgeries = {
            "wrong key": "unknown_key",
            "bad signature": "bad_signature",
            "unsigned": "unsigned",
        }
        for how in forgeries:
            _publish(rig, "ack", _forged(rig, head, how))
        _publish(rig, "ack", _ack(rig, head + 1000))  # authentic, but beyond the head
        _publish(rig, "ack", _forged(rig, head, "malformed body"))

        def counted() -> bool:
            status = rig.gateway.status()
            rejected = status.commands.rejected
            return (
                all(rejected.get(reason, 0) >= 1 for reason in forgeries.values())
                and rejected.get("malformed", 0) >= 1
                and status.link.acks_refused == 1
            )

        wait_until(counted, 20, "every forged ack counted")
        # An authentic command after them: its reply is the first on cmd-reply, so no ack,
        # forged or not, was answered.
        sender = Platform(rig.broker, GW, rig.key, rig.gateway.clock)
        try:
            reply = sender.send("replay", {"from_seq": head + 1})
        finally:
            sender.close()
        assert reply["ok"] is True

        def replies() -> list[str]:
            found = [m for m in listener.snapshot() if m.topic.endswith("/cmd-reply")]
            return [json.loads(m.payload)["cmd"] for m in found]

        # Replies leave in order on one session: any to an ack would have come before this.
        wait_until(lambda: "replay" in replies(), 20, "the replay's reply at the listener")
        assert replies() == ["replay"]

        link = rig.gateway.status().link
        assert (link.acked_seq, link.acks_applied, link.acks_refused) == (0, 0, 1)
        assert stats_of(rig.gateway.config.gateway.database).acked_seq == 0
        rig.housekeep()
        assert rig.kept(head) == head, "nothing pruned on a forged word"
    finally:
        listener.close()


def test_replay_republishes_from_the_seq_asked_for(keeping_rig: Rig) -> None:
    rig, platform = keeping_rig, keeping_rig.platform
    sender = Platform(rig.broker, GW, rig.key, rig.gateway.clock)
    try:
        rig.tap(6)
        head = rig.pubacked_to_head(6)
        wait_until(lambda: rig.gateway.status().link.acked_seq == rig.head(), 20, "all acked")
        head = rig.head()
        before = {seq: platform.received(seq) for seq in range(1, head + 1)}
        assert set(before.values()) == {1}

        reply = sender.send("replay", {"from_seq": 3})
        assert (reply["ok"], reply["from_seq"], reply["head_seq"]) == (True, 3, head)
        wait_until(
            lambda: all(platform.received(s) == 2 for s in range(3, head + 1)), 20, "replayed"
        )
        assert [platform.received(s) for s in (1, 2)] == [1, 1], "nothing before from_seq"

        refused = sender.send("replay", {"from_seq": head + 50})
        assert (refused["ok"], refused["reason"]) == (False, "invalid")
        malformed = sender.send("replay", {"from_seq": 0})
        assert (malformed["ok"], malformed["reason"]) == (False, "malformed")
    finally:
        sender.close()


def test_platform_watch_with_ack_acknowledges_what_it_sees(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    rig.tap(3)
    head = rig.pubacked_to_head(3)
    key_path = str(next((rig.tmp / "platform").glob("*.key")))
    watch = ["platform", "watch", "--broker", rig.broker.url, "--gateway", GW]
    assert main([*watch, "--seconds", "1", "--ack"]) == 2
    assert "--ack needs the platform's signing --key" in capsys.readouterr().err
    send = ["platform", "send", "--broker", rig.broker.url, "--gateway", GW, "--key", key_path]
    assert main([*send, "ack", '{"through_seq": 1}']) == 0  # no reply is waited for
    assert "acks get no reply" in capsys.readouterr().err
    wait_until(lambda: rig.gateway.status().link.acked_seq == 1, 20, "acked by send")
    # Not the rest: the gateway sends again after ack_resend_s, and watch acks what it sees.
    assert main([*watch, "--seconds", "6", "--ack", "--key", key_path]) == 0
    out, err = capsys.readouterr()
    assert f"rentgate/v1/{GW}/events" in out
    assert "ack(s) sent" in err
    wait_until(
        lambda: rig.gateway.status().link.acked_seq >= head, 20, f"acked by watch: {out} {err}"
    )
