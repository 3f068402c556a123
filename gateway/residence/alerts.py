"""The alert engine: applies the residence rules as people come and go, and once a day.

Each evaluation runs as one store operation that reads the person's facts,
compares the alerts the rules want with those open, and writes the difference
together with its `alert.raised` / `alert.cleared` events: a crash can never
leave an alert recorded without its event, or announced twice.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from typing import Any

from gateway.clock import Clock
from gateway.domain.alerting import (
    DERIVED_RULES,
    AlertRule,
    Severity,
    WantedAlert,
    wanted_alerts,
)
from gateway.domain.events import EventType, OutboxEvent, new_event
from gateway.store import residents
from gateway.store.crypto import KeyRing
from gateway.store.errors import StoreError
from gateway.store.writer import Writer

log = logging.getLogger(__name__)

SWEEP_CHUNK = 500
"""People evaluated per store operation in the daily sweep."""


class AlertEngine:
    def __init__(
        self,
        *,
        writer: Writer,
        keys: KeyRing,
        clock: Clock,
        building: str,
        local_districts: Callable[[], Sequence[str]],
        check_at: time = time(6, 0),
        poll_s: float = 30.0,
    ) -> None:
        self._writer = writer
        self._keys = keys
        self._clock = clock
        self._building = building
        self._districts = local_districts
        self._check_at = check_at
        self._poll_s = poll_s
        self._seen_today: set[str] = set()
        self._seen_day: date | None = None
        self._last_sweep: date | None = None
        self.raised = 0
        self.cleared = 0

    def today(self) -> date:
        return self._clock.now().date()

    # -- triggers ------------------------------------------------------------

    def person_seen(self, person_id: str, household_address: str | None = None) -> None:
        """A person was let in (or captured) here; the first time each day is recorded."""
        today = self.today()
        if self._seen_day != today:
            self._seen_day, self._seen_today = today, set()
        if person_id in self._seen_today and household_address is None:
            return
        self._seen_today.add(person_id)

        def seen(conn: sqlite3.Connection) -> tuple[None, list[OutboxEvent]]:
            now = self._clock.now()
            if household_address is not None:
                residents.set_household_address(conn, self._keys, person_id, household_address, now)
            residents.note_presence(conn, person_id, today, now)
            return None, self._evaluate(conn, person_id, now)

        self._writer.submit_recording(seen).add_done_callback(_log_failure)

    def cancelled_credential_used(self, person_id: str, door: str, status: str) -> None:
        """A lost/cancelled/revoked credential was presented: alert until acknowledged."""

        def raise_it(conn: sqlite3.Connection) -> tuple[None, list[OutboxEvent]]:
            wanted = WantedAlert(
                AlertRule.CANCELLED_CREDENTIAL_USED,
                Severity.ALARM,
                None,
                f"A {status} key was presented at door {door}: check who has it.",
            )
            return None, self._raise(conn, person_id, wanted, self._clock.now(), door=door)

        self._writer.submit_recording(raise_it).add_done_callback(_log_failure)

    async def evaluate(self, person_id: str) -> None:
        """Re-evaluate one person now (after the platform changed their status)."""

        def run(conn: sqlite3.Connection) -> tuple[None, list[OutboxEvent]]:
            return None, self._evaluate(conn, person_id, self._clock.now())

        await asyncio.wrap_future(self._writer.submit_recording(run))

    async def sweep(self) -> int:
        """Evaluate everyone with a status or presence on record; return how many."""
        people = await asyncio.wrap_future(
            self._writer.submit(
                lambda conn: [row[0] for row in conn.execute("SELECT person_id FROM person_status")]
            )
        )
        for start in range(0, len(people), SWEEP_CHUNK):
            chunk = people[start : start + SWEEP_CHUNK]

            def run(
                conn: sqlite3.Connection, chunk: list[str] = chunk
            ) -> tuple[None, list[OutboxEvent]]:
                now = self._clock.now()
                events: list[OutboxEvent] = []
                for person_id in chunk:
                    events += self._evaluate(conn, person_id, now)
                return None, events

            await asyncio.wrap_future(self._writer.submit_recording(run))
        self._last_sweep = self.today()
        return len(people)

    async def run(self) -> None:
        """Sweep at start and then daily after `check_at`, until cancelled."""
        while True:
            now = self._clock.now()
            if self._last_sweep != now.date() and (
                self._last_sweep is None or now.time() >= self._check_at
            ):
                try:
                    count = await self.sweep()
                    log.info("daily residence check: %d people evaluated", count)
                except StoreError as exc:
                    log.error("daily residence check failed, retrying: %s", exc)
            await asyncio.sleep(self._poll_s)

    # -- in the writer's transaction -----------------------------------------

    def _evaluate(
        self, conn: sqlite3.Connection, person_id: str, now: datetime
    ) -> list[OutboxEvent]:
        found = list(residents.facts(conn, self._keys, person_id))
        if not found:
            return []
        row = found[0]
        facts = row.rule_facts()
        wanted = {
            alert.rule: alert
            for alert in wanted_alerts(
                facts,
                building=self._building,
                local_districts=self._districts(),
                today=now.date(),
            )
        }
        events: list[OutboxEvent] = []
        for alert in residents.open_alerts(conn, person_id):
            if alert.rule in DERIVED_RULES and alert.rule not in wanted:
                events += self._clear(conn, alert, now, "resolved")
            wanted.pop(AlertRule(alert.rule), None)
        for alert_wanted in wanted.values():
            events += self._raise(conn, person_id, alert_wanted, now, id_masked=row.id_masked)
        return events

    def _raise(
        self,
        conn: sqlite3.Connection,
        person_id: str,
        wanted: WantedAlert,
        now: datetime,
        *,
        id_masked: str | None = None,
        door: str | None = None,
    ) -> list[OutboxEvent]:
        detail: dict[str, Any] = {
            "severity": wanted.severity.value,
            "action": wanted.action,
            "building": self._building,
        }
        if id_masked is None:
            masked_row = conn.execute(
                "SELECT id_masked FROM people WHERE id = ?", (person_id,)
            ).fetchone()
            id_masked = masked_row[0] if masked_row else None
        detail["id_masked"] = id_masked
        if door is not None:
            detail["door"] = door
        alert_id = residents.raise_alert(
            conn,
            rule=wanted.rule.value,
            person_id=person_id,
            deadline=wanted.deadline,
            detail=detail,
            now=now,
        )
        if alert_id is None:
            return []
        self.raised += 1
        body = {
            "alert": alert_id,
            "rule": wanted.rule.value,
            "person": person_id,
            "deadline": wanted.deadline.isoformat() if wanted.deadline else None,
            **detail,
        }
        return [new_event(EventType.ALERT_RAISED, now, self._clock.monotonic(), body)]

    def _clear(
        self, conn: sqlite3.Connection, alert: residents.OpenAlert, now: datetime, why: str
    ) -> list[OutboxEvent]:
        if not residents.clear_alert(conn, alert.id, now):
            return []
        self.cleared += 1
        body = {"alert": alert.id, "rule": alert.rule, "person": alert.person_id, "reason": why}
        return [new_event(EventType.ALERT_CLEARED, now, self._clock.monotonic(), body)]

    def acknowledge(self, alert_id: str) -> asyncio.Future[bool]:
        """Close an alert by hand (after a landlord dealt with it)."""

        def run(conn: sqlite3.Connection) -> tuple[bool, list[OutboxEvent]]:
            now = self._clock.now()
            for alert in residents.open_alerts(conn):
                if alert.id == alert_id:
                    return True, self._clear(conn, alert, now, "acknowledged")
            return False, []

        return asyncio.wrap_future(self._writer.submit_recording(run))


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("alert evaluation failed: %s", future.exception())
