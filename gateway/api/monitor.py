"""What the dashboard watches: doors and readers, the platform link, alerts, terminal records.

The running gateway's in-memory state reaches the API through `GatewayView`
(a small protocol, so the API can be tested without doors); stored facts come
from the store. A landlord sees the doors that serve one of their units (and
the building's shared doors) and alerts about their tenants only, raised during
their own tenancy of them, at their doors or at none (`scope_in`: the same cut
as the event history's).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from gateway.api import models
from gateway.api.auth import Principal, Role
from gateway.api.directory import DirectoryError, DirectoryProblem
from gateway.api.person_view import alert_seen
from gateway.api.storeaccess import StoreAccess
from gateway.clock import iso_ms
from gateway.ops.status import GatewayStatus
from gateway.store import event_history, outbox, residents, tenants, terminal_records, users
from gateway.store.errors import StoreError

_R = TypeVar("_R")


class GatewayView(Protocol):
    """The running gateway, as the API may look at it: its status, and alerts to acknowledge."""

    def status(self) -> GatewayStatus: ...

    def acknowledge_alert(self, alert_id: str) -> Awaitable[bool]: ...


def doors_out(status: GatewayStatus) -> list[models.DoorOut]:
    """Each door with its state and its readers, as the API shows them."""
    return [
        models.DoorOut(
            name=name,
            units=list(door.units) if door.units is not None else None,
            open=door.open,
            fail_mode=door.fail_mode,
            alarms=list(door.alarms),
            readers=[
                models.ReaderOut(name=reader_name, online=reader.online, error=reader.error)
                for reader_name, reader in status.readers.items()
                if reader.door == name
            ],
        )
        for name, door in status.doors.items()
    ]


def door_visible(principal: Principal, door: models.DoorOut) -> bool:
    """Admins see every door; a landlord the shared doors and those serving their units."""
    if principal.role is Role.ADMIN:
        return True
    if principal.role is Role.LANDLORD:
        return door.units is None or bool(principal.units & set(door.units))
    return False


class Monitor:
    def __init__(self, store: StoreAccess, view: GatewayView) -> None:
        self._store = store
        self._view = view

    def doors(self, principal: Principal) -> models.DoorsOut:
        status = self._view.status()
        return models.DoorsOut(
            doors=[door for door in doors_out(status) if door_visible(principal, door)],
            online=status.running,
        )

    def door_names(self, principal: Principal) -> frozenset[str]:
        return frozenset(door.name for door in self.doors(principal).doors)

    def capture_doors(self, principal: Principal) -> frozenset[str]:
        """Doors where `principal` may arm enrol by tap: an admin any door, a landlord only a
        door every unit of which is theirs. A shared door (all units, or also someone
        else's) is an admin's: a capture there would take the next tap of anyone's tenant."""
        if principal.role is Role.ADMIN:
            return self.door_names(principal)
        return frozenset(
            door.name
            for door in self.doors(principal).doors
            if door.units is not None and set(door.units) <= principal.units
        )

    def scope_in(
        self, conn: sqlite3.Connection, principal: Principal
    ) -> event_history.EventScope | None:
        """What of people's lives `principal` sees (None: everything, for an admin)."""
        if principal.role is Role.ADMIN:
            return None
        if principal.role is not Role.LANDLORD:
            return event_history.EventScope(frozenset(), frozenset())
        windows = tenants.tenancy_windows(conn, principal.units)
        return event_history.EventScope(
            frozenset(windows), self.door_names(principal), units=principal.units, windows=windows
        )

    async def sync(self) -> models.SyncOut:
        link = self._view.status().link
        stats = await self._read(lambda conn: outbox.stats(conn, link.delivered_seq))
        return models.SyncOut(
            connected=link.connected,
            reconnects=link.reconnects,
            last_error=link.last_error,
            last_puback=iso_ms(link.last_puback) if link.last_puback else None,
            head_seq=stats.head_seq,
            delivered_seq=stats.delivered_seq,
            acked_seq=stats.acked_seq,
            outbox_depth=stats.depth,
            oldest_unsent=stats.oldest_unsent_ts.isoformat() if stats.oldest_unsent_ts else None,
        )

    async def alerts(self, principal: Principal) -> models.AlertsOut:
        def read(conn: sqlite3.Connection) -> list[residents.OpenAlert]:
            found = residents.open_alerts(conn)
            if principal.role is Role.LANDLORD:
                scope = self.scope_in(conn, principal)
                found = [alert for alert in found if alert_seen(scope, alert)]
            return found

        found = await self._read(read)
        return models.AlertsOut(
            alerts=[
                models.AlertOut(
                    id=alert.id,
                    rule=alert.rule,
                    person=alert.person_id,
                    id_masked=_text(alert.detail.get("id_masked")),
                    raised_at=alert.raised_at,
                    deadline=alert.deadline,
                    severity=_text(alert.detail.get("severity")),
                    action=_text(alert.detail.get("action")),
                    door=_text(alert.detail.get("door")),
                )
                for alert in reversed(found)
            ]
        )

    async def acknowledge(self, principal: Principal, alert_id: str) -> None:
        """Close an alert the caller may see (raised again if its cause is still there)."""
        visible = {alert.id for alert in (await self.alerts(principal)).alerts}
        if alert_id not in visible or not await self._view.acknowledge_alert(alert_id):
            raise DirectoryError(
                DirectoryProblem.NOT_FOUND, "no such open alert (or not in your units)"
            )

    async def terminal_records(self, terminal: str | None, limit: int) -> models.TerminalRecordsOut:
        rows = await self._read(
            lambda conn: terminal_records.recent_records(conn, terminal=terminal, limit=limit)
        )
        return models.TerminalRecordsOut(
            records=[
                models.TerminalRecordOut.model_validate(row, from_attributes=True) for row in rows
            ]
        )

    async def audit(self, after_id: int, limit: int) -> models.AuditPage:
        entries = await self._read(
            lambda conn: users.audit_entries(conn, after_id=after_id, limit=limit)
        )
        return models.AuditPage(
            entries=[models.AuditOut.model_validate(e, from_attributes=True) for e in entries]
        )

    async def _read(self, query: Callable[[sqlite3.Connection], _R]) -> _R:
        try:
            return await self._store.read(query)
        except StoreError as exc:
            raise DirectoryError(
                DirectoryProblem.STORE_UNAVAILABLE, "the gateway cannot read now"
            ) from exc


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
