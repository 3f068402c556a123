"""`rentgate platform fleet`: the gateways as the platform sees them, from the ingest's tables.

As the contract says (docs/asyncapi.yaml, the `state` channel): a gateway is `offline`
when its last state said so (a goodbye or its Last Will) or when no state came for
three times its `state_every_s`, and `stale` after twice that: a Will can die with a
broker node, so silence counts too. Seen by the platform's clock (`state_seen_at`),
not the gateway's, which may be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from gateway.platform.pg_store import DEFAULT_STATE_EVERY_S

STATUSES = ("online", "stale", "offline", "unknown")

_STATUS = """
CASE WHEN online IS NULL THEN 'unknown'
     WHEN NOT online THEN 'offline'
     WHEN state_seen_at < clock_timestamp()
          - make_interval(secs => 3 * coalesce(state_every_s, %(every)s)) THEN 'offline'
     WHEN state_seen_at < clock_timestamp()
          - make_interval(secs => 2 * coalesce(state_every_s, %(every)s)) THEN 'stale'
     ELSE 'online' END
"""
_GATEWAYS = (
    """
SELECT gw, """
    + _STATUS
    + """ AS status, stored_seq, max_seq, head_seq,
       greatest(coalesce(head_seq, 0) - stored_seq, 0) AS lag, max_seq > stored_seq AS gap,
       oldest_unacked_s, state_seen_at, last_event_at, replays
FROM gateways
"""
)
_TIMING = {"every": DEFAULT_STATE_EVERY_S}


@dataclass(frozen=True)
class GatewayRow:
    gw: str
    status: str
    stored_seq: int
    max_seq: int
    head_seq: int | None
    lag: int
    gap: bool
    oldest_unacked_s: float | None
    state_seen_at: datetime | None
    last_event_at: datetime | None
    replays: int


@dataclass
class FleetReport:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    lag: int = 0
    """Events gateways have (by their last state) that are not stored yet."""
    with_gap: int = 0
    oldest_unacked_s: float | None = None
    worst: list[GatewayRow] = field(default_factory=list)
    """The gateways furthest behind (a gap first, then by lag)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "gateways": self.counts,
            "lag_events": self.lag,
            "gateways_with_gap": self.with_gap,
            "oldest_unacked_s": self.oldest_unacked_s,
            "worst": [
                {
                    "gw": row.gw,
                    "status": row.status,
                    "stored_seq": row.stored_seq,
                    "max_seq": row.max_seq,
                    "head_seq": row.head_seq,
                    "lag": row.lag,
                    "gap": row.gap,
                    "oldest_unacked_s": row.oldest_unacked_s,
                    "last_event_at": row.last_event_at.isoformat() if row.last_event_at else None,
                    "replays": row.replays,
                }
                for row in self.worst
            ],
        }


def fleet_report(dsn: str, *, worst: int = 10) -> FleetReport:
    """Read the gateways table once (the whole fleet: 10^5 rows is a quick scan)."""
    with psycopg.connect(dsn) as conn:
        rows = [GatewayRow(*row) for row in conn.execute(_GATEWAYS, _TIMING)]
    report = FleetReport()
    for row in rows:
        report.counts[row.status] = report.counts.get(row.status, 0) + 1
        report.lag += row.lag
        report.with_gap += int(row.gap)
        if row.status != "offline" and row.oldest_unacked_s is not None:
            report.oldest_unacked_s = max(report.oldest_unacked_s or 0.0, row.oldest_unacked_s)
    rows.sort(key=lambda row: (not row.gap, -row.lag, row.gw))
    report.worst = [row for row in rows[:worst] if row.gap or row.lag > 0]
    return report


def gateway_status(dsn: str, gateway_id: str) -> GatewayRow | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            _GATEWAYS + " WHERE gw = %(gw)s", {**_TIMING, "gw": gateway_id}
        ).fetchone()
    return GatewayRow(*row) if row else None


def render(report: FleetReport) -> str:
    counts = report.counts
    lines = [
        f"gateways: {counts['online']} online, {counts['stale']} stale,"
        f" {counts['offline']} offline, {counts['unknown']} never seen a state",
        f"lag: {report.lag} events not stored yet; {report.with_gap} gateways with a gap",
        "oldest unacknowledged: "
        + (f"{report.oldest_unacked_s:.0f} s" if report.oldest_unacked_s is not None else "-"),
    ]
    if report.worst:
        lines.append("furthest behind:")
        lines += [
            f"  {row.gw:<24} {row.status:<8} stored {row.stored_seq}"
            f" of {row.head_seq if row.head_seq is not None else '?'}"
            f"{' GAP' if row.gap else ''} (max stored {row.max_seq}, replays {row.replays})"
            for row in report.worst
        ]
    return "\n".join(lines)
