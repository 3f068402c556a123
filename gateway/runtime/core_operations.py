"""What the door core answers on its local socket: the few things only it can do.

Each operation takes plain fields and answers plain fields; anything it does
not like is a `CoreRefused` (answered, counted) or a `KeyError`/`TypeError`/
`ValueError` (answered as a bad request). See `gateway.ops.local_socket`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.clock import iso_ms
from gateway.doors.enrol_by_tap import CaptureError, CaptureView, CardCaptures, DoorBusyError
from gateway.ops.local_socket import CoreRefused
from gateway.ops.status import ApiStatus, GatewayStatus
from gateway.residence.alerts import AlertEngine
from gateway.runtime.core_server import Handler

WAIT_MAX_S = 30.0


@dataclass
class WebReport:
    """Where the web process says the API listens (shown by `rentgate status`)."""

    api: ApiStatus = field(default_factory=ApiStatus)


def core_operations(
    *,
    status: Callable[[], GatewayStatus],
    captures: CardCaptures,
    alerts: AlertEngine,
    outbox_changed: Callable[[], None],
    web: WebReport,
) -> dict[str, Handler]:
    """The handlers by operation name."""

    async def get_status(_request: dict[str, Any]) -> dict[str, Any]:
        return {"status": status().to_json()}

    async def acknowledge(request: dict[str, Any]) -> dict[str, Any]:
        return {"acknowledged": await alerts.acknowledge(_text(request, "id"))}

    async def changed(_request: dict[str, Any]) -> dict[str, Any]:
        outbox_changed()
        return {}

    async def listening(request: dict[str, Any]) -> dict[str, Any]:
        url, error = request.get("url"), request.get("error")
        web.api = ApiStatus(
            url if isinstance(url, str) else None, error if isinstance(error, str) else None
        )
        return {}

    async def arm(request: dict[str, Any]) -> dict[str, Any]:
        try:
            capture = captures.arm(_text(request, "owner"), _text(request, "door"))
        except DoorBusyError as busy:
            detail = {"owner": busy.owner, "expires_at": iso_ms(busy.expires_at)}
            raise CoreRefused("door_busy", str(busy), detail) from busy
        return _capture(capture)

    async def wait(request: dict[str, Any]) -> dict[str, Any]:
        wait_s = min(max(float(request.get("wait_s", 0)), 0.0), WAIT_MAX_S)
        with _refused():
            capture = await captures.wait(_text(request, "id"), _text(request, "owner"), wait_s)
        return _capture(capture)

    async def take(request: dict[str, Any]) -> dict[str, Any]:
        with _refused():
            credential = captures.take(_text(request, "id"), _text(request, "owner"))
        return {"credential": {"kind": credential.kind.value, "value": credential.value}}

    return {
        "status": get_status,
        "alert.ack": acknowledge,
        "outbox.changed": changed,
        "web.listening": listening,
        "capture.arm": arm,
        "capture.wait": wait,
        "capture.take": take,
    }


def _text(request: dict[str, Any], key: str) -> str:
    value = request[key]
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise ValueError(f"{key} must be a short text")
    return value


def _capture(capture: CaptureView) -> dict[str, Any]:
    return {
        "capture": {
            "id": capture.id,
            "door": capture.door,
            "owner": capture.owner,
            "state": capture.state.value,
            "masked": capture.masked,
            "expires_at": iso_ms(capture.expires_at),
        }
    }


class _refused:
    """Turn a `CaptureError` into an answered refusal."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _t: Any
    ) -> None:
        if isinstance(error, CaptureError):
            raise CoreRefused("no_capture", str(error)) from error
