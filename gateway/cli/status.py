"""`rentgate status`: the store's numbers and the running gateway's status file, for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.cli.exit_codes import EXIT_FAILURE
from gateway.clock import iso_ms
from gateway.config import Config
from gateway.ops.status import GatewayStatus, read_status_file


def add_parsers(commands: Any) -> None:
    status = commands.add_parser("status", help="link, outbox depth, oldest unsent, last PUBACK")
    status.add_argument("--config", type=Path, required=True)
    status.add_argument("--json", action="store_true", help="machine-readable output")


def run_status(config: Config, *, as_json: bool) -> int:
    from gateway.store import outbox, registry
    from gateway.store.db import connect
    from gateway.store.errors import StoreError

    report: dict[str, Any] = {"gateway": config.gateway.id}
    try:
        conn = connect(config.gateway.database, readonly=True)
        try:
            stats = outbox.stats(conn)
            report["outbox"] = {
                "head_seq": stats.head_seq,
                "delivered_seq": stats.delivered_seq,
                "depth": stats.depth,
                "acked_seq": stats.acked_seq,
                "unacked": stats.unacked,
                "oldest_unsent": stats.oldest_unsent_ts.isoformat()
                if stats.oldest_unsent_ts
                else None,
            }
            report["enrolled"] = registry.counts(conn)
        finally:
            conn.close()
    except StoreError as exc:
        report["store_error"] = str(exc)
    live = read_status_file(config.gateway.status_file)
    report["process"] = live.to_json() if live is not None else None
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(_render_status(report, live))
    return 0 if "store_error" not in report else EXIT_FAILURE


def _render_status(report: dict[str, Any], live: GatewayStatus | None) -> str:
    lines = [f"gateway {report['gateway']}"]
    if "store_error" in report:
        lines.append(f"  store: cannot read ({report['store_error']})")
    else:
        box = report["outbox"]
        lines.append(
            f"  outbox: {box['depth']} undelivered (head seq {box['head_seq']}, "
            f"delivered through {box['delivered_seq']})"
        )
        lines.append(f"  oldest unsent: {box['oldest_unsent'] or '-'}")
        lines.append(
            f"  platform: stored through {box['acked_seq']}"
            f" ({box['unacked']} kept until it acknowledges them)"
        )
        enrolled = report["enrolled"]
        lines.append(
            f"  enrolled: {enrolled['people']} people, {enrolled['credentials']} "
            f"credentials, {enrolled['tenancies']} tenancies"
        )
    if live is None or not live.running:
        seen = f" (last seen {iso_ms(live.updated)})" if live else ""
        lines.append("  process: not running" + seen)
        return "\n".join(lines)
    lines.extend(_render_live(live))
    return "\n".join(lines)


def _render_live(live: GatewayStatus) -> list[str]:
    link = live.link
    lines = [f"  process: running (pid {live.pid}, since {iso_ms(live.started)})"]
    lines.append(
        f"  link: {'connected' if link.connected else 'DISCONNECTED'}"
        + (f" to {link.broker} (MQTT {link.protocol})" if link.broker else "")
        + f", {link.reconnects} reconnect(s)"
        + (f", last error: {link.last_error}" if link.last_error else "")
    )
    lines.append(f"  last PUBACK: {iso_ms(link.last_puback) if link.last_puback else '-'}")
    for name, reader in live.readers.items():
        state = "online" if reader.online else f"OFFLINE ({reader.error})"
        lines.append(f"  reader {name}: {state}")
    for name, door in live.doors.items():
        alarms = ", ".join(door.alarms) or "no alarms"
        state = "OPEN" if door.open else "closed"
        lines.append(f"  door {name}: {state}, fail-{door.fail_mode}, {alarms}")
    commands = live.commands
    if commands.received:
        lines.append(
            f"  platform commands: {commands.applied} applied, {commands.duplicates}"
            f" repeated, rejected {dict(commands.rejected) or 'none'}"
        )
    if live.rejected_inputs:
        lines.append(f"  rejected reader input: {dict(live.rejected_inputs)}")
    if live.store.failing:
        lines.append(f"  STORE FAILING: {live.store.last_error}")
    return lines
