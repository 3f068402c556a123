"""Refusals logged as one summary line per interval, not one line per message.

A flood of junk must not become a flood of log lines (a tester once got 26 MB
of warnings in 10 s, and the formatting alone slowed the doors). The first
refusal of an interval is logged with its detail, so a lone mistake is still
visible at once; the rest are counted and summed up when the interval ends.
Thread-safe: refusals are noted in paho's thread, flushed from the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

INTERVAL_S = 10.0


class RefusalLog:
    """At most two lines per interval: the first refusal, then a summary of the others."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = INTERVAL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._since = monotonic()
        self._first_logged = False
        self._counts: Counter[str] = Counter()

    def note(self, what: str, name: str, detail: str | None) -> None:
        """One refusal (`what` is its reason, or `rate_limited`) on command topic `name`."""
        with self._lock:
            self._counts[what] += 1
            first = not self._first_logged
            self._first_logged = True
        if first:
            self._log.warning("command %s refused: %s (%s)", name[:40] or "?", what, detail)
        self.flush_if_due()

    def flush_if_due(self) -> None:
        """Log the summary of the interval that ended, if one did and anything was refused."""
        now = self._monotonic()
        with self._lock:
            if now - self._since < self._interval:
                return
            counts, self._counts = self._counts, Counter()
            elapsed, self._since = now - self._since, now
            self._first_logged = False
        total = sum(counts.values())
        if total > 1:  # a lone refusal was already logged in full
            summary = ", ".join(f"{reason} {n}" for reason, n in counts.most_common())
            self._log.warning(
                "commands refused in the last %.0f s: %d (%s)",
                elapsed,
                total,
                summary,
            )
