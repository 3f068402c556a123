"""The downlink: platform commands in, one at a time, each answered on `cmd-reply`.

Every message is judged in paho's thread before the event loop sees it
(`gateway.sync.admission`): junk is refused there, counted and summed up in
the log once per interval; only authentic commands (signature, addressee,
lifetime checked) take a slot in the small queue the command task serves, so
no flood can crowd out a signed command. A command already seen gets its
original outcome back, so a platform that re-sends until it hears a reply
never has a command applied twice. Commands are handled strictly in arrival
order by one task: a delta can never overtake the snapshot it builds on.

Replies go to `cmd-reply`, and, for an authentic command only, also to its
MQTT 5 response topic when that lies under the configured platform prefix:
the gateway never publishes where an unauthenticated sender tells it to.
Refusals of unauthenticated messages are answered on `cmd-reply` at a bounded
rate (a refusal reply is a courtesy to a buggy platform, not to a flood).

An `ack` (the platform has stored events through a seq) takes another path:
verified like any command, then handed straight to `on_ack` on the event loop,
never queued behind commands, never logged, never answered (not even when
refused: it would double the traffic, and a forger learns nothing). Refused
acks are counted with the other refusals.

Delivery: the subscription is QoS 1 in a clean session, so a command sent
while the gateway is offline is not kept by the broker. The platform re-sends
any command it has no reply for (the retained `state` says when the gateway
is back); re-sending is always safe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.clock import Clock, iso_ms
from gateway.domain.signed_commands import Command, CommandName, CommandRejected, Rejection
from gateway.domain.signing import VerifyKey
from gateway.store.command_log import CommandOutcome
from gateway.sync.admission import CommandAdmission, TokenBucket
from gateway.sync.link import Incoming, Session
from gateway.sync.log_summary import INTERVAL_S, RefusalLog
from gateway.sync.wire import CONTRACT_VERSION, Topics

log = logging.getLogger(__name__)

QUEUE_LIMIT = 64
"""Authentic commands waiting to be handled; only the platform can fill it."""
REFUSAL_REPLIES_PER_S = 2.0
REFUSAL_REPLY_BURST = 20.0


@dataclass(frozen=True)
class Applied:
    """What a handler reports back: the outcome and anything the reply should carry."""

    outcome: CommandOutcome
    extra: Mapping[str, Any] | None = None


class CommandHandler(Protocol):
    async def previous_outcome(self, command_id: str) -> CommandOutcome | None:
        """The outcome recorded for a command id seen before, if any."""

    async def handle(self, command: Command) -> Applied:
        """Apply an authentic command (validating its body) and record its outcome with it."""


@dataclass(frozen=True, slots=True)
class DownlinkStats:
    """What became of the messages on the command topics since the gateway started."""

    received: int = 0
    accepted: int = 0
    """Authentic commands queued for handling."""
    applied: int = 0
    duplicates: int = 0
    rate_limited: int = 0
    """Dropped unverified: their topic's failure budget was spent (a flood)."""
    dropped: int = 0
    """Authentic commands dropped because the queue was full (or the gateway stopping)."""
    replies_suppressed: int = 0
    """Refusals of unauthenticated messages left unanswered (over the reply rate)."""
    rejected: Mapping[str, int] = field(default_factory=dict)


