"""Simulated devices shipped with the product: for the demo, tests and installers' dry runs."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

from gateway.devices.protocols import DoorState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LockCommand:
    door: str
    seconds: float
    issued_at: float
    """`time.perf_counter()` when the command was given."""


class SimLock:
    """A lock that remembers what it was told (the last `keep` commands)."""

    def __init__(self, door: str, keep: int = 10_000) -> None:
        self.door = door
        self.commands: deque[LockCommand] = deque(maxlen=keep)

    def unlock(self, seconds: float) -> None:
        self.commands.append(LockCommand(self.door, seconds, time.perf_counter()))
        log.debug("sim lock %s released for %.1f s", self.door, seconds)


class SimDoorSensor:
    """A door contact whose state is set by the simulation."""

    def __init__(self, door: str) -> None:
        self.door = door
        self._state = DoorState.CLOSED

    def state(self) -> DoorState:
        return self._state

    def set(self, state: DoorState) -> None:
        self._state = state
