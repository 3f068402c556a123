"""libosdp's channel on a serial line: buffered reads, and who was asked what and answered.

Bytes are read from the descriptor into a buffer here, not left in the
kernel, so that `select` never spins on bytes no reader is waiting for (line
noise, a reply that came after its timeout). Outgoing packets are parsed just
far enough to know which reader was addressed and with which command: when a
reader goes offline that tells silence (nothing heard since) from a refused
key (it answered the secure-channel challenge) from a reader without a secure
channel (it answered the capability query and was refused for that).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time

from gateway.devices.osdp.line_events import OfflineReason

RX_LIMIT = 4096
_SOM, _MARK, _CONTROL_SCB = 0x53, 0xFF, 0x08
_CMD_CAP, _CMD_CHLNG, _CMD_SCRYPT = 0x62, 0x76, 0x77


class Line:
    """The channel libosdp reads and writes (`read`, `write`, `flush`, `id`)."""

    def __init__(self, fd: int) -> None:
        self.id = 1  # one id for every reader: they share the line
        self.fd = fd
        self.rx = bytearray()
        self.writes = 0
        self.dropped = 0
        self.error: OSError | None = None
        self._addressed: int | None = None
        self._sent_at: dict[int, float] = {}
        self._heard_at: dict[int, float] = {}
        self._last_command: dict[int, int] = {}

    def fill(self) -> None:
        """Take what the line has delivered; `OSError` when the line is gone."""
        while True:
            try:
                chunk = os.read(self.fd, 1024)
            except BlockingIOError:
                return
            if not chunk:
                raise OSError(errno.EIO, "end of input")
            if self._addressed is not None:
                self._heard_at[self._addressed] = time.monotonic()
            self.rx += chunk
            if len(self.rx) > RX_LIMIT:
                self.dropped += len(self.rx) - RX_LIMIT
                del self.rx[: len(self.rx) - RX_LIMIT]

    def read(self, max_bytes: int) -> bytes:
        chunk = bytes(self.rx[:max_bytes])
        del self.rx[:max_bytes]
        return chunk

    def write(self, buf: bytes) -> int:
        self._note(buf)
        try:
            written = os.write(self.fd, buf)
        except BlockingIOError:
            return 0
        except OSError as exc:  # libosdp only sees -1; the panel raises this after refresh
            self.error = exc
            return -1
        self.writes += 1
        return written

    def flush(self) -> None:
        self.rx.clear()
        with contextlib.suppress(OSError):
            while os.read(self.fd, 1024):
                pass

    def poll_due(self, address: int) -> float | None:
        """When libosdp will poll `address` next: 50 ms after its last answer, if unasked since."""
        heard, sent = self._heard_at.get(address), self._sent_at.get(address, 0.0)
        if heard is None or heard <= sent:
            return None
        return heard + 0.0505  # "more than 50" whole milliseconds, on libosdp's clock

    def offline_reason(self, address: int) -> OfflineReason:
        """Why the exchange with `address` failed, from what was last sent and heard."""
        if self._heard_at.get(address, -1.0) < self._sent_at.get(address, 0.0):
            return OfflineReason.NO_REPLY
        command = self._last_command.get(address)
        if command in (_CMD_CHLNG, _CMD_SCRYPT):
            return OfflineReason.KEY_MISMATCH
        if command == _CMD_CAP:
            return OfflineReason.NO_SECURE_CHANNEL
        return OfflineReason.PROTOCOL

    def _note(self, buf: bytes) -> None:
        start = 1 if buf[:1] == bytes([_MARK]) else 0
        header = buf[start : start + 6]
        if len(header) < 6 or header[0] != _SOM:
            return
        address, control = header[1] & 0x7F, header[4]
        command_at = start + 5 + (header[5] if control & _CONTROL_SCB else 0)
        self._addressed = address
        self._sent_at[address] = time.monotonic()
        if command_at < len(buf):
            self._last_command[address] = buf[command_at]