class Downlink:
    def __init__(
        self,
        gateway_id: str,
        *,
        keys: Callable[[], Mapping[str, VerifyKey]],
        handler: CommandHandler,
        clock: Clock,
        session: Callable[[], Session | None],
        reply_prefix: str | None = None,
        on_ack: Callable[[int], None] | None = None,
    ) -> None:
        self._gw = gateway_id
        self._on_ack = on_ack
        self._topics = Topics(gateway_id)
        self._handler = handler
        self._clock = clock
        self._session = session
        self._reply_prefix = reply_prefix
        self._admission = CommandAdmission(
            gateway_id, keys=keys, now=lambda: int(clock.now().timestamp())
        )
        self._refusals = RefusalLog(log)
        self._lock = threading.Lock()
        self._reply_budget = TokenBucket(
            REFUSAL_REPLIES_PER_S, REFUSAL_REPLY_BURST, time.monotonic()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[Incoming, Command]] = asyncio.Queue(QUEUE_LIMIT)
        self._applied = self._duplicates = self._dropped = self._suppressed = 0
        self._handler_rejected: Counter[str] = Counter()
        self._acks_refused: Counter[str] = Counter()

    @property
    def topic_filter(self) -> str:
        return self._topics.commands

    def stats(self) -> DownlinkStats:
        """The counts now (call on the event loop)."""
        admitted = self._admission.counts()
        with self._lock:
            dropped, suppressed = self._dropped, self._suppressed
            acks_refused = Counter(self._acks_refused)
        return DownlinkStats(
            received=admitted.received,
            accepted=admitted.accepted,
            applied=self._applied,
            duplicates=self._duplicates,
            rate_limited=admitted.rate_limited,
            dropped=dropped,
            replies_suppressed=suppressed,
            rejected=dict(admitted.rejected + self._handler_rejected + acks_refused),
        )

    def received(self, message: Incoming) -> None:
        """Called in paho's network thread for every message on the command topics: judge it
        there, and hand only authentic commands and answerable refusals to the event loop."""
        name = self._topics.command_name(message.topic) or ""
        verdict = self._admission.judge(name, message.payload)
        if verdict.command is not None:
            if verdict.command.name is CommandName.ACK:
                self._ack(verdict.command)
                return
            if not self._cross(self._enqueue, message, verdict.command):
                with self._lock:
                    self._dropped += 1
            return
        refused = verdict.refusal
        if refused is None:
            self._refusals.note("rate_limited", name, "the topic's failure budget is spent")
            return
        self._refusals.note(refused.reason.value, name, refused.detail)
        if name == CommandName.ACK.value:
            return  # an ack is never answered
        with self._lock:
            answer = self._reply_budget.available(time.monotonic()) >= 1
            if answer:
                self._reply_budget.spend(1, time.monotonic())
            else:
                self._suppressed += 1
        if answer:
            command_id = refused.command_id or _best_effort_id(message.payload)
            self._cross(self._reply_refusal, name, command_id, refused)

    def _ack(self, command: Command) -> None:
        """An authentic ack, in paho's thread: check its one member, pass the seq on."""
        through = command.body.get("through_seq")
        if set(command.body) != {"through_seq"} or type(through) is not int or through < 0:
            with self._lock:
                self._acks_refused[Rejection.MALFORMED.value] += 1
            self._refusals.note("malformed", "ack", "body must be {'through_seq': N >= 0}")
            return
        if self._on_ack is not None:
            self._cross(self._on_ack, through)

    def _cross(self, callback: Callable[..., None], *args: Any) -> bool:
        """Hand work to the event loop; False if it is not running (not yet, or stopping)."""
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed: the gateway is stopping
            return False
        return True

    def _enqueue(self, message: Incoming, command: Command) -> None:
        try:
            self._queue.put_nowait((message, command))
        except asyncio.QueueFull:
            with self._lock:
                self._dropped += 1
            self._refusals.note("dropped", command.name.value, "the command queue is full")

    def _reply_refusal(self, name: str, command_id: str | None, refused: CommandRejected) -> None:
        self._reply(None, name, command_id, refusal(refused.reason, refused.detail))

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                message, command = await asyncio.wait_for(self._queue.get(), INTERVAL_S)
            except TimeoutError:
                self._refusals.flush_if_due()
                continue
            try:
                await self._process(message, command)
            except Exception:
                log.exception("command handling failed; the command gets no reply")

    async def _process(self, message: Incoming, command: Command) -> None:
        name = command.name.value
        started = time.perf_counter()
        previous = await self._handler.previous_outcome(command.id)
        if previous is not None:
            # Refused as already seen, with what became of it the first time.
            self._duplicates += 1
            first = "applied" if previous.applied else f"refused ({previous.reason})"
            again = CommandOutcome(
                False, Rejection.ALREADY_SEEN.value, f"{first} when first received"
            )
            original = {"ok": previous.applied, "reason": previous.reason}
            self._reply(message, name, command.id, Applied(again, {"original": original}))
            return
        applied = await self._handler.handle(command)
        if applied.outcome.applied:
            self._applied += 1
            log.info(
                "command %s %s applied in %.0f ms",
                name,
                command.id,
                (time.perf_counter() - started) * 1000,
            )
        else:
            reason = applied.outcome.reason or Rejection.INVALID.value
            self._handler_rejected[reason] += 1
            log.warning(
                "command %s %s refused: %s (%s)", name, command.id, reason, applied.outcome.detail
            )
        self._reply(message, name, command.id, applied)

    def _reply(
        self,
        message: Incoming | None,
        name: str,
        command_id: str | None,
        applied: Applied,
    ) -> None:
        """Answer on `cmd-reply`; `message` is given only for an authentic command, whose
        response topic is also answered if it lies under the platform's reply prefix."""
        outcome = applied.outcome
        document: dict[str, Any] = {
            "v": CONTRACT_VERSION,
            "gw": self._gw,
            "id": command_id,
            "cmd": name[:64] or None,
            "ts": iso_ms(self._clock.now()),
            "ok": outcome.applied,
        }
        if not outcome.applied:
            document["reason"] = outcome.reason
            document["detail"] = outcome.detail
        if applied.extra:
            document.update(applied.extra)
        payload = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        session = self._session()
        if session is None:
            log.warning("no broker session: reply to command %s not sent", command_id)
            return
        for topic, correlation in self._reply_targets(message):
            session.publish(topic, payload, correlation_data=correlation).add_done_callback(
                _ignore_outcome
            )

    def _reply_targets(self, message: Incoming | None) -> list[tuple[str, bytes | None]]:
        reply_topic = self._topics.command_reply
        response = message.response_topic if message is not None else None
        if response == reply_topic:
            return [(reply_topic, message.correlation_data if message else None)]
        targets: list[tuple[str, bytes | None]] = [(reply_topic, None)]
        if message is not None and response and self._may_answer_at(response):
            targets.append((response, message.correlation_data))
        return targets

    def _may_answer_at(self, topic: str) -> bool:
        prefix = self._reply_prefix
        return bool(prefix) and topic.startswith(prefix or "") and _publishable(topic)


_ID = re.compile(rb'"id"\s*:\s*"([0-9A-Fa-f-]{36})"')


def _best_effort_id(payload: bytes) -> str | None:
    """The id of a refused command, if it has a readable one, so the sender can match the
    reply: found by a byte scan, never by parsing what was refused."""
    found = _ID.search(payload)
    return found.group(1).decode("ascii") if found else None


def _publishable(topic: str) -> bool:
    return 0 < len(topic) <= 256 and not any(c in topic for c in "+#\0")


def refusal(reason: Rejection, detail: str) -> Applied:
    """A refused command's reply; a delta on the wrong base also says what to send instead."""
    extra = {"need": "allowlist.snapshot"} if reason is Rejection.VERSION_MISMATCH else None
    return Applied(CommandOutcome(False, reason.value, detail), extra)


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
