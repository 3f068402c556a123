"""Enrol by tap: the next card shown at a chosen reader is captured instead of decided.

A landlord arms a capture for a door from the web UI and taps the tenant's
card on that door's reader. The read is taken before the access decision, so
the door stays shut and nothing is recorded as a tap; the card's value stays
here (never in the browser) and is used once, by the enrolment that names the
capture. A capture belongs to whoever armed it and expires after `ttl_s`.
Runs on the event loop: `offer` is called by the door controller, `wait` by
the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.clock import Clock
from gateway.devices.protocols import CardRead
from gateway.domain.credentials import Credential, CredentialKind
from gateway.errors import RentgateError

log = logging.getLogger(__name__)

TTL_S = 60.0
CAPTURABLE = frozenset({CredentialKind.CARD_UID, CredentialKind.ID_NUMBER})


class CaptureState(StrEnum):
    WAITING = "waiting"
    CAPTURED = "captured"
    EXPIRED = "expired"


class CaptureError(RentgateError, LookupError):
    """No such capture for this user (unknown, someone else's, used, or expired)."""


@dataclass
class Capture:
    id: str
    door: str
    owner: str
    expires_at: datetime
    credential: Credential | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def state(self, now: datetime) -> CaptureState:
        if self.credential is not None:
            return CaptureState.CAPTURED
        return CaptureState.EXPIRED if now >= self.expires_at else CaptureState.WAITING


class CardCaptures:
    """Armed and fulfilled captures, at most one waiting per door."""

    def __init__(self, clock: Clock, ttl_s: float = TTL_S) -> None:
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_s)
        self._captures: dict[str, Capture] = {}
        self.captured = 0

    def now(self) -> datetime:
        return self._clock.now()

    def arm(self, owner: str, door: str) -> Capture:
        """Wait for the next card at `door`; replaces a capture still waiting there."""
        self._forget_expired()
        now = self._clock.now()
        for old in [c for c in self._captures.values() if c.door == door]:
            if old.state(now) is CaptureState.WAITING:
                del self._captures[old.id]
                old.done.set()
        capture = Capture(str(uuid.uuid4()), door, owner, now + self._ttl)
        self._captures[capture.id] = capture
        log.info("capture armed at door %s by %s", door, owner)
        return capture

    def offer(self, read: CardRead) -> bool:
        """Take the read if a capture waits at its door (True: do not decide it)."""
        if not self._captures or read.credential.kind not in CAPTURABLE:
            return False
        now = self._clock.now()
        for capture in self._captures.values():
            if capture.door == read.door and capture.state(now) is CaptureState.WAITING:
                capture.credential = read.credential
                capture.expires_at = now + self._ttl  # time to fill in the form
                capture.done.set()
                self.captured += 1
                log.info("capture at door %s: %s", read.door, read.credential.masked)
                return True
        return False

    def get(self, capture_id: str, owner: str) -> Capture:
        capture = self._captures.get(capture_id)
        if capture is None or capture.owner != owner:
            raise CaptureError("no such capture: arm a new one and tap again")
        return capture

    async def wait(self, capture_id: str, owner: str, timeout_s: float) -> Capture:
        """The capture once a card was tapped, it expired, or `timeout_s` passed."""
        capture = self.get(capture_id, owner)
        left = (capture.expires_at - self._clock.now()).total_seconds()
        if capture.credential is None and left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(capture.done.wait(), min(timeout_s, left))
        return capture

    def take(self, capture_id: str, owner: str) -> Credential:
        """The captured card, once: enrolling it uses the capture up."""
        capture = self.get(capture_id, owner)
        if self._clock.now() >= capture.expires_at:
            del self._captures[capture_id]
            raise CaptureError("the capture expired: arm a new one and tap again")
        if capture.credential is None:
            raise CaptureError("the capture has no card yet: tap the card on the reader")
        del self._captures[capture_id]
        return capture.credential

    def _forget_expired(self) -> None:
        now = self._clock.now()
        for capture_id in [c.id for c in self._captures.values() if now >= c.expires_at]:
            del self._captures[capture_id]
