"""`rentgate platform ingest`: take, store, settle, acknowledge, in that order, forever.

One loop per instance, one thread: take what the broker has (up to a batch), check
it (intake.py), commit it in one transaction (pg_store.py), tell the broker it may
forget those deliveries, then have each touched gateway sent its new `ack`
(paced, from a process of its own: ack_pacing.py, command_process.py).
Nothing is settled or acknowledged before its commit, so whatever stops the ingest
(a crash, SIGKILL, the database going away) leaves the broker and the gateways
holding everything not yet stored. Batches grow by themselves under load: while one
commits, the next one queues up.

Every few seconds an instance also claims the gateways whose gap has stayed open
and asks each for a `replay` from its first missing seq (pg_store.py: one instance
claims each, with backoff per gateway).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import psycopg

from gateway.domain.sealed_box import OpeningKey
from gateway.platform.ack_pacing import AckPacer
from gateway.platform.ingest_metrics import IngestMetrics
from gateway.platform.intake import Intake, Rejection, take
from gateway.platform.pg_store import Stored
from gateway.platform.source import Delivery, Source

log = logging.getLogger(__name__)

DEADLOCK_RETRIES = 5


class Commands(Protocol):
    """Acks and replays to gateways: `GatewayCommands`, or `CommandProcess` beside the loop."""

    def ack(self, gateway_id: str, through_seq: int) -> None: ...

    def replay(self, gateway_id: str, from_seq: int) -> None: ...

    def flush(self) -> None:
        """Send what was asked since the last flush (called once per loop round)."""
        ...

    def close(self) -> None: ...


class BatchStore(Protocol):
    """Where batches are committed: `pg_store.IngestStore` (PostgreSQL), or a platform's own
    database (examples/platform_consumer.py). An error it raises is logged, counted and the
    batch tried again with backoff; the batch is settled only once it commits."""

    def store(self, intake: Intake) -> Stored:
        """Commit the batch; return what to acknowledge to whom."""
        ...

    def due_replays(self, gap_after_s: float) -> list[tuple[str, int]]:
        """Gateways to ask for a replay now, and from which seq."""
        ...

    def rollback(self) -> None: ...

    @property
    def broken(self) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class IngestSettings:
    batch_max: int = 5_000
    """Deliveries per transaction at most (an envelope holds up to the gateway's batch)."""
    fetch_wait_s: float = 0.2
    gap_after_s: float = 30.0
    """A gap with no progress for this long gets a `replay` (then with backoff)."""
    replay_every_s: float = 5.0
    ack_every_s: float = 30.0
    """At most one ack per gateway this often (ack_pacing.py); keep gateways'
    `ack_resend_s` (120 s) a few times longer."""
    retry_max_s: float = 30.0
    """Longest wait between attempts while the database or the broker is away."""


class Ingest:
    """One ingest instance's loop; `run` until `stop` is set."""

    def __init__(
        self,
        source: Source,
        open_store: Callable[[], BatchStore],
        commands: Commands,
        *,
        keys: Sequence[OpeningKey] = (),
        settings: IngestSettings | None = None,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self._source = source
        self._open_store = open_store
        self._store: BatchStore | None = None
        self._commands = commands
        self._keys = list(keys)
        self._settings = settings or IngestSettings()
        self.metrics = metrics or IngestMetrics()
        self._next_replay_check = 0.0
        self._acks = AckPacer(self._settings.ack_every_s)

    def run(self, stop: threading.Event) -> None:
        log.info("ingest running")
        backoff = 0.5
        while not stop.is_set():
            try:
                batch = self._source.fetch(self._settings.batch_max, self._settings.fetch_wait_s)
            except ConnectionError as exc:
                self.metrics.source_errors.inc()
                log.warning("broker: %s; trying again in %.1f s", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self._settings.retry_max_s)
                continue
            backoff = 0.5
            if batch and not self._take(batch, stop):
                break  # stopping before the commit: the broker keeps the batch
            self._send_acks(self._acks.due())
            if time.monotonic() >= self._next_replay_check:
                self._repair_gaps()
        self._send_acks(self._acks.drain())
        log.info("ingest stopped")

    def _take(self, batch: list[Delivery], stop: threading.Event) -> bool:
        started = time.perf_counter()
        results = self._commit(batch, stop)
        if results is None:
            return False
        try:
            self._source.settle(batch)
        except ConnectionError as exc:  # stored already: the broker will deliver a repeat
            self.metrics.source_errors.inc()
            log.warning("broker, settling a stored batch: %s", exc)
        acks: dict[str, int] = {}
        for intake, stored in results:
            for gateway_id, through in stored.acks.items():
                acks[gateway_id] = max(through, acks.get(gateway_id, 0))
            self.metrics.batch_done(intake, stored, time.perf_counter() - started)
            for rejection in intake.rejections:
                log.warning("rejected a message on %s: %s", rejection.topic, rejection.reason)
        self._send_acks(self._acks.stored(acks))
        return True

    def _send_acks(self, acks: dict[str, int]) -> None:
        for gateway_id, through in sorted(acks.items()):
            self._commands.ack(gateway_id, through)
        self._commands.flush()
        self.metrics.acks.inc(len(acks))

    def _commit(
        self, batch: list[Delivery], stop: threading.Event
    ) -> list[tuple[Intake, Stored]] | None:
        """Store the batch, trying again (same batch) until it commits or we are stopping.

        What the database refuses as data (an error of class 22) is found by halving the
        batch and stored as a rejection: one bad message never blocks the stream."""
        backoff = 0.5
        while not stop.is_set():
            try:
                return self._commit_or_split(batch)
            except Exception as exc:
                self.metrics.store_failures.inc()
                log.warning("database: %s; trying again in %.1f s", str(exc).strip(), backoff)
                self._drop_store()
                stop.wait(backoff)
                backoff = min(backoff * 2, self._settings.retry_max_s)
        return None

    def _commit_or_split(self, batch: list[Delivery]) -> list[tuple[Intake, Stored]]:
        intake = take(batch, self._keys)
        for _attempt in range(DEADLOCK_RETRIES):
            try:
                return [(intake, self._store_now().store(intake))]
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                self.metrics.store_retries.inc()
                self._rollback()
            except psycopg.errors.DataError as exc:
                self._rollback()
                if len(batch) > 1:
                    half = len(batch) // 2
                    return self._commit_or_split(batch[:half]) + self._commit_or_split(batch[half:])
                reason = f"refused by the database: {str(exc).strip().splitlines()[0]}"
                refused = Intake(rejections=[Rejection(batch[0].topic, reason, batch[0].payload)])
                return [(refused, self._store_now().store(refused))]
        raise psycopg.errors.DeadlockDetected("deadlocked again and again")

    def _repair_gaps(self) -> None:
        self._next_replay_check = time.monotonic() + self._settings.replay_every_s
        try:
            due = self._store_now().due_replays(self._settings.gap_after_s)
        except psycopg.Error as exc:
            log.warning("database, looking for gaps: %s", str(exc).strip())
            self._drop_store()
            return
        for gateway_id, from_seq in due:
            self._commands.replay(gateway_id, from_seq)
        self._commands.flush()
        self.metrics.replays.inc(len(due))

    def _store_now(self) -> BatchStore:
        if self._store is None or self._store.broken:
            self._drop_store()
            self._store = self._open_store()
        return self._store

    def _rollback(self) -> None:
        try:
            if self._store is not None:
                self._store.rollback()
        except psycopg.Error:
            self._drop_store()

    def _drop_store(self) -> None:
        if self._store is not None:
            with contextlib.suppress(psycopg.Error):
                self._store.close()
            self._store = None

    def close(self) -> None:
        self._drop_store()
        self._source.close()
        self._commands.close()
