"""The OSDP control panel: one thread drives libosdp for every reader on one serial line.

libosdp polls each reader once more than 50 ms have passed since its last
reply, and a card read only ever travels in a poll's reply. Its Python
wrapper refreshes every 20 ms, so a read waits for the poll, then for the
refresh that notices the reply, then for the refresh that sends the command
(median 67-80 ms measured here). This thread refreshes instead when the line
has bytes, when the gateway hands it a command, and at the moment the next
poll of a reader falls due, reckoned from when that reader last answered. A
read then costs the wait for its poll plus a few milliseconds, and an idle
line two or three wake-ups per poll rather than a fixed fast tick.

Every libosdp call happens on this thread. Its events leave as typed values
through `deliver` (the caller crosses to asyncio with `call_soon_threadsafe`;
libosdp invokes its event callback from inside `refresh`, where a command
cannot be submitted through the wrapper's lock); commands arrive through a
deque and a wake-up pipe, so the gateway never waits on the line.

libosdp takes a reader offline for 300 s after any failure. After a key
mismatch that stands (trying the same wrong key sooner helps nobody); for a
reader that stopped answering, the thread disables and re-enables it after a
full-jitter backoff, so a door comes back within seconds of its reader.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import logging
import math
import os
import random
import select
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import osdp  # type: ignore[import-untyped]
import osdp_sys  # type: ignore[import-not-found]

from gateway.devices.osdp.channel import Line
from gateway.devices.osdp.keys import commit_key
from gateway.devices.osdp.line_events import (
    CardData,
    CardFormat,
    Feedback,
    InputReport,
    LineFailed,
    LinkChange,
    LocalReport,
    OfflineReason,
    PanelCommand,
    PanelEvent,
    PdSetup,
    offline_detail,
)
from gateway.devices.protocols import ReaderError

log = logging.getLogger(__name__)

IDLE_TICK_S = 0.05
"""Longest sleep: libosdp's own timers (200 ms reply timeout, 800 ms retry) tolerate it."""
MIN_WAIT_S = 0.001
LATE_S = 0.005
"""A poll this overdue is no longer waited for in 1 ms steps (another reader holds the line)."""
REFRESHES_PER_WAKE = 4
"""A queued command needs three refreshes to leave: finish the reply, pick it, send it."""
PAUSE_LIMIT_S = 0.5
"""Longest the line goes unrefreshed while the gateway's store catches up."""

_LIB_LOG_LEVEL = osdp.LogLevel.Critical
"""libosdp prints to stdout; this module reports what matters through logging instead."""

_GREEN, _RED, _DARK = (
    osdp.CommandLEDColor.Green,
    osdp.CommandLEDColor.Red,
    osdp.CommandLEDColor.Black,
)
_FEEDBACK = {  # temporary LED state (counts and timer in 100 ms units), then the buzzer
    True: (
        {"on_color": _GREEN, "on_count": 15, "off_color": _DARK, "off_count": 0, "timer_count": 15},
        {"on_count": 2, "off_count": 0, "rep_count": 1},
    ),
    False: (
        {"on_color": _RED, "on_count": 2, "off_color": _DARK, "off_count": 2, "timer_count": 20},
        {"on_count": 1, "off_count": 1, "rep_count": 3},
    ),
}
_OUT_PULSE, _OUT_ON, _OUT_OFF = 5, 2, 1
_MAX_TIMER_TICKS = 255
"""The 3.2.9 wrapper truncates the output timer to 8 bits: one pulse lasts 25.5 s at most."""
_RENEW_EARLY_S = 0.5


@dataclass
class _Pd:
    setup: PdSetup
    installing: bool
    online: bool = False
    reason: OfflineReason | None = None
    attempts: int = 0
    retry_at: float | None = None
    suppressed: bool = False
    """Status notifications are ours (a disable for a retry), not the reader's."""
    latch_off_at: float | None = None
    latch_off_owed: bool = False
    release_until: float | None = None
    renew_at: float | None = None
    """A release longer than one timed pulse is renewed before the pulse runs out."""


