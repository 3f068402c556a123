"""The running gateway's status, as `rentgate status` and the status file show it."""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.clock import iso_ms
from gateway.devices.osdp.reader import OsdpReader

if TYPE_CHECKING:
    from gateway.runtime.gateway import Gateway


def gateway_status(gateway: Gateway, *, running: bool) -> dict[str, Any]:
    """Link, store, readers, doors, commands and alerts of a running gateway."""
    uplink = gateway.uplink
    link = uplink.link if uplink else None
    stats = uplink.stats if uplink else None
    return {
        "gateway": gateway.config.gateway.id,
        "pid": os.getpid(),
        "running": running,
        "updated": iso_ms(gateway.clock.now()),
        "started": iso_ms(gateway.started_at),
        "link": {
            "connected": bool(link and link.connected),
            "reconnects": link.reconnects if link else 0,
            "last_error": link.last_error if link else None,
            "last_puback": _iso_or_none(stats.last_puback if stats else None),
            "envelopes_acked": stats.envelopes_acked if stats else 0,
            "events_acked": stats.events_acked if stats else 0,
        },
        "store": {
            "head_seq": gateway.writer.health.head_seq,
            "commits": gateway.writer.health.commits,
            "pending": gateway.writer.pending(),
            "last_error": gateway.writer.health.last_error,
            "failing": gateway.writer.health.failing_since is not None,
        },
        "readers": {name: _reader(gateway, name) for name in gateway.reader_health},
        "alarms": dict(gateway.housekeeper.alarms),
        "api": {"url": gateway.api_server.url, "error": gateway.api_server.error},
        "osdp_lines": {str(line.path): dict(line.counters) for line in gateway.osdp_lines},
        "commands": {
            "received": gateway.downlink.stats.received,
            "applied": gateway.downlink.stats.applied,
            "duplicates": gateway.downlink.stats.duplicates,
            "dropped": gateway.downlink.stats.dropped,
            "rejected": dict(gateway.downlink.stats.rejected or {}),
        },
        "alerts": {
            "raised": gateway.alerts.raised,
            "cleared": gateway.alerts.cleared,
        },
        "doors": {
            name: {
                "open": supervisor.open_since is not None,
                "fail_mode": supervisor.fail_mode.value,
                "alarms": sorted(alarm.value for alarm in supervisor.active),
            }
            for name, supervisor in gateway.doors.supervisors.items()
        },
        "decisions": dict(gateway.doors.counters.decisions),
        "rejected_inputs": dict(gateway.doors.counters.rejected),
        "credentials": len(gateway.doors.index),
    }


def _reader(gateway: Gateway, name: str) -> dict[str, Any]:
    reader = gateway.readers[name]
    if isinstance(reader, OsdpReader):
        return {"online": reader.online, "error": None if reader.online else reader.detail}
    health = gateway.reader_health[name]
    return {"online": health.online, "error": health.error}


def _iso_or_none(moment: datetime | None) -> str | None:
    return iso_ms(moment) if moment is not None else None
