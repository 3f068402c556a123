"""The store's single writer: one thread, group commit, nothing accepted is dropped.

Callers on any thread hand over events (`append`) or small write operations
(`submit`) and return at once. The writer thread takes everything queued,
waits up to a short window for more, and commits it all in one transaction
with synchronous=FULL: a burst costs one fsync, not one per event.

An event is *recorded* when its transaction commits; its `on_recorded`
callback then receives its seq. If a commit fails (disk full, I/O error) the
batch stays queued and is retried with backoff; the failure is reported
through `health` so the gateway can raise an alarm while doors keep working.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway.domain.events import OutboxEvent
from gateway.store import outbox
from gateway.store.db import connect
from gateway.store.errors import StoreError, as_store_error, translated

log = logging.getLogger(__name__)

T = TypeVar("T")
Recorded = Callable[[int], None]
"""Called on the writer thread with the seq an event was given."""

_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 5.0


@dataclass
class WriterHealth:
    """What the writer has done, for status and alarms."""

    commits: int = 0
    events_recorded: int = 0
    head_seq: int = 0
    failing_since: float | None = None
    last_error: str | None = None


@dataclass
class _Batch:
    events: list[OutboxEvent] = field(default_factory=list)
    callbacks: list[Recorded | None] = field(default_factory=list)
    ops: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]] = field(default_factory=list)
    opened_at: float = 0.0
    """Monotonic time the oldest item was queued: the commit window counts from here."""

    def __len__(self) -> int:
        return len(self.events) + len(self.ops)

    def split(self, max_events: int) -> _Batch:
        """Take every operation and at most `max_events` events; the rest stay here."""
        taken = _Batch(self.events[:max_events], self.callbacks[:max_events], self.ops)
        del self.events[:max_events]
        del self.callbacks[:max_events]
        self.ops = []
        return taken


class Writer:
    """Owns the store's only write connection in the gateway process."""

    def __init__(
        self,
        path: Path,
        *,
        window_s: float = 0.002,
        max_batch: int = 10_000,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._path = path
        self._window_s = window_s
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._cond = threading.Condition()
        self._recorded_cond = threading.Condition()
        self._appended = 0
        self._queue = _Batch()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._ops_head: int | None = None
        """Head seq after events recorded by operations in the current transaction."""
        self.health = WriterHealth()

    def start(self) -> None:
        conn = connect(self._path)
        self.health.head_seq = outbox.head_seq(conn)
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="store-writer", daemon=True
        )
        self._thread.start()

    def append(self, event: OutboxEvent, on_recorded: Recorded | None = None) -> None:
        """Queue an event for the outbox; never blocks on disk."""
        with self._cond:
            if self._closing:
                raise StoreError("writer is closed")
            if not self._queue:
                self._queue.opened_at = time.monotonic()
            self._appended += 1
            self._queue.events.append(event)
            self._queue.callbacks.append(on_recorded)
            if len(self._queue.events) == 1 or len(self._queue) >= self._max_batch:
                self._cond.notify()

    def submit(self, operation: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Run `operation` inside the next group transaction (in a savepoint of its own).

        Operations do SQL work only: after a rolled-back transaction one may run again.
        """
        future: Future[T] = Future()
        with self._cond:
            if self._closing:
                raise StoreError("writer is closed")
            if not self._queue:
                self._queue.opened_at = time.monotonic()
            self._queue.ops.append((operation, future))
            self._cond.notify()
        return future

    def submit_recording(
        self, operation: Callable[[sqlite3.Connection], tuple[T, Sequence[OutboxEvent]]]
    ) -> Future[T]:
        """Like `submit`, and the events the operation returns are recorded in the same
        savepoint: a state change and the event announcing it commit together or not at all."""

        def run(conn: sqlite3.Connection) -> T:
            value, events = operation(conn)
            if events:
                self._ops_head = outbox.append_rows(conn, list(events))
            return value

        return self.submit(run)

    def pending(self) -> int:
        """Events and operations queued but not yet committed."""
        with self._cond:
            return len(self._queue)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued before this call has committed.

        Raises TimeoutError if that takes longer (a failing disk keeps events queued).
        """
        with self._cond:
            target = self._appended
        self.submit(lambda _conn: None).result(timeout)  # operations queued before this call
        deadline = time.monotonic() + timeout
        with self._recorded_cond:
            while self.health.events_recorded < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{target - self.health.events_recorded} event(s) not recorded"
                    )
                self._recorded_cond.wait(remaining)

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise StoreError("writer did not finish its last commit in time")

    # -- the writer thread -------------------------------------------------

    def _take(self) -> _Batch | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            if self._window_s > 0 and not self._closing:
                deadline = self._queue.opened_at + self._window_s
                while len(self._queue) < self._max_batch and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            return self._queue.split(self._max_batch)

    def _requeue_front(self, batch: _Batch) -> None:
        with self._cond:
            batch.events.extend(self._queue.events)
            batch.callbacks.extend(self._queue.callbacks)
            batch.ops.extend(self._queue.ops)
            self._queue = batch

    def _run(self, conn: sqlite3.Connection) -> None:
        delay = _RETRY_FIRST_S
        try:
            while (batch := self._take()) is not None:
                try:
                    head, events_error = self._commit(conn, batch)
                except StoreError as exc:  # the whole transaction was lost
                    self._commit_ops_alone(conn, batch, exc)
                    head, events_error = None, exc
                if events_error is None:
                    delay = _RETRY_FIRST_S
                    self._after_commit(batch, head)
                    continue
                self._note_failure(events_error)
                self._requeue_front(batch)
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
        finally:
            conn.close()

    def _commit(
        self, conn: sqlite3.Connection, batch: _Batch
    ) -> tuple[int | None, StoreError | None]:
        """One transaction: the operations, each in a savepoint, then the events in one.

        Events that cannot be written (disk full) are rolled back on their own, so
        the operations still commit: one of them may be what frees the space.
        Returns the new head seq (None if no events) and the events' error, if any.
        """
        results: list[tuple[Future[Any], Any, BaseException | None]] = []
        events_error: StoreError | None = None
        self._ops_head = None
        with translated():
            conn.execute("BEGIN IMMEDIATE")
            try:
                for operation, future in batch.ops:
                    results.append(self._run_op(conn, operation, future))
                head = self._ops_head
                if batch.events:
                    conn.execute("SAVEPOINT events")
                    try:
                        head = outbox.append_rows(conn, batch.events)
                    except sqlite3.Error as exc:
                        if not conn.in_transaction:
                            raise  # SQLite rolled everything back itself (full disk, I/O error)
                        conn.execute("ROLLBACK TO events")
                        events_error = as_store_error(exc)
                    conn.execute("RELEASE events")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        for future, value, error in results:
            _answer(future, value, error)
        batch.ops.clear()
        return head, events_error

    def _commit_ops_alone(self, conn: sqlite3.Connection, batch: _Batch, cause: StoreError) -> None:
        """After a lost transaction, give the operations a transaction of their own.

        They may be what frees space (pruning history, raising a limit); operations
        are SQL work only, so running one again after a rollback is safe.
        """
        if not batch.ops:
            return
        ops_only = _Batch(ops=batch.ops)
        batch.ops = []
        if not batch.events:
            self._fail_ops(ops_only, cause)
            return
        try:
            self._commit(conn, ops_only)
        except StoreError as exc:
            self._fail_ops(ops_only, exc)

    @staticmethod
    def _run_op(
        conn: sqlite3.Connection,
        operation: Callable[[sqlite3.Connection], Any],
        future: Future[Any],
    ) -> tuple[Future[Any], Any, BaseException | None]:
        """Run one operation in a savepoint; its own error goes back to its caller only."""
        conn.execute("SAVEPOINT op")
        try:
            value = operation(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            error = as_store_error(exc) if isinstance(exc, sqlite3.Error) else exc
            return future, None, error
        conn.execute("RELEASE op")
        return future, value, None

    def _after_commit(self, batch: _Batch, head: int | None) -> None:
        health = self.health
        health.commits += 1
        if health.failing_since is not None:
            log.warning("store writes recovered after %s", health.last_error)
            health.failing_since = None
        if head is None:
            return
        if batch.events:
            with self._recorded_cond:
                health.events_recorded += len(batch.events)
                self._recorded_cond.notify_all()
        health.head_seq = head
        first = head - len(batch.events) + 1
        for offset, callback in enumerate(batch.callbacks):
            if callback is not None:
                callback(first + offset)
        if self._on_commit is not None:
            self._on_commit(head)

    def _note_failure(self, exc: StoreError) -> None:
        if self.health.failing_since is None:
            self.health.failing_since = time.monotonic()
            log.error("store write failed, keeping the batch and retrying: %s", exc)
        self.health.last_error = str(exc)

    @staticmethod
    def _fail_ops(batch: _Batch, exc: StoreError) -> None:
        """Operations are answered, not retried: their callers decide what to do."""
        for _operation, future in batch.ops:
            _answer(future, None, exc)
        batch.ops.clear()


def _answer(future: Future[Any], value: Any, error: BaseException | None) -> None:
    """Hand an operation's outcome to its caller, unless the caller stopped waiting.

    An asyncio caller whose task is cancelled (a request dropped, a shutdown)
    cancels the future from its own thread at any moment; the operation's work
    is committed (or failed) all the same, and only the answer has nobody to go to.
    """
    with contextlib.suppress(InvalidStateError):
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
