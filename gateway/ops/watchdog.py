"""Tell systemd the gateway is ready, alive or stopping; pet its watchdog only while all loops live.

The pet (`WATCHDOG=1`) is sent by `Watchdog.check`, which runs on the asyncio
loop and nowhere else: a blocked loop cannot pet, so systemd restarts a gateway
whose loop hangs. Other threads only *beat* `Liveness`; a beat from the store
writer thread can never pet on its own. A stale loop withholds the pet; if it
stays stale, systemd kills the process after `WatchdogSec` (SIGABRT, with
faulthandler's stacks in the journal) and `Restart=on-failure` starts it again.

Wiring in `Gateway.run` (what beats where; see `gateway.ops.liveness` for what a beat means):

    liveness = Liveness(self.clock.monotonic)
    liveness.register(EVENT_LOOP, 5.0)
    liveness.register(UPLINK, self.config.mqtt.ack_timeout_s + 60)
    liveness.register(STORE_WRITER, 60.0)
    watchdog = Watchdog(liveness, probes=[uplink_probe(liveness, self.uplink,
                                                       lambda: self.writer.health.head_seq)],
                        summary=...)
    tasks += heartbeat(liveness), writer_pings(liveness, self.writer),
             watchdog.run(self.ready)            # READY=1 once `ready` is set
    ... and `watchdog.stopping()` first thing in `_shutdown` (STOPPING=1).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from gateway.ops.liveness import EVENT_LOOP, STORE_WRITER, UPLINK, Liveness, Progress, Stale
from gateway.ops.sd_notify import Notifier, watchdog_interval
from gateway.store.errors import StoreError

if TYPE_CHECKING:
    from gateway.store.writer import Writer
    from gateway.sync.uplink import Uplink

log = logging.getLogger(__name__)

Probe = Callable[[], None]
"""Looks at a component that cannot beat itself and beats for it (see `Progress`)."""

CHECK_EVERY_S = 5.0
"""Without a systemd watchdog: how often loops are still checked, for STATUS and the log."""
BEAT_EVERY_S = 1.0


class Watchdog:
    """READY=1 once, then every interval: run the probes, judge the loops, pet or withhold."""

    def __init__(
        self,
        liveness: Liveness,
        *,
        notifier: Notifier | None = None,
        interval_s: float | None = None,
        probes: Sequence[Probe] = (),
        summary: Callable[[], str] | None = None,
    ) -> None:
        """`interval_s` None: half of systemd's `WATCHDOG_USEC`, or no petting without it."""
        self._liveness = liveness
        self._notifier = notifier or Notifier.from_env()
        self._probes = tuple(probes)
        self._summary = summary
        interval = interval_s if interval_s is not None else watchdog_interval()
        self.petting = interval is not None
        self.interval_s = interval if interval is not None else CHECK_EVERY_S
        self.checks = 0
        self.pets = 0
        self.withheld = 0
        self._stale: frozenset[str] = frozenset()
        self._last_status: str | None = None
        self._stopping = False

    def check(self) -> bool:
        """One round on the loop's thread; True if the loops are alive (and pet if petting)."""
        if self._stopping:
            return False
        for probe in self._probes:
            probe()
        stale = self._liveness.stale()
        self.checks += 1
        self._log_changes(stale)
        text = self.status_text(stale)
        if text != self._last_status:
            self._notifier.status(text)
            self._last_status = text
        if stale:
            self.withheld += 1
            return False
        if self.petting:
            self._notifier.watchdog()
            self.pets += 1
        return True

    def status_text(self, stale: Sequence[Stale]) -> str:
        """One line for `systemctl status`: hung loops first, then the app's summary."""
        if stale:
            head = "HUNG: " + ", ".join(
                f"{item.name} silent {item.silent_s:.0f} s (limit {item.limit_s:g} s)"
                for item in stale
            )
        else:
            head = f"{len(self._liveness.names)} loop(s) alive"
        return head if self._summary is None else f"{head}; {self._summary()}"

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Wait for `ready`, send READY=1, then check every interval until cancelled."""
        if ready is not None:
            await ready.wait()
        if self._stopping:
            return
        self._notifier.ready()
        while True:
            self.check()
            await asyncio.sleep(self.interval_s)

    def stopping(self, status: str = "stopping: committing writes, saying goodbye") -> None:
        """STOPPING=1 and no more pets: from here TimeoutStopSec bounds the stop."""
        if not self._stopping:
            self._stopping = True
            self._notifier.stopping(status)

    def _log_changes(self, stale: Sequence[Stale]) -> None:
        names = frozenset(item.name for item in stale)
        for item in stale:
            if item.name not in self._stale:
                log.error(
                    "%s silent for %.0f s (limit %g s): not petting the watchdog%s",
                    item.name,
                    item.silent_s,
                    item.limit_s,
                    "; systemd will restart the gateway" if self.petting else "",
                )
        for name in sorted(self._stale - names):
            log.warning("%s alive again", name)
        self._stale = names


async def heartbeat(liveness: Liveness, every_s: float = BEAT_EVERY_S) -> None:
    """Beat `event-loop` while the loop turns: the decision loop's proof of life."""
    while True:
        liveness.beat(EVENT_LOOP)
        await asyncio.sleep(every_s)


async def writer_pings(liveness: Liveness, writer: Writer, every_s: float = BEAT_EVERY_S) -> None:
    """Have the store writer thread beat `store-writer` from inside its group transactions.

    One ping (an empty operation) is outstanding at a time: a writer stuck in a
    commit runs none, so its beats stop; a failing disk still runs them (the
    operation runs before the commit fails) and is alarmed by the writer's health.
    Stops when the writer closes.
    """

    if STORE_WRITER not in liveness.names:
        raise KeyError(f"register {STORE_WRITER!r} before pinging the writer")

    def beat(_conn: sqlite3.Connection) -> None:
        liveness.beat(STORE_WRITER)

    outstanding: Future[None] | None = None
    while True:
        if outstanding is None or outstanding.done():
            try:
                outstanding = writer.submit(beat)
            except StoreError:
                return
        await asyncio.sleep(every_s)


def uplink_probe(liveness: Liveness, uplink: Uplink, head_seq: Callable[[], int]) -> Probe:
    """Beat `uplink` unless it holds a session with events pending and makes no progress.

    Busy: it holds a session (closed or not: a stuck uplink never asks for the
    next one) and `head_seq()` (the writer's committed head) is past its
    delivered seq. Progress: delivered seq advanced or a session ended.
    """
    progress = Progress(liveness, UPLINK)

    def probe() -> None:
        delivered = uplink.stats.delivered_seq
        busy = uplink.session is not None and head_seq() > delivered
        progress.observe(busy=busy, marker=(uplink.link.reconnects, delivered))

    return probe
