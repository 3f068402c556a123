"""The decision latency histogram: observed on the decision path, exported by `/metrics`.

Kept apart from `gateway.api.metrics` so the door path does not import the web stack.
"""

from __future__ import annotations

from bisect import bisect_left

LATENCY_BUCKETS_MS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
"""Decisions take ~0.05-0.5 ms (target p99 2 ms); the top buckets catch stalls."""


class DecisionLatency:
    """Histogram of credential read → decision done, observed on the event loop.

    An observation is one bisect and two additions (well under a microsecond),
    cheap enough for the decision path; Prometheus gets it in seconds.
    """

    __slots__ = ("_bounds", "_counts", "sum_s")

    def __init__(self, buckets_ms: tuple[float, ...] = LATENCY_BUCKETS_MS) -> None:
        if list(buckets_ms) != sorted(set(buckets_ms)) or not buckets_ms:
            raise ValueError("buckets must be distinct and ascending")
        self._bounds = tuple(ms / 1000 for ms in buckets_ms)
        self._counts = [0] * (len(self._bounds) + 1)
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self.sum_s += seconds

    @property
    def count(self) -> int:
        return sum(self._counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations at or below it) pairs ending with +Inf, as Prometheus wants."""
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", total))
        return buckets
