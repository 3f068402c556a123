"""Opening a reader's device: a FIFO, a pty or a serial port, non-blocking, raw, at its speed.

Shared by every serial driver (line, SAM, OSDP): read-write so that a FIFO
never reports EOF when its writer goes away, non-blocking so the event loop
watches it with `add_reader` instead of parking a thread on it.
"""

from __future__ import annotations

import os
import stat
import termios
import tty
from pathlib import Path

from gateway.devices.protocols import ReaderError

_BAUD = {
    1200: termios.B1200,
    2400: termios.B2400,
    4800: termios.B4800,
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    57600: termios.B57600,
    115200: termios.B115200,
}
SUPPORTED_BAUD = tuple(_BAUD)


def open_line_device(path: Path, baud: int | None = None) -> int:
    """Open a FIFO or terminal device for non-blocking reads; refuse regular files."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise ReaderError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            raise ReaderError(f"{path} is not a FIFO, pty or serial port")
        if os.isatty(fd):
            tty.setraw(fd)
            if baud is not None:
                attrs = termios.tcgetattr(fd)
                attrs[4] = attrs[5] = _BAUD[baud]
                termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except (OSError, termios.error, ReaderError) as exc:
        os.close(fd)
        if isinstance(exc, ReaderError):
            raise
        raise ReaderError(f"cannot configure {path}: {exc}") from exc
    return fd
