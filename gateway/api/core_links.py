"""Enrol-by-tap captures, which live in the door core, as the web's API reaches them.

The door core takes the tap before it is decided, so the capture itself must
live there (`gateway.doors.enrol_by_tap`); the web arms it, waits for it and
takes its card through the core socket. The card's value crosses that
socket once, when an enrolment takes it, and never reaches the browser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.api.core_client import CoreClient
from gateway.domain.credentials import Credential, CredentialKind, parse_credential
from gateway.errors import RentgateError
from gateway.ops.local_socket import CoreRefused, CoreUnavailable

CALL_SLACK_S = 2.0
"""A wait's call deadline is its wait plus this."""


class CaptureRefused(RentgateError, LookupError):
    """The core has no such capture for this user, or will not arm one (`code` says which)."""

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail or {}


@dataclass(frozen=True)
class CaptureView:
    """A capture as the API shows it: never the card's value, only its masked form."""

    id: str
    door: str
    owner: str
    state: str
    masked: str | None
    expires_at: str

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> CaptureView:
        capture = answer["capture"]
        return cls(
            id=str(capture["id"]),
            door=str(capture["door"]),
            owner=str(capture["owner"]),
            state=str(capture["state"]),
            masked=capture.get("masked"),
            expires_at=str(capture["expires_at"]),
        )


class RemoteCaptures:
    """Arm, wait for and take captures held by the door core."""

    def __init__(self, core: CoreClient) -> None:
        self._core = core

    async def arm(self, owner: str, door: str) -> CaptureView:
        return CaptureView.from_answer(await self._call("capture.arm", owner=owner, door=door))

    async def wait(self, capture_id: str, owner: str, timeout_s: float) -> CaptureView:
        answer = await self._call(
            "capture.wait",
            timeout_s=timeout_s + CALL_SLACK_S,
            id=capture_id,
            owner=owner,
            wait_s=timeout_s,
        )
        return CaptureView.from_answer(answer)

    async def take(self, capture_id: str, owner: str) -> Credential:
        answer = await self._call("capture.take", id=capture_id, owner=owner)
        card = answer["credential"]
        return parse_credential(CredentialKind(card["kind"]), str(card["value"]))

    async def _call(self, op: str, timeout_s: float | None = None, **fields: Any) -> dict[str, Any]:
        try:
            return await self._core.call(op, timeout_s=timeout_s, **fields)
        except CoreRefused as exc:
            raise CaptureRefused(exc.code, str(exc), exc.detail) from exc
        except CoreUnavailable as exc:
            raise CaptureRefused("doors_offline", "the doors are offline: try again soon") from exc
