"""Reading a platform `Source` in tests: bounded loops only."""

from __future__ import annotations

import time

from gateway.platform.source import Delivery, Source


def collect(
    source: Source, count: int, timeout: float, settle: bool = True, batch: int = 100
) -> list[Delivery]:
    """Fetch until `count` deliveries came or `timeout` passed (settling each batch if
    `settle`); what came, which the caller compares with what it expected."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        wait = max(0.05, min(0.5, deadline - time.monotonic()))
        deliveries = source.fetch(min(batch, count - len(got)), wait)
        if settle and deliveries:
            source.settle(deliveries)
        got.extend(deliveries)
    return got


def payloads(deliveries: list[Delivery]) -> list[bytes]:
    return [delivery.payload for delivery in deliveries]
