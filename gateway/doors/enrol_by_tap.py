"""Enrol by tap: the next unknown card shown at a chosen reader is captured instead of decided.

A landlord arms a capture for a door from the web UI and taps the tenant's
card on that door's reader. The read is taken before the access decision, so
the door stays shut; the card's value stays here (never in the browser) and is
used once, by the enrolment that names the capture. A capture belongs to
whoever armed it and expires after `ttl_s`.

What keeps a capture from being turned against the residents:

* **One capture per door.** Arming a door where a capture still waits is
  refused (`DoorBusyError`, naming its owner); nothing cancels another's.
* **Only unknown cards are taken.** The door controller offers a read only when
  its card is not in the access index, so a resident's tap is decided as
  usual however often a door is armed.
* **Every arming and every captured tap is recorded** as an `enrol.capture`
  outbox event (`stage` armed or captured), and each captured tap in the audit
  log (`audit`): the API audits the arming itself, with the caller.

Who may arm which door is the API's to decide (it knows the callers and reads
the store); this module only keeps captures. Its public methods (`arm`,
`wait`, `take` for the web side, `offer` for the doors) take and return plain
values (strings, numbers, datetimes, `CaptureView`, `Credential`) so the web
side may reach it across a process boundary. Runs on the event loop:
`offer` is called by the door controller, the rest by the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.clock import Clock
from gateway.devices.protocols import CardRead
from gateway.domain.credentials import Credential, CredentialKind
from gateway.domain.events import EventType, OutboxEvent, new_event
from gateway.errors import RentgateError

log = logging.getLogger(__name__)

TTL_S = 60.0
CAPTURABLE = frozenset({CredentialKind.CARD_UID, CredentialKind.ID_NUMBER})

Audit = Callable[[str, str, str, str], None]
"""Append an audit entry: actor, action, subject, detail."""


class CaptureState(StrEnum):
    WAITING = "waiting"
    CAPTURED = "captured"
    EXPIRED = "expired"


class CaptureError(RentgateError, LookupError):
    """No such capture for this user (unknown, someone else's, used, or expired)."""


class DoorBusyError(RentgateError):
    """A capture already waits at the door: `owner` armed it, it waits until `expires_at`."""

    def __init__(self, door: str, owner: str, expires_at: datetime) -> None:
        super().__init__(f"a capture by {owner} already waits at door {door}")
        self.door = door
        self.owner = owner
        self.expires_at = expires_at


@dataclass(frozen=True)
class CaptureView:
    """A capture as callers see it (never the card's value)."""

    id: str
    door: str
    owner: str
    state: CaptureState
    masked: str | None
    expires_at: datetime


@dataclass
class _Capture:
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

    def view(self, now: datetime) -> CaptureView:
        masked = self.credential.masked if self.credential is not None else None
        return CaptureView(self.id, self.door, self.owner, self.state(now), masked, self.expires_at)


def _no_audit(_actor: str, _action: str, _subject: str, _detail: str) -> None:
    return None


class CardCaptures:
    """Armed and fulfilled captures, at most one waiting per door."""

    def __init__(
        self,
        clock: Clock,
        *,
        record: Callable[[OutboxEvent], None],
        audit: Audit = _no_audit,
        ttl_s: float = TTL_S,
    ) -> None:
        self._clock = clock
        self._record = record
        self._audit = audit
        self._ttl = timedelta(seconds=ttl_s)
        self._captures: dict[str, _Capture] = {}
        self.captured = 0

    def arm(self, owner: str, door: str) -> CaptureView:
        """Wait for the next unknown card at `door`; `DoorBusyError` while one waits there."""
        self._forget_expired()
        now = self._clock.now()
        for other in self._captures.values():
            if other.door == door and other.state(now) is CaptureState.WAITING:
                raise DoorBusyError(door, other.owner, other.expires_at)
        capture = _Capture(str(uuid.uuid4()), door, owner, now + self._ttl)
        self._captures[capture.id] = capture
        self._event(capture, "armed", now)
        log.info("capture armed at door %s by %s", door, owner)
        return capture.view(now)

    def offer(self, read: CardRead) -> bool:
        """Take the read if a capture waits at its door (True: do not decide it). The door
        controller offers only cards it does not know."""
        if not self._captures or read.credential.kind not in CAPTURABLE:
            return False
        now = self._clock.now()
        for capture in self._captures.values():
            if capture.door == read.door and capture.state(now) is CaptureState.WAITING:
                capture.credential = read.credential
                capture.expires_at = now + self._ttl  # time to fill in the form
                capture.done.set()
                self.captured += 1
                self._event(capture, "captured", now, read)
                masked = read.credential.masked
                self._audit(capture.owner, "capture.tap", f"capture:{capture.id}", masked)
                log.info("capture at door %s: %s", read.door, masked)
                return True
        return False

    async def wait(self, capture_id: str, owner: str, timeout_s: float) -> CaptureView:
        """The capture once a card was tapped, it expired, or `timeout_s` passed (0: now);
        `CaptureError` if it is not `owner`'s (or gone)."""
        capture = self._get(capture_id, owner)
        left = (capture.expires_at - self._clock.now()).total_seconds()
        if capture.credential is None and left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(capture.done.wait(), min(timeout_s, left))
        return capture.view(self._clock.now())

    def take(self, capture_id: str, owner: str) -> Credential:
        """The captured card, once: enrolling it uses the capture up."""
        capture = self._get(capture_id, owner)
        if self._clock.now() >= capture.expires_at:
            del self._captures[capture_id]
            raise CaptureError("the capture expired: arm a new one and tap again")
        if capture.credential is None:
            raise CaptureError("the capture has no card yet: tap the card on the reader")
        del self._captures[capture_id]
        return capture.credential

    def _get(self, capture_id: str, owner: str) -> _Capture:
        capture = self._captures.get(capture_id)
        if capture is None or capture.owner != owner:
            raise CaptureError("no such capture: arm a new one and tap again")
        return capture

    def _event(
        self, capture: _Capture, stage: str, now: datetime, read: CardRead | None = None
    ) -> None:
        body: dict[str, object] = {
            "door": capture.door,
            "capture": capture.id,
            "stage": stage,
            "owner": capture.owner,
            "expires_at": capture.expires_at.isoformat(),
        }
        if read is not None:
            body["reader"] = read.reader
            body["credential"] = {
                "kind": read.credential.kind.value,
                "masked": read.credential.masked,
            }
        self._record(new_event(EventType.ENROL_CAPTURE, now, self._clock.monotonic(), body))

    def _forget_expired(self) -> None:
        now = self._clock.now()
        for capture_id in [c.id for c in self._captures.values() if now >= c.expires_at]:
            del self._captures[capture_id]
