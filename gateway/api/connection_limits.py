"""Bounds on the HTTPS port: how many connections, from whom, and how long a request may take.

uvicorn alone accepts every connection and waits forever for a request's
headers: 1,050 idle sockets were enough to exhaust the process's descriptors.
Here every connection, once its TLS handshake is done (the handshake has a
deadline of its own, `handshake_timeout_s`), passes a gate: at most
`max_connections` in all and `max_per_address` from one client address;
beyond that it is closed at once and counted. A request must then arrive in
full, headers and body, within `read_timeout_s` of its first byte (or of the
connection), or the connection is closed and counted: a slow client holds a
slot for seconds, not forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """How much of the HTTPS port one process lets clients hold."""

    max_connections: int = 512
    max_per_address: int = 32
    read_timeout_s: float = 10.0
    handshake_timeout_s: float = 10.0
    keep_alive_s: float = 5.0


@dataclass
class ConnectionGate:
    """Counts open connections per client address and refuses those over the limits."""

    limits: ConnectionLimits
    open_by_address: Counter[str] = field(default_factory=Counter)
    open_total: int = 0
    refused_total: int = 0
    refused_per_address: int = 0
    read_timeouts: int = 0

    def admit(self, address: str) -> bool:
        """True if one more connection from `address` fits; it is then counted as open."""
        if self.open_total >= self.limits.max_connections:
            self.refused_total += 1
            return False
        if self.open_by_address[address] >= self.limits.max_per_address:
            self.refused_per_address += 1
            return False
        self.open_total += 1
        self.open_by_address[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open_total -= 1
        self.open_by_address[address] -= 1
        if self.open_by_address[address] <= 0:
            del self.open_by_address[address]


class BoundedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol behind a `ConnectionGate`, with a deadline per request."""

    gate: ConnectionGate  # set on the subclass `bounded_protocol` makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address: str | None = None
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self.gate.admit(address):
            transport.abort()
            return
        self._address = address
        super().connection_made(transport)
        self._arm_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_deadline()
        if self._address is None:
            return  # refused at the gate: uvicorn never saw it
        self.gate.release(self._address)
        self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._address is None:
            return
        if self._read_deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_read_deadline()  # the first bytes of the next request on a kept-alive line
        super().data_received(data)
        if self.cycle is not None and not self.cycle.more_body:
            self._cancel_read_deadline()  # the whole request is in

    def _arm_read_deadline(self) -> None:
        self._cancel_read_deadline()
        self._read_deadline = self.loop.call_later(
            self.gate.limits.read_timeout_s, self._read_too_slow
        )

    def _cancel_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_too_slow(self) -> None:
        self._read_deadline = None
        if self.cycle is not None and not self.cycle.more_body:
            return
        self.gate.read_timeouts += 1
        self.transport.abort()


def bounded_protocol(gate: ConnectionGate) -> type[BoundedH11Protocol]:
    """A protocol class bound to `gate` (uvicorn builds protocols from a class it is given)."""
    return type("GatedH11Protocol", (BoundedH11Protocol,), {"gate": gate})
