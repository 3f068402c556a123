"""The platform's acknowledgements, from its side: what to ack, and the signed ack itself.

A platform acks, per gateway, the highest seq through which it has stored every
event (docs/asyncapi.yaml, `cmd/ack`). `AckTracker` keeps that contiguous run
from what arrives (envelopes, in any order, with repeats) and starts it from the
gateway's own `acked_seq` in its state message: events at or below it may have
been pruned at the gateway and will never come again. Used by
`rentgate platform watch --ack`, the reference consumer and the tests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

from gateway.domain.signed_commands import CommandName, sign
from gateway.domain.signing import SigningKey

ACK_TTL_S = 24 * 3600
"""An ack stays valid for a day: an old one arriving late is a no-op anyway."""
MAX_PENDING = 1_000_000
"""Seqs held above a gap per gateway; beyond it the oldest are forgotten (they come again)."""


class AckTracker:
    """Per gateway, the highest seq through which every event has been seen; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._through: dict[str, int] = {}
        self._above: dict[str, set[int]] = {}

    def through(self, gateway_id: str) -> int:
        with self._lock:
            return self._through.get(gateway_id, 0)

    def floor(self, gateway_id: str, acked_seq: int) -> int | None:
        """The gateway says everything through `acked_seq` was acknowledged before; the new
        contiguous seq if that moved it."""
        return self._advance(gateway_id, acked_seq, ())

    def add(self, gateway_id: str, seqs: Iterable[int]) -> int | None:
        """Events stored; the new contiguous seq if it moved (then ack it), else None."""
        return self._advance(gateway_id, 0, seqs)

    def _advance(self, gateway_id: str, floor: int, seqs: Iterable[int]) -> int | None:
        with self._lock:
            before = self._through.get(gateway_id, 0)
            through = max(before, floor)
            above = self._above.setdefault(gateway_id, set())
            above.update(seq for seq in seqs if seq > through)
            while through + 1 in above:
                through += 1
                above.discard(through)
            if len(above) > MAX_PENDING:
                above.difference_update(sorted(above)[: len(above) - MAX_PENDING])
            above.difference_update([seq for seq in above if seq <= through])
            self._through[gateway_id] = through
            return through if through > before else None


def ack_command(key: SigningKey, gateway_id: str, through_seq: int, now: int) -> bytes:
    """The signed `ack` of every event of `gateway_id` through `through_seq`."""
    return sign(
        key,
        gateway_id=gateway_id,
        name=CommandName.ACK,
        body={"through_seq": through_seq},
        now=now,
        ttl_s=ACK_TTL_S,
    )


def envelope_seqs(payload: bytes) -> tuple[str, list[int]] | None:
    """The gateway and the seqs of an events envelope; None if it is not one."""
    try:
        document: Any = json.loads(payload)
        gateway_id, events = document["gw"], document["events"]
        seqs = [event["seq"] for event in events]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(gateway_id, str) or not all(type(seq) is int for seq in seqs):
        return None
    return gateway_id, seqs


def state_acked_seq(payload: bytes) -> tuple[str, int] | None:
    """The gateway and its `acked_seq` from a state message, if it carries one."""
    try:
        document: Any = json.loads(payload)
        gateway_id, acked = document["gw"], document["acked_seq"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(gateway_id, str) or type(acked) is not int:
        return None
    return gateway_id, acked
