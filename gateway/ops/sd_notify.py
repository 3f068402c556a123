"""sd_notify without libsystemd: tell the service manager we are ready, alive or stopping.

The manager passes `NOTIFY_SOCKET` (an AF_UNIX datagram socket; a leading `@`
means the abstract namespace) and, when the unit sets `WatchdogSec=`,
`WATCHDOG_USEC` and `WATCHDOG_PID`. One datagram carries newline-separated
`KEY=value` fields. Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op,
so the gateway runs the same way in a terminal, a test or a unit.

Sending never blocks: a datagram socket whose reader lags fills up (the kernel
queues as few as 10 datagrams, net.unix.max_dgram_qlen), and a blocking send
would then stop the event loop, and with it the doors. A notification that
cannot be sent (a full queue, the manager gone) is counted and logged once,
never raised.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import RentgateError

log = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
STATUS_MAX_CHARS = 200
"""`systemctl status` shows one line; longer texts are cut here, not by the manager."""


class NotifyAddressError(RentgateError, ValueError):
    """`NOTIFY_SOCKET` is neither an absolute path nor an abstract (`@…`) name."""


def socket_address(value: str) -> str:
    """The `sendto` address for a `NOTIFY_SOCKET` value (abstract names start with NUL)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise NotifyAddressError(f"unsupported NOTIFY_SOCKET {value!r}: need /path or @name")


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """How often to pet the watchdog, in seconds: half of `WATCHDOG_USEC`.

    None when the watchdog is off: no or a bad `WATCHDOG_USEC`, or a
    `WATCHDOG_PID` naming another process (the variables leaked to a child).
    """
    env = os.environ if environ is None else environ
    usec_text = env.get(WATCHDOG_USEC, "")
    if not usec_text.isdigit() or int(usec_text) == 0:
        return None
    pid_text = env.get(WATCHDOG_PID)
    if pid_text is not None:
        own = os.getpid() if pid is None else pid
        if not pid_text.isdigit() or int(pid_text) != own:
            return None
    return int(usec_text) / 2_000_000


@dataclass
class NotifyStats:
    sent: int = 0
    failed: int = 0
    last_error: str | None = None


class Notifier:
    """Sends notifications to one manager socket, or nowhere when `address` is None."""

    def __init__(self, address: str | None) -> None:
        self._address = address
        self.stats = NotifyStats()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The manager named by `NOTIFY_SOCKET`; a bad value is logged and ignored."""
        env = os.environ if environ is None else environ
        value = env.get(NOTIFY_SOCKET)
        if not value:
            return cls(None)
        try:
            return cls(socket_address(value))
        except NotifyAddressError as exc:
            log.warning("not notifying the service manager: %s", exc)
            return cls(None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; True if the manager got it."""
        if self._address is None:
            return False
        if any("\n" in field or "=" not in field for field in fields):
            raise ValueError(f"not KEY=value fields of one line each: {fields!r}")
        try:
            with socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            ) as sock:
                sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            self.stats.failed += 1
            if self.stats.last_error is None:
                log.warning("cannot notify the service manager: %s", exc)
            self.stats.last_error = str(exc)
            return False
        self.stats.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: start-up is over; systemd marks the unit started and arms the watchdog."""
        return self.notify("READY=1", *([_status_field(status)] if status is not None else []))

    def status(self, text: str) -> bool:
        """STATUS=: one line shown by `systemctl status`."""
        return self.notify(_status_field(text))

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: a clean stop has begun; TimeoutStopSec now runs, not the watchdog."""
        return self.notify("STOPPING=1", *([_status_field(status)] if status is not None else []))

    def watchdog(self) -> bool:
        """WATCHDOG=1: the service is alive; systemd restarts the timer."""
        return self.notify("WATCHDOG=1")


def _status_field(text: str) -> str:
    line = " ".join(text.split())
    if len(line) > STATUS_MAX_CHARS:
        line = line[: STATUS_MAX_CHARS - 1] + "…"
    return f"STATUS={line}"


def ready(status: str | None = None) -> bool:
    """READY=1 to the manager in `NOTIFY_SOCKET`, if any."""
    return Notifier.from_env().ready(status)


def status(text: str) -> bool:
    """STATUS=text to the manager in `NOTIFY_SOCKET`, if any."""
    return Notifier.from_env().status(text)


def stopping(status: str | None = None) -> bool:
    """STOPPING=1 to the manager in `NOTIFY_SOCKET`, if any."""
    return Notifier.from_env().stopping(status)


def watchdog() -> bool:
    """WATCHDOG=1 to the manager in `NOTIFY_SOCKET`, if any."""
    return Notifier.from_env().watchdog()
