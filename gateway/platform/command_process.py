"""Acks and replays signed and sent from a process of their own, beside the ingest's loop.

Signing an ack (Ed25519 over canonical JSON) and publishing it with paho costs ~0.5 ms
inside the ingest, where it shares one GIL with the store loop and paho's receiving
thread; a drain after an outage owes an ack to every gateway at once (10^4 of them:
5 s). Here the loop hands each batch's acks over a pipe (one message per batch) and
goes on storing; a child process with its own interpreter, its own core if there is
one, signs and sends them. A child that dies is started again; what it had not sent
is lost, which costs nothing (a gateway without its ack sends again, and is acked).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from gateway.domain.signing import SigningKey
from gateway.platform.gateway_commands import GatewayCommands
from gateway.sync.link import BrokerSettings

log = logging.getLogger(__name__)

ACK, REPLAY = "ack", "replay"
QUEUED_BATCHES = 1_000
"""Batches of commands waiting for the child at most; beyond, new ones are dropped (and
made again later), so a stuck child never stops the store."""


class CommandProcess:
    """`ack` and `replay` as GatewayCommands has them, sent by a child process on `flush`."""

    def __init__(
        self,
        brokers: Sequence[BrokerSettings],
        key_path: Path,
        *,
        setup_logging: Callable[[], object] | None = None,
    ) -> None:
        self._context = multiprocessing.get_context("spawn")  # not fork: paho threads run here
        self._arguments = (list(brokers), str(key_path), setup_logging, os.getpid())
        self._queue: Any = None
        self._process: BaseProcess | None = None
        self._pending: list[tuple[str, str, int]] = []
        self.dropped = 0
        self._start()

    def _start(self) -> None:
        self._queue = self._context.Queue(QUEUED_BATCHES)
        self._process = self._context.Process(
            target=_serve,
            args=(*self._arguments, self._queue),
            name="rentgate-ingest-commands",
            daemon=True,
        )
        self._process.start()

    def ack(self, gateway_id: str, through_seq: int) -> None:
        self._pending.append((ACK, gateway_id, through_seq))

    def replay(self, gateway_id: str, from_seq: int) -> None:
        self._pending.append((REPLAY, gateway_id, from_seq))

    def flush(self) -> None:
        """Hand what this batch made to the child (never blocks)."""
        if not self._pending:
            return
        if self._process is None or not self._process.is_alive():
            log.warning("the command sender had stopped; starting it again")
            self._start()
        batch, self._pending = self._pending, []
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self.dropped += len(batch)

    def close(self) -> None:
        self.flush()
        if self._process is None:
            return
        with contextlib.suppress(queue.Full, ValueError, OSError):
            self._queue.put(None, timeout=1)
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._process = None


def _serve(
    brokers: list[BrokerSettings],
    key_path: str,
    setup_logging: Callable[[], object] | None,
    parent: int,
    commands_in: Any,
) -> None:
    """The child: send what comes until told to stop or the ingest is gone."""
    if setup_logging is not None:
        setup_logging()
    commands = GatewayCommands(brokers, SigningKey.load(Path(key_path)))
    try:
        while os.getppid() == parent:
            try:
                batch = commands_in.get(timeout=1)
            except queue.Empty:
                continue
            if batch is None:
                break
            for kind, gateway_id, seq in batch:
                if kind == ACK:
                    commands.ack(gateway_id, seq)
                else:
                    commands.replay(gateway_id, seq)
    except KeyboardInterrupt:
        pass
    finally:
        commands.close()
