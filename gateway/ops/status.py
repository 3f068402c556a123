"""Whether a gateway process is running, from the status file it keeps (for the CLI)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def live_status(path: Path) -> dict[str, Any] | None:
    """The status file, with `running` true only if its process is alive."""
    try:
        live: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    alive = live.get("running") and pid_alive(int(live.get("pid", 0)))
    live["running"] = bool(alive)
    return live


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
