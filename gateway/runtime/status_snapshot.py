"""The one place a `GatewayStatus` is built: read from the running parts, on the event loop."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime

from gateway.ops.status import (
    ApiStatus,
    DoorStatus,
    GatewayStatus,
    LatencyStatus,
    LinkStatus,
    ReaderStatus,
    StoreStatus,
)
from gateway.runtime.parts import GatewayParts


def snapshot(
    parts: GatewayParts,
    api: ApiStatus,
    *,
    running: bool,
    started: datetime,
    loop_failures: Mapping[str, int],
) -> GatewayStatus:
    """Link, store, readers, doors, commands and alerts as they are now."""
    doors, downlink = parts.doors, parts.downlink.stats()
    counters = doors.counters
    return GatewayStatus(
        gateway=parts.config.gateway.id,
        pid=os.getpid(),
        running=running,
        updated=parts.clock.now(),
        started=started,
        link=_link(parts),
        store=_store(parts),
        readers=_readers(parts),
        doors=_doors(parts),
        alarms=dict(parts.housekeeper.alarms),
        api=api,
        loop_failures=dict(loop_failures),
        osdp_lines={str(line.path): dict(line.counters) for line in parts.devices.osdp_lines},
        commands=downlink,
        alerts_raised=parts.alerts.raised,
        alerts_cleared=parts.alerts.cleared,
        decisions=dict(counters.decisions),
        rejected_inputs=dict(counters.rejected),
        door_signals=dict(counters.signals),
        door_alarms=dict(counters.alarms),
        latency=LatencyStatus(tuple(counters.latency.cumulative()), counters.latency.sum_s),
        credentials=len(doors.index),
    )


def _readers(parts: GatewayParts) -> dict[str, ReaderStatus]:
    found = {}
    for name, reader in parts.devices.readers.items():
        health = parts.doors.reader_health.get(name)
        found[name] = ReaderStatus(reader.door, health.online, health.error)
    return found


def _link(parts: GatewayParts) -> LinkStatus:
    uplink = parts.uplink
    link, stats, acks = uplink.link, uplink.stats, uplink.acks.stats
    return LinkStatus(
        connected=bool(link and link.connected),
        reconnects=link.reconnects if link else 0,
        last_error=link.last_error if link else None,
        last_puback=stats.last_puback,
        envelopes_published=stats.envelopes_published,
        envelopes_acked=stats.envelopes_acked,
        events_acked=stats.events_acked,
        rejected_pubacks=stats.rejected_pubacks,
        delivered_seq=stats.delivered_seq,
        broker=link.broker_url if link else None,
        protocol=link.protocol if link else None,
        failovers=link.failovers if link else 0,
        acked_seq=acks.acked_seq,
        acks_applied=acks.applied,
        acks_stale=acks.stale,
        acks_refused=sum(acks.refused.values()),
        resends=acks.resends,
    )


def _store(parts: GatewayParts) -> StoreStatus:
    health = parts.writer.health
    return StoreStatus(
        head_seq=health.head_seq,
        commits=health.commits,
        pending=parts.writer.pending(),
        last_error=health.last_error,
        failing=health.failing_since is not None,
    )


def _doors(parts: GatewayParts) -> dict[str, DoorStatus]:
    found = {}
    for door in parts.config.all_doors():
        supervisor = parts.doors.supervisors.get(door.name)
        found[door.name] = DoorStatus(
            units=tuple(sorted(door.units)) if door.units else None,
            open=bool(supervisor and supervisor.open_since is not None),
            fail_mode=supervisor.fail_mode.value if supervisor else door.fail_mode,
            alarms=tuple(sorted(a.value for a in supervisor.active)) if supervisor else (),
        )
    return found
