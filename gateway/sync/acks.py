"""The platform's acknowledgements at the gateway: its cursor, and when to send again.

A broker's PUBACK says only that the broker took an envelope; brokers then drop
(no subscriber, queue limits, a node dying). What counts is the platform's
signed `cmd/ack` (`{"through_seq": N}`: it has stored every event through N).
The downlink verifies the signature in paho's thread and hands the seq here on
the event loop; this records it through the store writer (`outbox.mark_acked`:
forward only, refused above the head) and keeps the clock that makes the uplink
publish again from the cursor when PUBACKed events wait unacknowledged for
`resend_after_s`. Each resend that brings no ack doubles the wait (up to
`MAX_BACKOFF` times), so a platform down for hours is not sent the whole
backlog every two minutes; the first ack after it resets the wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.store import outbox
from gateway.store.errors import StoreError
from gateway.store.outbox import AckOutcome
from gateway.store.writer import Writer

log = logging.getLogger(__name__)

MAX_BACKOFF = 8
"""The resend wait grows to at most this many times `resend_after_s` while no ack comes."""


@dataclass
class AckStats:
    """What became of the platform's authentic acks since the gateway started."""

    acked_seq: int = 0
    applied: int = 0
    """Acks that moved the cursor."""
    stale: int = 0
    """At or below the cursor already (old, repeated or crossed): no-ops."""
    refused: Counter[str] = field(default_factory=Counter)
    """By reason: `above_head` (nothing changes), `unavailable` (the store failed)."""
    resends: int = 0
    """Times the uplink went back to the cursor because acks stopped coming."""


class PlatformAcks:
    """The acknowledgement cursor (`meta.acked_seq`) and the resend clock; event loop only."""

    def __init__(
        self,
        writer: Writer,
        *,
        resend_after_s: float,
        on_advance: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = writer
        self._resend_after_s = resend_after_s
        self._on_advance = on_advance
        self._monotonic = monotonic
        self._waiting_since: float | None = None
        self._backoff = 1
        self.stats = AckStats()

    @property
    def acked_seq(self) -> int:
        return self.stats.acked_seq

    def seed(self, acked_seq: int) -> None:
        """The cursor as the store holds it (read at the start of each session)."""
        self.stats.acked_seq = max(self.stats.acked_seq, acked_seq)

    def offer(self, through_seq: int) -> None:
        """An authentic ack arrived: record it, in arrival order (the writer keeps the order)."""
        if through_seq <= self.stats.acked_seq:
            self.stats.stale += 1
            return
        try:
            submitted = self._writer.submit(lambda c: outbox.mark_acked(c, through_seq))
        except StoreError as exc:  # the writer is closing: the platform acks again later
            self.stats.refused["unavailable"] += 1
            log.warning("platform ack through seq %d not recorded: %s", through_seq, exc)
            return
        done = asyncio.wrap_future(submitted)
        done.add_done_callback(lambda future: self._recorded(through_seq, future))

    def _recorded(self, through_seq: int, future: asyncio.Future[AckOutcome]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if isinstance(error, StoreError):
            self.stats.refused["unavailable"] += 1
            log.error("platform ack through seq %d not recorded: %s", through_seq, error)
            return
        if error is not None:
            raise error
        outcome = future.result()
        if outcome is AckOutcome.ABOVE_HEAD:
            self.stats.refused[outcome.value] += 1
            log.warning("platform ack through seq %d refused: beyond the newest event", through_seq)
        elif outcome is AckOutcome.STALE:
            self.stats.stale += 1
        else:
            self.stats.acked_seq = max(self.stats.acked_seq, through_seq)
            self.stats.applied += 1
            self._backoff = 1
            self._waiting_since = self._monotonic()
            self._on_advance()

    # -- the resend clock (the uplink's) ---------------------------------------------------

    def published(self, delivered_seq: int) -> None:
        """The PUBACK cursor is at `delivered_seq`: start the clock if events now wait."""
        if delivered_seq <= self.stats.acked_seq:
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = self._monotonic()

    def resend_in(self, delivered_seq: int) -> float | None:
        """Seconds until PUBACKed events waiting for an ack are due to be sent again (0: now);
        None while nothing PUBACKed waits."""
        if delivered_seq <= self.stats.acked_seq or self._waiting_since is None:
            return None
        due = self._waiting_since + self._resend_after_s * self._backoff
        return max(0.0, due - self._monotonic())

    def resending(self) -> int:
        """The uplink goes back to the cursor now; the next resend waits longer. Returns the
        cursor to resend after."""
        self.stats.resends += 1
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        self._waiting_since = self._monotonic()
        return self.stats.acked_seq
