"""Records from handheld terminals: accepted once by record id, announced to the platform.

A batch of records is one store operation: each record id is inserted (ON
CONFLICT DO NOTHING) and only a new one yields a `registration.captured` event,
recorded in the same transaction. A crash can therefore never leave a record
accepted without its event, and a record sent again (the terminal lost the
reply, or was killed before it marked the record sent) is never announced twice.

A registration (R1) is the statement "this person, with this ID number, lives
at this unit since this day": the platform needs the full number and name. They
leave here only sealed to the platform's encryption key (`[platform]
encryption_key`; `gateway.domain.personal`), before the event is appended, so
the outbox, its WAL, backups and the MQTT payload hold ciphertext the gateway
itself cannot open. In clear stay the masked number (for displays and logs)
and the gateway's keyed hash of it, with which the platform can match the
gateway's own `person` ids. Without that key no capture is accepted
(`SealingUnavailable`): the terminal keeps it queued. Logs show masked numbers only.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from gateway.clock import Clock, iso_ms
from gateway.domain.capture import CapturedRecord
from gateway.domain.credentials import CredentialKind
from gateway.domain.events import EventType, OutboxEvent, new_event
from gateway.domain.personal import SEALED_FIELD, seal_fields
from gateway.domain.sealed_box import SealingKey
from gateway.errors import RentgateError
from gateway.store import outbox
from gateway.store import terminal_records as records
from gateway.store.crypto import KeyRing
from gateway.store.db import connect, transaction
from gateway.store.errors import translated
from gateway.store.terminal_records import TokenCheck
from gateway.store.writer import Writer

log = logging.getLogger(__name__)


class SealingUnavailable(RentgateError):
    """No platform encryption key is configured: captures are refused, never sent in clear."""

    def __init__(self) -> None:
        super().__init__(
            "this gateway has no platform encryption key ([platform] encryption_key), so it"
            " cannot seal personal data and accepts no captures; they stay on the terminal"
        )


@dataclass(frozen=True, slots=True)
class Intake:
    """What became of one record: `new` if this delivery was its first.

    `seq` is the outbox seq of the `registration.captured` event announcing the
    record (for a duplicate, the first delivery's event).
    """

    new: bool
    seq: int | None


@dataclass
class IntakeStats:
    stored: int = 0
    duplicates: int = 0
    refused_unsealable: int = 0
    """Records refused because no platform encryption key is configured."""


class RecordIntake:
    """Turns validated terminal records into stored record ids and outbox events."""

    def __init__(
        self,
        *,
        writer: Writer,
        keys: KeyRing,
        clock: Clock,
        gateway_id: str,
        sealing: SealingKey | None,
    ) -> None:
        self._writer = writer
        self._keys = keys
        self._clock = clock
        self._gateway_id = gateway_id
        self._sealing = sealing
        self.stats = IntakeStats()

    async def submit(self, record: CapturedRecord) -> Intake:
        """Store one record (see `submit_many`)."""
        return (await self.submit_many([record]))[0]

    async def submit_many(self, batch: Sequence[CapturedRecord]) -> list[Intake]:
        """Store records in one transaction; their outcomes in the same order.

        A record id seen before (earlier, or earlier in this batch) is a
        duplicate: nothing is written for it. Raises StoreError if the store
        cannot commit, SealingUnavailable without a platform encryption key;
        either way nothing of the batch was kept.
        """
        if not batch:
            return []
        if self._sealing is None:
            self.stats.refused_unsealable += len(batch)
            raise SealingUnavailable
        outcomes = await asyncio.wrap_future(
            self._writer.submit_recording(lambda conn: self._store(conn, batch))
        )
        new = sum(outcome.new for outcome in outcomes)
        self.stats.stored += new
        self.stats.duplicates += len(outcomes) - new
        log.info(
            "terminal %s: %d record(s) stored, %d already known",
            batch[0].terminal,
            new,
            len(outcomes) - new,
        )
        return outcomes

    def _store(
        self, conn: sqlite3.Connection, batch: Sequence[CapturedRecord]
    ) -> tuple[list[Intake], list[OutboxEvent]]:
        # The writer appends the returned events right after this operation, in
        # order and in the same savepoint: the i-th new event gets head + 1 + i.
        head = outbox.head_seq(conn)
        now = self._clock.now()
        outcomes: list[Intake] = []
        events: list[OutboxEvent] = []
        for record in batch:
            seq = head + len(events) + 1
            inserted = records.insert_record(
                conn,
                record_id=record.record_id,
                terminal=record.terminal,
                kind=record.kind.value,
                captured_at=record.captured_at,
                received_at=now,
                seq=seq,
            )
            if not inserted:
                outcomes.append(Intake(False, records.record_seq(conn, record.record_id)))
                continue
            id_hash = self._keys.lookup(CredentialKind.ID_NUMBER.value, record.id_number)
            assert self._sealing is not None  # submit_many refused the batch otherwise
            body = captured_body(
                record,
                id_hash,
                records.person_for(conn, id_hash),
                sealing=self._sealing,
                gateway_id=self._gateway_id,
            )
            events.append(
                new_event(EventType.REGISTRATION_CAPTURED, now, self._clock.monotonic(), body)
            )
            outcomes.append(Intake(True, seq))
        return outcomes, events


def captured_body(
    record: CapturedRecord,
    id_hash: bytes,
    person: str | None,
    *,
    sealing: SealingKey,
    gateway_id: str,
) -> dict[str, Any]:
    """The `registration.captured` event's fields (docs/asyncapi.yaml), personal ones sealed."""
    personal = {
        "id_number": record.id_number,
        "name": record.name,
        "phone": record.phone,
        "workplace": record.workplace,
        "voucher": record.voucher,
    }
    box = seal_fields(
        sealing,
        personal,
        gateway_id=gateway_id,
        event_type=EventType.REGISTRATION_CAPTURED,
        subject=record.record_id,
    )
    return {
        "record": record.record_id,
        "terminal": record.terminal,
        "kind": record.kind.value,
        "captured_at": iso_ms(record.captured_at),
        "id_masked": record.id_masked,
        "id_hash": id_hash.hex(),
        "person": person,
        "building": record.building,
        "unit": record.unit,
        "room": record.room,
        "moved_in_on": _iso_date(record.moved_in_on),
        "moved_out_on": _iso_date(record.moved_out_on),
        SEALED_FIELD: box,
    }


def _iso_date(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


class TerminalRegistry:
    """Per-terminal tokens: issued and revoked through the writer, verified on a reader.

    Verifying runs on a read-only connection of its own (in a worker thread), so
    authenticating a request never queues behind the writer's group commit.
    """

    def __init__(self, database: Path, *, writer: Writer, clock: Clock) -> None:
        self._database = database
        self._writer = writer
        self._clock = clock
        self._lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None

    async def verify(self, token: str | None) -> TokenCheck:
        return await asyncio.to_thread(self._verify, token)

    def _verify(self, token: str | None) -> TokenCheck:
        with self._lock, translated():
            if self._reader is None:
                self._reader = connect(self._database, readonly=True)
            return records.verify_token(self._reader, token)

    async def add(self, terminal_id: str) -> str:
        """Issue (or re-issue) a terminal's token; returned once, never stored."""
        return await asyncio.wrap_future(
            self._writer.submit(
                lambda conn: records.add_terminal(conn, terminal_id, self._clock.now())
            )
        )

    async def revoke(self, terminal_id: str) -> bool:
        return await asyncio.wrap_future(
            self._writer.submit(
                lambda conn: records.revoke_terminal(conn, terminal_id, self._clock.now())
            )
        )

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


def issue_token_offline(database: Path, terminal_id: str, clock: Clock) -> str:
    """Issue a token with the gateway stopped (`rentgate terminal add` without a running writer)."""
    conn = connect(database)
    try:
        with transaction(conn):
            return records.add_terminal(conn, terminal_id, clock.now())
    finally:
        conn.close()
