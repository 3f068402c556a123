"""The running gateway's status: one typed snapshot, and the status file that carries it.

`GatewayStatus` is built in one place (`gateway.runtime.status_snapshot`) and
read by everything that shows the gateway's state: `/metrics` and `/readyz`,
the web UI, the MQTT birth's health, the status file and `rentgate status`.
The status file is the JSON form, rewritten atomically every second by the
running gateway, so the CLI can report on a gateway it does not share a
process with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.clock import iso_ms
from gateway.store.files import write_private
from gateway.sync.downlink import DownlinkStats


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """The MQTT session and what the uplink has had acknowledged."""

    connected: bool = False
    reconnects: int = 0
    last_error: str | None = None
    last_puback: datetime | None = None
    envelopes_published: int = 0
    envelopes_acked: int = 0
    events_acked: int = 0
    rejected_pubacks: int = 0
    delivered_seq: int = 0
    """Events PUBACKed so far, including those whose cursor write is still queued."""
    broker: str | None = None
    """The broker URL of the session (while reconnecting: of the last one)."""
    protocol: str | None = None
    """The MQTT version spoken there: "5" or "3.1.1" (on "auto", what the broker took)."""
    failovers: int = 0
    """Moves from one broker URL to the next."""
    acked_seq: int = 0
    """Events the platform acknowledged storing (signed `cmd/ack`): retention's cursor."""
    acks_applied: int = 0
    acks_stale: int = 0
    acks_refused: int = 0
    """Authentic acks refused (beyond the head, store unavailable); forged ones are counted
    with the other command refusals."""
    resends: int = 0
    """Times the uplink went back to `acked_seq` because acks stopped coming."""


@dataclass(frozen=True, slots=True)
class StoreStatus:
    head_seq: int = 0
    commits: int = 0
    pending: int = 0
    last_error: str | None = None
    failing: bool = False


