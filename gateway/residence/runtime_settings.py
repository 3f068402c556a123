"""Settings the platform may change at run time (`config.set`), kept beside the config file.

Only a short list of keys can be set remotely: nothing that could point the
gateway at another broker, weaken its keys or open doors. The file is replaced
atomically (write, fsync, rename, fsync the directory), so a crash leaves the
old settings or the new ones, never a mix.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path

from gateway.errors import RentgateError
from gateway.store.files import write_private

_DOOR_KEY = re.compile(r"^doors\.([A-Za-z0-9][A-Za-z0-9_.-]{0,47})\.unlock_seconds$")


class SettingError(RentgateError, ValueError):
    """A setting the platform may not change, or a value out of range."""


def validate(settings: Mapping[str, object], doors: Collection[str]) -> dict[str, object]:
    """Check every setting; return them normalised or raise `SettingError` naming each problem."""
    problems: list[str] = []
    clean: dict[str, object] = {}
    for key, value in settings.items():
        door = _DOOR_KEY.match(key)
        if door is not None:
            if door.group(1) not in doors:
                problems.append(f"{key}: no door {door.group(1)!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 600:
                problems.append(f"{key}: whole seconds from 1 to 600")
            else:
                clean[key] = value
        elif key == "residence.local_districts":
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value)
            ):
                problems.append(f"{key}: a non-empty list of district names")
            else:
                clean[key] = list(value)
        else:
            problems.append(f"{key}: not a setting the platform can change")
    if problems:
        raise SettingError("; ".join(problems))
    return clean


class RuntimeSettings:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, object] = {}
        if path.exists():
            document = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(document, dict):
                self.values = document

    def update(self, changes: Mapping[str, object]) -> None:
        """Merge and persist atomically."""
        merged = {**self.values, **changes}
        document = json.dumps(merged, ensure_ascii=False, indent=2, sort_keys=True)
        write_private(self.path, document.encode("utf-8"))  # 0600, fsynced, then renamed
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self.values = merged

    def local_districts(self, default: list[str]) -> list[str]:
        value = self.values.get("residence.local_districts")
        return [str(v) for v in value] if isinstance(value, list) else default

    def unlock_seconds(self, door: str, default: float) -> float:
        value = self.values.get(f"doors.{door}.unlock_seconds")
        return float(value) if isinstance(value, int) else default