class PanelThread:
    """libosdp's control panel for the readers on one line, driven by a thread of its own."""

    def __init__(
        self,
        fd: int,
        label: str,
        pds: Sequence[PdSetup],
        deliver: Callable[[list[PanelEvent]], None],
        counters: Counter[str],
    ) -> None:
        osdp_sys.set_loglevel(_LIB_LOG_LEVEL)
        self._label = label
        self._line = Line(fd)
        self._pds = [_Pd(setup, setup.installing) for setup in pds]
        self._deliver = deliver
        self._commands: deque[PanelCommand] = deque()
        self._inbox: list[tuple[int, dict[str, Any], float]] = []
        self._outbox: list[PanelEvent] = []
        self._inflight = 0
        self._paused_since: float | None = None
        self._last_pump = 0.0
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.counters = counters
        infos = []
        for setup in pds:
            flags = [osdp.LibFlag.EnableNotification]
            if not setup.installing:
                flags.append(osdp.LibFlag.EnforceSecure)
            info = osdp.PDInfo(setup.address, self._line, scbk=setup.key, name=setup.name[:15])
            info.flags = flags
            infos.append(info.get())
        try:
            self._ctx: Any = osdp_sys.ControlPanel(infos)
        except Exception as exc:  # libosdp raises the bare Exception class
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise ReaderError(f"{label}: libosdp refused the reader setup: {exc}") from exc
        self._ctx.set_event_callback(self._on_event)
        self._ctx.set_command_completion_callback(self._on_completion)
        self._thread = threading.Thread(target=self._run, name=f"osdp:{label}", daemon=True)

    # --- the gateway's side: any thread ---

    def start(self) -> None:
        self._thread.start()

    def submit(self, command: PanelCommand) -> None:
        """Queue a command for the line; returns at once."""
        self._commands.append(command)
        self._wake()

    def pause(self, paused: bool) -> None:
        """While paused, the line is refreshed only to send commands (bounded in time)."""
        self._paused_since = (self._paused_since or time.monotonic()) if paused else None
        if not paused:
            self._wake()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and free libosdp; the caller closes the line's descriptor."""
        self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    # --- the thread ---

    def _run(self) -> None:
        try:
            while not self._stopping:
                readable, _, _ = select.select([self._line.fd, self._wake_r], [], [], self._wait())
                if self._wake_r in readable:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 512)
                if self._line.fd in readable:
                    self._line.fill()
                self._take_commands()
                self._timers()
                if self._may_refresh():
                    self._pump()
                self._flush()
        except OSError as exc:
            self._fail(f"{self._label}: {exc.strerror or exc}")
        except Exception as exc:
            log.exception("OSDP line %s: the control panel failed", self._label)
            self._fail(f"{self._label}: control panel failed: {exc}")
        finally:
            self._ctx = None  # libosdp's teardown

    def _fail(self, error: str) -> None:
        self._outbox.append(LineFailed(error))
        self._flush()

    def _flush(self) -> None:
        if self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                self._deliver(batch)
            except RuntimeError:  # the event loop is closed: nobody is listening
                self._stopping = True

    def _wait(self) -> float:
        if self._commands:
            return 0.0
        now = time.monotonic()
        deadline = now + IDLE_TICK_S
        for pd in self._pds:
            due = self._line.poll_due(pd.setup.address) if pd.online else None
            if due is not None and due > now - LATE_S:
                deadline = min(deadline, due)
            for moment in (pd.retry_at, pd.latch_off_at, pd.renew_at):
                if moment is not None:
                    deadline = min(deadline, moment)
        return max(deadline - now, MIN_WAIT_S)

    def _may_refresh(self) -> bool:
        if self._paused_since is None or self._inflight > 0:
            return True
        return time.monotonic() - self._last_pump > PAUSE_LIMIT_S

    def _pump(self) -> None:
        self._last_pump = time.monotonic()
        for _ in range(REFRESHES_PER_WAKE):
            writes = self._line.writes
            self._ctx.refresh()
            if self._line.error is not None:
                raise self._line.error
            if self._inbox:
                self._handle_inbox()
                self._flush()
            if self._line.writes != writes:
                break

    def _take_commands(self) -> None:
        while self._commands:
            command = self._commands.popleft()
            pd = self._pds[command.pd]
            if isinstance(command, Feedback):
                led, beep = _FEEDBACK[command.allowed]
                self._send(
                    command.pd,
                    {
                        "command": osdp.Command.LED,
                        "reader": 0,
                        "led_number": pd.setup.led_number,
                        "temporary": True,
                        "control_code": 2,  # set the temporary state and start its timer
                        **led,
                    },
                )
                self._send(
                    command.pd,
                    {"command": osdp.Command.Buzzer, "reader": 0, "control_code": 2, **beep},
                )
                continue
            now = time.monotonic()
            if pd.setup.latch:
                self._output(command.pd, _OUT_ON, 0)
                pd.latch_off_at = now + command.seconds
            else:
                pd.release_until = now + command.seconds
                self._pulse(command.pd, pd, now)

    def _pulse(self, index: int, pd: _Pd, now: float) -> None:
        """The reader's timer ends the release; past 25.5 s it is renewed, so that the
        door still locks on time if the gateway dies meanwhile."""
        remaining = (pd.release_until or now) - now
        ticks = min(_MAX_TIMER_TICKS, max(1, math.ceil(remaining * 10)))
        self._output(index, _OUT_PULSE, ticks)
        last = ticks < _MAX_TIMER_TICKS or remaining <= _MAX_TIMER_TICKS / 10
        pd.renew_at = None if last else now + _MAX_TIMER_TICKS / 10 - _RENEW_EARLY_S

    def _output(self, index: int, control_code: int, ticks: int) -> bool:
        return self._send(
            index,
            {
                "command": osdp.Command.Output,
                "output_no": self._pds[index].setup.output_no,
                "control_code": control_code,
                "timer_count": ticks,
            },
        )

    def _send(self, index: int, command: dict[str, Any]) -> bool:
        if not self._pds[index].online:
            self.counters["commands_dropped_offline"] += 1
            return False
        if not self._ctx.submit_command(index, command):
            self.counters["commands_refused"] += 1
            return False
        self._inflight += 1
        return True

    def _timers(self) -> None:
        now = time.monotonic()
        for index, pd in enumerate(self._pds):
            if pd.renew_at is not None and now >= pd.renew_at:
                self._pulse(index, pd, now)
            if pd.latch_off_at is not None and now >= pd.latch_off_at:
                pd.latch_off_at = None
                pd.latch_off_owed = not self._output(index, _OUT_OFF, 0)
            if pd.retry_at is not None and now >= pd.retry_at:
                if self._ctx.is_pd_enabled(index):
                    pd.suppressed = True
                    self._ctx.disable_pd(index)  # takes effect at the next refresh
                else:
                    pd.retry_at = None
                    pd.suppressed = False
                    self._ctx.enable_pd(index)

    # --- libosdp's callbacks (inside refresh) and what follows them ---

    def _on_event(self, index: int, event: dict[str, Any]) -> int:
        if sys.getrefcount(event) == _LEAKED_EVENT_REFS:
            _release_leaked(event)
        self._inbox.append((index, event, time.perf_counter()))
        return 0

    def _on_completion(self, _index: int, _command: dict[str, Any], status: int) -> None:
        self._inflight = max(0, self._inflight - 1)
        if status != osdp.CompletionStatus.Ok:
            self.counters[f"command_not_done_{status}"] += 1

    def _handle_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for index, event, at in inbox:
            kind = event.get("event")
            if kind == osdp.Event.CardRead:
                self._card(index, event, at)
            elif kind == osdp.Event.Status:
                self._status(index, event)
            elif kind == osdp.Event.Notification:
                self._notification(index, event)
            else:
                self.counters["events_ignored"] += 1

    def _card(self, index: int, event: dict[str, Any], at: float) -> None:
        if not self._pds[index].online:  # never without a secure channel
            self.counters["reads_dropped_insecure"] += 1
            return
        fmt = {
            osdp.CardFormat.Unspecified: CardFormat.RAW,
            osdp.CardFormat.Wiegand: CardFormat.WIEGAND,
        }
        self._outbox.append(
            CardData(
                index,
                fmt.get(event.get("format"), CardFormat.OTHER),
                int(event.get("length", 0)),
                bytes(event.get("data", b"")),
                at,
            )
        )

    def _status(self, index: int, event: dict[str, Any]) -> None:
        report = bytes(event.get("report", b""))
        if event.get("type") == osdp.StatusReportType.Input:
            self._outbox.append(InputReport(index, report))
        elif event.get("type") == osdp.StatusReportType.Local and len(report) >= 2:
            self._outbox.append(LocalReport(index, bool(report[0]), bool(report[1])))
        else:
            self.counters["status_ignored"] += 1

    def _notification(self, index: int, event: dict[str, Any]) -> None:
        if event.get("type") != osdp.EventNotification.PeripheralDeviceStatus:
            return
        pd = self._pds[index]
        if pd.suppressed:
            return
        if event.get("arg0"):
            self._came_online(index, pd)
        else:
            self._went_offline(index, pd)

    def _came_online(self, index: int, pd: _Pd) -> None:
        if not self._ctx.sc_status() & (1 << index):
            # Online without a secure channel: only possible while installing, when the
            # reader took neither key. Never talk to it in the clear.
            pd.suppressed = True
            self._ctx.disable_pd(index)
            reason = (
                OfflineReason.INSTALL_FAILED if pd.installing else OfflineReason.NO_SECURE_CHANNEL
            )
            self._schedule_retry(pd)
            self._report(index, pd, online=False, reason=reason)
            return
        if pd.installing:
            self._commit(index, pd)
        pd.attempts = 0
        self._report(index, pd, online=True, reason=None)
        if pd.latch_off_owed:
            pd.latch_off_owed = not self._output(index, _OUT_OFF, 0)

    def _went_offline(self, index: int, pd: _Pd) -> None:
        self._ctx.flush_commands(index)  # a stale unlock must not fire when it returns
        reason = self._line.offline_reason(pd.setup.address)
        if reason is not OfflineReason.KEY_MISMATCH:
            self._schedule_retry(pd)
        self._report(index, pd, online=False, reason=reason)

    def _schedule_retry(self, pd: _Pd) -> None:
        pd.attempts += 1
        delay = 0.5 + _jitter.uniform(0, 1.5 ** min(10, pd.attempts))
        pd.retry_at = time.monotonic() + delay

    def _commit(self, index: int, pd: _Pd) -> None:
        try:
            commit_key(pd.setup.key_file)
        except OSError as exc:
            # The reader holds the key and the pending file keeps it: the next start
            # offers it again and commits then.
            log.error("reader %s: cannot commit its new key: %s", pd.setup.name, exc.strerror)
            return
        pd.installing = False
        self._ctx.set_flag(index, osdp.LibFlag.EnforceSecure)
        log.info(
            "reader %s: new secure-channel key installed in %s", pd.setup.name, pd.setup.key_file
        )

    def _report(self, index: int, pd: _Pd, *, online: bool, reason: OfflineReason | None) -> None:
        if (pd.online, pd.reason) == (online, reason):
            return
        pd.online, pd.reason = online, reason
        detail = None if reason is None else offline_detail(pd.setup, reason)
        if online:
            log.info("reader %s (address %d) online", pd.setup.name, pd.setup.address)
        else:
            log.warning("reader %s offline: %s", pd.setup.name, detail)
        self._outbox.append(LinkChange(index, online, reason, detail))


_jitter = random.SystemRandom()

# libosdp 3.2.9's event callback never releases the dict it builds for each event
# (~430 bytes per card read or status change, for the life of the process). When the
# dict arrives with exactly that one reference too many, drop it.
_LEAKED_EVENT_REFS = 4 if importlib.metadata.version("libosdp") == "3.2.9" else -1
_py_decref = ctypes.pythonapi.Py_DecRef
_py_decref.argtypes = [ctypes.py_object]
_py_decref.restype = None


def _release_leaked(event: dict[str, Any]) -> None:
    _py_decref(event)