@dataclass(frozen=True, slots=True)
class ReaderStatus:
    door: str
    online: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DoorStatus:
    units: tuple[str, ...] | None
    """The units the door serves; None for a shared door (front door, bike shed)."""
    open: bool
    fail_mode: str
    alarms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ApiStatus:
    url: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LatencyStatus:
    """The decision latency histogram: cumulative (le, count) pairs, as Prometheus wants."""

    buckets: tuple[tuple[str, float], ...] = ()
    sum_s: float = 0.0


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """Everything a person or a scraper may ask of a running gateway, at one moment."""

    gateway: str
    pid: int
    running: bool
    updated: datetime
    started: datetime
    link: LinkStatus = LinkStatus()
    store: StoreStatus = StoreStatus()
    readers: Mapping[str, ReaderStatus] = field(default_factory=dict)
    doors: Mapping[str, DoorStatus] = field(default_factory=dict)
    alarms: Mapping[str, str] = field(default_factory=dict)
    """Gateway alarms in force (storage, clock, recovery) with their detail."""
    api: ApiStatus = ApiStatus()
    osdp_lines: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    commands: DownlinkStats = field(default_factory=DownlinkStats)
    """Messages on the command topics: the downlink's own counts, as it gave them."""
    alerts_raised: int = 0
    alerts_cleared: int = 0
    decisions: Mapping[str, int] = field(default_factory=dict)
    """Access decisions by reason (`granted` is the one that opens)."""
    rejected_inputs: Mapping[str, int] = field(default_factory=dict)
    door_signals: Mapping[str, int] = field(default_factory=dict)
    door_alarms: Mapping[str, int] = field(default_factory=dict)
    """Door alarm changes as `alarm:raised` / `alarm:cleared` counts."""
    latency: LatencyStatus = LatencyStatus()
    credentials: int = 0
    loop_failures: Mapping[str, int] = field(default_factory=dict)
    """Background loops of the door core that failed and were started again, by name."""

    @property
    def readers_online(self) -> int:
        return sum(1 for reader in self.readers.values() if reader.online)

    def to_json(self) -> dict[str, Any]:
        """The status file's form (JSON-ready; times as ISO 8601 with offset)."""
        link = self.link
        return {
            "gateway": self.gateway,
            "pid": self.pid,
            "running": self.running,
            "updated": iso_ms(self.updated),
            "started": iso_ms(self.started),
            "link": {
                "connected": link.connected,
                "reconnects": link.reconnects,
                "last_error": link.last_error,
                "last_puback": iso_ms(link.last_puback) if link.last_puback else None,
                "envelopes_published": link.envelopes_published,
                "envelopes_acked": link.envelopes_acked,
                "events_acked": link.events_acked,
                "rejected_pubacks": link.rejected_pubacks,
                "delivered_seq": link.delivered_seq,
                "broker": link.broker,
                "protocol": link.protocol,
                "failovers": link.failovers,
                "acked_seq": link.acked_seq,
                "acks_applied": link.acks_applied,
                "acks_stale": link.acks_stale,
                "acks_refused": link.acks_refused,
                "resends": link.resends,
            },
            "store": _fields(self.store),
            "readers": {name: _fields(reader) for name, reader in self.readers.items()},
            "doors": {
                name: {
                    "units": list(door.units) if door.units is not None else None,
                    "open": door.open,
                    "fail_mode": door.fail_mode,
                    "alarms": list(door.alarms),
                }
                for name, door in self.doors.items()
            },
            "alarms": dict(self.alarms),
            "api": _fields(self.api),
            "osdp_lines": {path: dict(counts) for path, counts in self.osdp_lines.items()},
            "commands": {**_fields(self.commands), "rejected": dict(self.commands.rejected)},
            "alerts": {"raised": self.alerts_raised, "cleared": self.alerts_cleared},
            "decisions": dict(self.decisions),
            "rejected_inputs": dict(self.rejected_inputs),
            "door_signals": dict(self.door_signals),
            "door_alarms": dict(self.door_alarms),
            "latency": {
                "buckets": [list(b) for b in self.latency.buckets],
                "sum_s": self.latency.sum_s,
            },
            "credentials": self.credentials,
            "loop_failures": dict(self.loop_failures),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GatewayStatus:
        """Read `to_json`'s form back; `ValueError` (or `KeyError`/`TypeError`) if it is not one."""
        link, alerts, latency = data["link"], data.get("alerts", {}), data.get("latency", {})
        return cls(
            gateway=str(data["gateway"]),
            pid=int(data["pid"]),
            running=bool(data["running"]),
            updated=datetime.fromisoformat(data["updated"]),
            started=datetime.fromisoformat(data["started"]),
            link=LinkStatus(
                **{
                    **link,
                    "last_puback": datetime.fromisoformat(link["last_puback"])
                    if link.get("last_puback")
                    else None,
                }
            ),
            store=StoreStatus(**data["store"]),
            readers={name: ReaderStatus(**r) for name, r in data["readers"].items()},
            doors={
                name: DoorStatus(
                    units=tuple(d["units"]) if d.get("units") is not None else None,
                    open=bool(d["open"]),
                    fail_mode=str(d["fail_mode"]),
                    alarms=tuple(d["alarms"]),
                )
                for name, d in data.get("doors", {}).items()
            },
            alarms=dict(data.get("alarms", {})),
            api=ApiStatus(**data.get("api", {})),
            osdp_lines={path: dict(c) for path, c in data.get("osdp_lines", {}).items()},
            commands=DownlinkStats(**data.get("commands", {})),
            alerts_raised=int(alerts.get("raised", 0)),
            alerts_cleared=int(alerts.get("cleared", 0)),
            decisions=dict(data.get("decisions", {})),
            rejected_inputs=dict(data.get("rejected_inputs", {})),
            door_signals=dict(data.get("door_signals", {})),
            door_alarms=dict(data.get("door_alarms", {})),
            latency=LatencyStatus(
                tuple((str(le), float(n)) for le, n in latency.get("buckets", ())),
                float(latency.get("sum_s", 0.0)),
            ),
            credentials=int(data.get("credentials", 0)),
            loop_failures={str(k): int(v) for k, v in data.get("loop_failures", {}).items()},
        )


def _fields(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__slots__}


def write_status_file(path: Path, status: GatewayStatus) -> None:
    """Replace the status file atomically: a reader sees the old status or the new, never half."""
    document = json.dumps(status.to_json(), ensure_ascii=False, indent=2)
    write_private(path, document.encode("utf-8"))  # 0600: the data dir is the gateway's alone


def read_status_file(path: Path) -> GatewayStatus | None:
    """The status file, with `running` true only if its process is still alive."""
    try:
        status = GatewayStatus.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if status.running and not pid_alive(status.pid):
        return replace(status, running=False)
    return status


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
