"""Which messages on the command topics may cost the gateway anything: run in paho's thread.

Any broker client that may publish on `cmd/+` can send junk; the gateway must
spend next to nothing on it and never let it crowd out an authentic command.
So every message is judged here, in paho's network thread, before it reaches
the event loop that decides doors:

1. cheap shape checks, microseconds each: a known command name from the topic,
   the size limit of that command, and a structural look at the bytes (a JSON
   object naming this gateway, with `kid` and `sig` members);
2. a per-topic budget (two token buckets, messages and bytes) that only
   *failures* spend: an authentic command rides free, junk that passed the shape
   checks pays for the verification it cost, and once a topic's budget is spent
   its messages are dropped unverified (counted `rate_limited`) until it refills;
3. the signature and lifetime (`gateway.domain.signed_commands.verify`).

Only authentic commands, and a bounded trickle of refusals to answer, cross to
the event loop. Junk never takes a slot in the queue the command task serves.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.domain.signed_commands import (
    DEFAULT_MAX_BYTES,
    MAX_BYTES,
    Command,
    CommandName,
    CommandRejected,
    Rejection,
    verify,
)
from gateway.domain.signing import VerifyKey

MESSAGES_PER_S = 100.0
"""Refill of each topic's failure budget, in messages."""
MESSAGE_BURST = 200.0
BYTES_PER_S = 256 * 1024
"""Refill of each topic's failure budget, in bytes: a 4 MB junk delta is paid for over 16 s."""
MIN_BYTE_BURST = 64 * 1024


class TokenBucket:
    """`capacity` tokens, refilled at `rate` a second; not thread-safe (its owner locks)."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._at = now

    def available(self, now: float) -> float:
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    def spend(self, amount: float, now: float) -> None:
        """Take `amount` (the balance may go negative: a large failure is paid off over time)."""
        self._tokens = self.available(now) - amount


@dataclass
class TopicBudget:
    """What failures on one command topic may still cost."""

    messages: TokenBucket
    bytes: TokenBucket

    def allows(self, size: int, now: float) -> bool:
        return self.messages.available(now) >= 1 and self.bytes.available(now) >= size

    def charge(self, size: int, now: float) -> None:
        self.messages.spend(1, now)
        self.bytes.spend(size, now)


@dataclass
class AdmissionCounts:
    """Counts kept by the admission step (paho's thread), read by the event loop."""

    received: int = 0
    accepted: int = 0
    rate_limited: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Verdict:
    """What became of one message: an authentic command, or a refusal (with the command id
    when it could be read), or nothing at all (rate-limited: not even looked at)."""

    command: Command | None = None
    refusal: CommandRejected | None = None


RATE_LIMITED = Verdict()


class CommandAdmission:
    """Judges messages on `rentgate/v1/{gw}/cmd/{name}`; thread-safe, meant for paho's thread."""

    def __init__(
        self,
        gateway_id: str,
        *,
        keys: Callable[[], Mapping[str, VerifyKey]],
        now: Callable[[], int],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gw = gateway_id
        self._gw_json = b'"' + gateway_id.encode("ascii") + b'"'
        self._keys = keys
        self._now = now
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._budgets: dict[CommandName, TopicBudget] = {}
        self._counts = AdmissionCounts()

    def counts(self) -> AdmissionCounts:
        """A consistent copy of the counts so far."""
        with self._lock:
            counts = self._counts
            return AdmissionCounts(
                counts.received, counts.accepted, counts.rate_limited, Counter(counts.rejected)
            )

    def judge(self, topic_name: str, payload: bytes) -> Verdict:
        """Shape checks, the topic's budget, then the signature; every outcome is counted."""
        with self._lock:
            self._counts.received += 1
        try:
            name = self._shape(topic_name, payload)
        except CommandRejected as rejected:
            return self._refused(rejected)
        size, started = len(payload), self._monotonic()
        with self._lock:
            budget = self._budget(name, started)
            if not budget.allows(size, started):
                self._counts.rate_limited += 1
                return RATE_LIMITED
        try:
            command = verify(
                payload,
                topic_name=name.value,
                gateway_id=self._gw,
                keys=self._keys(),
                now=self._now(),
            )
        except CommandRejected as rejected:
            with self._lock:
                budget.charge(size, self._monotonic())
            return self._refused(rejected)
        with self._lock:
            self._counts.accepted += 1
        return Verdict(command=command)

    def _refused(self, rejected: CommandRejected) -> Verdict:
        with self._lock:
            self._counts.rejected[rejected.reason.value] += 1
        return Verdict(refusal=rejected)

    def _shape(self, topic_name: str, payload: bytes) -> CommandName:
        """The cheap checks: a few byte scans, no parsing."""
        try:
            name = CommandName(topic_name)
        except ValueError:
            raise CommandRejected(
                Rejection.UNKNOWN_COMMAND, f"no command {topic_name[:40]!r}"
            ) from None
        limit = MAX_BYTES.get(name, DEFAULT_MAX_BYTES)
        if len(payload) > limit:
            raise CommandRejected(Rejection.OVERSIZED, f"{len(payload)} bytes, limit {limit}")
        text = payload.strip()
        if not (text.startswith(b"{") and text.endswith(b"}")):
            raise CommandRejected(Rejection.MALFORMED, "a command is a JSON object")
        if self._gw_json not in text:
            raise CommandRejected(Rejection.WRONG_GATEWAY, "does not name this gateway")
        if b'"sig"' not in text or b'"kid"' not in text:
            raise CommandRejected(Rejection.UNSIGNED, "no 'sig' or 'kid' member")
        return name

    def _budget(self, name: CommandName, now: float) -> TopicBudget:
        budget = self._budgets.get(name)
        if budget is None:
            byte_burst = max(MAX_BYTES.get(name, DEFAULT_MAX_BYTES), MIN_BYTE_BURST)
            budget = TopicBudget(
                TokenBucket(MESSAGES_PER_S, MESSAGE_BURST, now),
                TokenBucket(BYTES_PER_S, byte_burst, now),
            )
            self._budgets[name] = budget
        return budget
