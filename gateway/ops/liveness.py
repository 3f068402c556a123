"""Is every loop of the gateway alive? Beats in, a verdict out; no I/O, clock injected.

Each loop registers a name and a staleness limit, then *beats*. The watchdog
pets systemd only while every registered loop beat within its limit. What a
beat proves is the contract; it differs per loop and is fixed here:

- `event-loop` (the decision loop): a task on the asyncio loop beats every
  second. Door decisions, readers and the uplink all run on that loop, so a
  beat proves the loop turns. Limit a few seconds: a blocked loop blocks doors.
- `uplink`: beats when the uplink is *not stuck*. It cannot beat from inside
  (it legitimately awaits for minutes with nothing to send, or through a broker
  outage), so `Progress` watches it from outside and beats when (a) it holds
  no session (an outage is waiting on the world, not a hang: the link retries
  by itself), or (b) it holds one and nothing is undelivered, or (c) events
  are pending and it moved (delivered seq advanced, or a session ended). A
  hang is the one remaining case: a session held, events pending, no
  progress, e.g. an await that never returns. Limit above the uplink's own
  PUBACK timeout (it ends a silent session itself, which is progress).
- `store-writer`: the writer thread beats from inside its own group
  transaction: every second the loop hands it a ping (an empty operation, one
  outstanding at a time; `watchdog.writer_pings`). A write stuck in the kernel
  runs no more pings; a failing disk still runs them between retries (it is
  alarmed elsewhere, and a restart would not mend it). Limit well above a slow
  SD card's fsync stalls.

`beat` may be called from any thread; `stale`/`alive` belong to the watchdog.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

EVENT_LOOP = "event-loop"
UPLINK = "uplink"
STORE_WRITER = "store-writer"


@dataclass(frozen=True)
class Stale:
    """A loop that has not beaten within its limit."""

    name: str
    silent_s: float
    limit_s: float


class Liveness:
    """Last beat per registered loop, judged against each loop's limit."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._now = monotonic
        self._lock = threading.Lock()
        self._limits: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def register(self, name: str, limit_s: float) -> None:
        """Start watching `name`; its clock starts now, so a loop that never beats goes stale."""
        if limit_s <= 0:
            raise ValueError(f"staleness limit of {name!r} must be positive, not {limit_s}")
        with self._lock:
            if name in self._limits:
                raise ValueError(f"loop {name!r} is already registered")
            self._limits[name] = limit_s
            self._last[name] = self._now()

    def beat(self, name: str) -> None:
        """`name` is alive now (any thread). An unregistered name is a wiring bug: KeyError."""
        now = self._now()
        with self._lock:
            if name not in self._limits:
                raise KeyError(f"loop {name!r} is not registered")
            self._last[name] = now

    def stale(self) -> list[Stale]:
        """Loops silent for longer than their limit, by name."""
        now = self._now()
        with self._lock:
            silent = {name: now - last for name, last in self._last.items()}
            return [
                Stale(name, silent[name], limit)
                for name, limit in sorted(self._limits.items())
                if silent[name] > limit
            ]

    def alive(self) -> bool:
        """True when every registered loop beat recently (and vacuously with none)."""
        return not self.stale()

    @property
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._limits)


class Progress:
    """Beats a loop that cannot beat itself, from observations of its state.

    Each `observe` says whether the component has work it should be doing
    (`busy`) and a `marker` that changes whenever it makes progress. It beats
    when the component is not busy or its marker moved since the last
    observation; busy with an unchanged marker is silence, and silence past the
    limit is a hang.
    """

    def __init__(self, liveness: Liveness, name: str) -> None:
        self._liveness = liveness
        self._name = name
        self._marker: Hashable | None = None
        self._seen = False

    def observe(self, *, busy: bool, marker: Hashable) -> bool:
        """Record one observation; True if it counted as a beat."""
        moved = not self._seen or marker != self._marker
        self._marker, self._seen = marker, True
        if busy and not moved:
            return False
        self._liveness.beat(self._name)
        return True
