"""Noticing a wall clock that jumps (no RTC, NTP arriving late, someone setting the time).

Every second the wall clock's advance is compared with the monotonic clock's.
A difference beyond `JUMP_S` is a jump: a `gateway.alarm` clock_jump says by
how much, and is cleared at the next calm second. Nothing else changes: seq
comes from the store's counter and keeps its order whatever the wall clock
does, and every event also carries `mono`, which never goes backwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.clock import Clock

log = logging.getLogger(__name__)

JUMP_S = 2.0
"""Wall and monotonic clocks may disagree this much per check before it counts as a jump."""


class ClockWatch:
    def __init__(
        self,
        clock: Clock,
        alarm: Callable[[str, bool, str], None],
        every_s: float = 1.0,
    ) -> None:
        self._clock = clock
        self._alarm = alarm
        self._every_s = every_s
        self.jumps = 0
        self._last: tuple[float, float] | None = None

    def check(self) -> float | None:
        """Compare with the previous reading; the jump in seconds, if there was one."""
        wall, mono = self._clock.now().timestamp(), self._clock.monotonic()
        previous, self._last = self._last, (wall, mono)
        if previous is None:
            return None
        drift = (wall - previous[0]) - (mono - previous[1])
        if abs(drift) <= JUMP_S:
            self._alarm("clock_jump", False, "")
            return None
        self.jumps += 1
        log.warning("wall clock jumped by %+.1f s (monotonic clock unaffected)", drift)
        self._alarm(
            "clock_jump",
            True,
            f"the wall clock jumped by {drift:+.1f} s; event ts before and after are not"
            " comparable across it, seq and mono are",
        )
        return drift

    async def run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(self._every_s)
