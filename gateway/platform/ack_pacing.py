"""At most one ack per gateway per interval: acks cost the ingest more than storing does.

With 10^4 gateways at a steady 2,000 events/s, nearly every event is its gateway's
only one in a batch, so an ack per commit is an ack per event, each signed (Ed25519)
and published: measured at ~0.5 ms each inside the ingest, more than the commit.
Nothing waits on an ack but the gateway's retention and its resend timer
(`[mqtt] ack_resend_s`, 120 s by default), so an ack may wait: the first one to a
gateway goes at once, later ones at most every `every_s`, carrying the highest seq
stored by then. Rows are committed before any of this: tap-to-row does not change.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping


class AckPacer:
    """Decides which acks go now and keeps the rest until their gateway's interval is up."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._last_sent: dict[str, float] = {}
        self._pending: dict[str, int] = {}
        self._due: list[tuple[float, str]] = []

    def stored(self, acks: Mapping[str, int]) -> dict[str, int]:
        """New acks from a commit: those to send now; the others wait (`due`)."""
        now = self._clock()
        send: dict[str, int] = {}
        for gateway_id, committed in acks.items():
            through = max(committed, self._pending.get(gateway_id, 0))
            last = self._last_sent.get(gateway_id)
            if last is None or now - last >= self._every_s:
                send[gateway_id] = through
                self._pending.pop(gateway_id, None)
                self._last_sent[gateway_id] = now
            else:
                if gateway_id not in self._pending:
                    heapq.heappush(self._due, (last + self._every_s, gateway_id))
                self._pending[gateway_id] = through
        return send

    def due(self) -> dict[str, int]:
        """Acks whose gateway's interval is up (call often; it is cheap when none are)."""
        now = self._clock()
        send: dict[str, int] = {}
        while self._due and self._due[0][0] <= now:
            _, gateway_id = heapq.heappop(self._due)
            through = self._pending.pop(gateway_id, None)
            if through is not None:
                send[gateway_id] = through
                self._last_sent[gateway_id] = now
        return send

    def drain(self) -> dict[str, int]:
        """Everything waiting (stopping: what is committed is acknowledged before leaving)."""
        send, self._pending, self._due = self._pending, {}, []
        return send

    @property
    def waiting(self) -> int:
        return len(self._pending)
