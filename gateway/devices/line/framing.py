"""Framing newline-delimited credential values out of a byte stream.

Pure: bytes in, values or reject reasons out. Over-long input is cut at the
limit and everything up to the next newline is discarded with it, so a reader
that streams garbage costs bounded memory and yields one rejection per line.
"""

from __future__ import annotations

from collections.abc import Iterator

from gateway.domain.credentials import MAX_CREDENTIAL_LENGTH, RejectReason

Frame = str | RejectReason


class LineFramer:
    """Turns chunks of bytes into lines (as text) or reasons they were refused."""

    def __init__(self, max_line: int = MAX_CREDENTIAL_LENGTH) -> None:
        self._max = max_line
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, chunk: bytes) -> Iterator[Frame]:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._keep(chunk[start:])
                return
            piece = chunk[start:end]
            start = end + 1
            if self._discarding:
                self._discarding = False
                self._buffer.clear()
                yield RejectReason.TOO_LONG
                continue
            self._buffer += piece
            line = bytes(self._buffer)
            self._buffer.clear()
            yield self._decode(line)

    def _keep(self, rest: bytes) -> None:
        if self._discarding:
            return
        self._buffer += rest
        if len(self._buffer) > self._max:
            self._buffer.clear()
            self._discarding = True

    def _decode(self, line: bytes) -> Frame:
        line = line.rstrip(b"\r")
        if len(line) > self._max:
            return RejectReason.TOO_LONG
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return RejectReason.BINARY
        if not text.isprintable():
            return RejectReason.BINARY
        return text

    @property
    def discarding(self) -> bool:
        """True while the rest of an over-long line is being thrown away."""
        return self._discarding
