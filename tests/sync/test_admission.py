"""The admission step alone: junk pays for what it costs, authentic commands ride free."""

from __future__ import annotations

import json

from gateway.domain.signed_commands import CommandName, sign
from gateway.domain.signing import SigningKey
from gateway.sync.admission import MESSAGE_BURST, RATE_LIMITED, CommandAdmission

GW = "GW-ADMIT"
NOW = 1_800_000_000


class FrozenTime:
    """A monotonic clock that only moves when told (the budget refills with it)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def admission(key: SigningKey, clock: FrozenTime) -> CommandAdmission:
    return CommandAdmission(
        GW, keys=lambda: {key.kid: key.public}, now=lambda: NOW, monotonic=clock
    )


def signed(key: SigningKey, name: CommandName, body: dict[str, object]) -> bytes:
    return sign(key, gateway_id=GW, name=name, body=body, now=NOW, ttl_s=30)


def forged(serial: int) -> bytes:
    document = {
        "v": 1,
        "id": f"00000000-0000-4000-8000-{serial:012d}",
        "cmd": "door.unlock",
        "gw": GW,
        "iat": NOW,
        "exp": NOW + 30,
        "kid": "k-nobody",
        "body": {"door": "front", "seconds": 5},
        "sig": "AAAA",
    }
    return json.dumps(document).encode()


def test_authentic_commands_never_spend_the_budget() -> None:
    key, clock = SigningKey.generate(), FrozenTime()
    gate = admission(key, clock)
    for _ in range(int(MESSAGE_BURST) * 3):
        verdict = gate.judge("resync", signed(key, CommandName.RESYNC, {}))
        assert verdict.command is not None
    counts = gate.counts()
    assert (counts.accepted, counts.rate_limited) == (int(MESSAGE_BURST) * 3, 0)


def test_failures_spend_their_topics_budget_only_and_it_refills() -> None:
    key, clock = SigningKey.generate(), FrozenTime()
    gate = admission(key, clock)
    verdicts = [gate.judge("door.unlock", forged(n)) for n in range(int(MESSAGE_BURST) + 50)]
    refused = [v.refusal.reason.value for v in verdicts if v.refusal is not None]
    assert refused == ["unknown_key"] * int(MESSAGE_BURST)
    assert gate.counts().rate_limited == 50
    # Another topic's budget is untouched: a signed command there is verified and admitted.
    other = gate.judge("resync", signed(key, CommandName.RESYNC, {}))
    assert other.command is not None
    # On the spent topic even an authentic command waits for the refill (the platform
    # re-sends; the broker ACL keeps such a flood off the topic in the first place).
    unlock = signed(key, CommandName.DOOR_UNLOCK, {"door": "front", "seconds": 3})
    assert gate.judge("door.unlock", unlock).command is None
    clock.now += 1.0
    assert gate.judge("door.unlock", unlock).command is not None


def test_shape_checks_refuse_without_parsing_and_count_by_reason() -> None:
    key, clock = SigningKey.generate(), FrozenTime()
    gate = admission(key, clock)
    cases = {
        "unknown_command": ("self.destruct", b"{}"),
        "oversized": ("door.unlock", b"{" + b" " * 70_000 + b"}"),
        "malformed": ("door.unlock", b"\x00\x01garbage"),
        "wrong_gateway": ("door.unlock", b'{"gw":"GW-OTHER","sig":"x","kid":"y"}'),
        "unsigned": ("door.unlock", json.dumps({"gw": GW}).encode()),
    }
    for reason, (name, payload) in cases.items():
        verdict = gate.judge(name, payload)
        assert verdict.refusal is not None
        assert verdict.refusal.reason.value == reason
    counts = gate.counts()
    assert dict(counts.rejected) == dict.fromkeys(cases, 1)
    assert counts.received == len(cases)
    assert counts.rate_limited == 0


def test_a_large_failure_is_paid_off_in_bytes_before_the_next_large_message_is_parsed() -> None:
    """4 MB junk deltas at 5/s once cost the doors p99 139 ms: each was parsed. Now one is,
    and the topic's byte budget keeps the next ones unparsed until it has been paid off."""
    key, clock = SigningKey.generate(), FrozenTime()
    gate = admission(key, clock)
    big = b'{"gw":"' + GW.encode() + b'","kid":"k-x","sig":"x","body":{"x":"'
    big += b"y" * (4 * 1024 * 1024 - 100) + b'"}}'
    first = gate.judge("allowlist.delta", big)
    assert first.refusal is not None
    assert first.refusal.reason.value == "malformed"
    for _ in range(5):
        clock.now += 0.2  # 5/s
        assert gate.judge("allowlist.delta", big) == RATE_LIMITED
    assert gate.counts().rate_limited == 5
    clock.now += 16.0  # 4 MB at 256 kB/s
    assert gate.judge("allowlist.delta", big).refusal is not None
