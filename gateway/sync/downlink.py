"""The downlink: platform commands in, one at a time, each answered on `cmd-reply`.

Every command is verified (`gateway.domain.signed_commands.verify`) before anything
looks at its body; a command already seen gets its original outcome back, so
a platform that re-sends until it hears a reply never has a command applied
twice. Commands are handled strictly in arrival order by one task: a delta can
never overtake the snapshot it builds on.

Delivery: the subscription is QoS 1 in a clean session, so a command sent
while the gateway is offline is not kept by the broker. The platform re-sends
any command it has no reply for (the retained `state` says when the gateway
is back); re-sending is always safe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.clock import Clock, iso_ms
from gateway.domain.signed_commands import Command, CommandRejected, Rejection, verify
from gateway.domain.signing import VerifyKey
from gateway.store.command_log import CommandOutcome
from gateway.sync.link import Incoming, Session
from gateway.sync.wire import CONTRACT_VERSION, Topics

log = logging.getLogger(__name__)

ID_SCAN_LIMIT = 1024 * 1024
"""Largest refused payload searched for an id to put in the reply."""
QUEUE_LIMIT = 64
"""Commands waiting to be handled; beyond this, arrivals are dropped and counted (a flood)."""


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


@dataclass
class DownlinkStats:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    dropped: int = 0
    rejected: Counter[str] | None = None

    def __post_init__(self) -> None:
        self.rejected = Counter()


class Downlink:
    def __init__(
        self,
        gateway_id: str,
        *,
        keys: Callable[[], Mapping[str, VerifyKey]],
        handler: CommandHandler,
        clock: Clock,
        session: Callable[[], Session | None],
    ) -> None:
        self._gw = gateway_id
        self._topics = Topics(gateway_id)
        self._keys = keys
        self._handler = handler
        self._clock = clock
        self._session = session
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue(QUEUE_LIMIT)
        self.stats = DownlinkStats()

    @property
    def topic_filter(self) -> str:
        return self._topics.commands

    def received(self, message: Incoming) -> None:
        """Called on the event loop for every message on the command topics."""
        self.stats.received += 1
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            log.warning("command queue full: dropped a command (%d so far)", self.stats.dropped)

    async def run(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self._process(message)
            except Exception:
                log.exception("command handling failed; the command gets no reply")

    async def _process(self, message: Incoming) -> None:
        name = self._topics.command_name(message.topic) or ""
        started = time.perf_counter()
        try:
            command = await asyncio.to_thread(
                verify,
                message.payload,
                topic_name=name,
                gateway_id=self._gw,
                keys=self._keys(),
                now=int(self._clock.now().timestamp()),
            )
        except CommandRejected as rejected:
            self._count_rejection(name, rejected.reason, rejected.detail)
            command_id = rejected.command_id or _best_effort_id(message.payload)
            self._reply(message, name, command_id, refusal(rejected.reason, rejected.detail))
            return
        previous = await self._handler.previous_outcome(command.id)
        if previous is not None:
            # Refused as already seen, with what became of it the first time.
            self.stats.duplicates += 1
            first = "applied" if previous.applied else f"refused ({previous.reason})"
            again = CommandOutcome(
                False, Rejection.ALREADY_SEEN.value, f"{first} when first received"
            )
            original = {"ok": previous.applied, "reason": previous.reason}
            self._reply(message, name, command.id, Applied(again, {"original": original}))
            return
        applied = await self._handler.handle(command)
        if applied.outcome.applied:
            self.stats.applied += 1
            log.info(
                "command %s %s applied in %.0f ms",
                name,
                command.id,
                (time.perf_counter() - started) * 1000,
            )
        else:
            reason = Rejection(applied.outcome.reason or Rejection.INVALID.value)
            self._count_rejection(name, reason, applied.outcome.detail)
        self._reply(message, name, command.id, applied)

    def _count_rejection(self, name: str, reason: Rejection, detail: str | None) -> None:
        assert self.stats.rejected is not None
        self.stats.rejected[reason.value] += 1
        log.warning("command %s rejected: %s (%s)", name[:40] or "?", reason.value, detail)

    def _reply(
        self,
        message: Incoming,
        name: str,
        command_id: str | None,
        applied: Applied,
    ) -> None:
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

    def _reply_targets(self, message: Incoming) -> list[tuple[str, bytes | None]]:
        targets: list[tuple[str, bytes | None]] = [(self._topics.command_reply, None)]
        response = message.response_topic
        if response and response != self._topics.command_reply and _publishable(response):
            targets.append((response, message.correlation_data))
        elif response == self._topics.command_reply:
            targets = [(response, message.correlation_data)]
        return targets


def _best_effort_id(payload: bytes) -> str | None:
    """The id of a refused command, if it has a readable one, so the sender can match the reply."""
    if len(payload) > ID_SCAN_LIMIT:
        return None
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    found = document.get("id") if isinstance(document, dict) else None
    return found if isinstance(found, str) and len(found) <= 64 else None


def _publishable(topic: str) -> bool:
    return 0 < len(topic) <= 256 and not any(c in topic for c in "+#\0")


def refusal(reason: Rejection, detail: str) -> Applied:
    """A refused command's reply; a delta on the wrong base also says what to send instead."""
    extra = {"need": "allowlist.snapshot"} if reason is Rejection.VERSION_MISMATCH else None
    return Applied(CommandOutcome(False, reason.value, detail), extra)


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
