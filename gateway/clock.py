"""The one clock of the gateway.

Every part that needs the time takes a `Clock`, so tests can pin or move time and
the whole gateway agrees on what "now" is. Wall time carries the configured
offset (events are stamped with it); monotonic time orders and measures.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo

PLAUSIBLE_YEARS = range(2000, 2101)
"""Years a time sent to the gateway (a tenancy's end, a terminal's capture, a history filter)
may fall in. Outside them is a typo or a probe: `9999-12-31T23:59:59-14:00` overflowed when
shown in the gateway's zone."""


def plausible(moment: datetime) -> datetime:
    """`moment` if its year, in its own offset and in UTC, is in `PLAUSIBLE_YEARS`; else
    ValueError (never OverflowError: the UTC year is only computed for plausible ones)."""
    first, last = PLAUSIBLE_YEARS.start, PLAUSIBLE_YEARS.stop - 1
    if moment.year not in PLAUSIBLE_YEARS or (
        moment.tzinfo is not None and moment.astimezone(UTC).year not in PLAUSIBLE_YEARS
    ):
        raise ValueError(f"the year must be {first} to {last}")
    return moment


class Clock(Protocol):
    """Source of wall-clock and monotonic time."""

    def now(self) -> datetime:
        """Timezone-aware wall-clock time."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""
        ...


class SystemClock:
    """The machine's clock, reported in a fixed zone (default Asia/Shanghai)."""

    def __init__(self, zone: str | tzinfo = "Asia/Shanghai") -> None:
        self._zone = ZoneInfo(zone) if isinstance(zone, str) else zone

    def now(self) -> datetime:
        return datetime.now(self._zone)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that only moves when told to: for tests and simulations."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._now = start
        self._mono = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        if seconds < 0:
            raise ValueError("a manual clock only moves forward")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


def iso_ms(moment: datetime) -> str:
    """ISO 8601 with milliseconds and offset, the wire format of `ts`."""
    return moment.isoformat(timespec="milliseconds")
