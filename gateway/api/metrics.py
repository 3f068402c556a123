"""Prometheus `/metrics`, `/healthz` and `/readyz` for a running gateway.

Nothing is counted twice: a scrape reads one `GatewayStatus` snapshot of the
counters the gateway already keeps, taken on the event loop where they change,
so one scrape is consistent. The only disk work, the outbox head/cursor read and the free space
of the data dir, runs in threads with a deadline: a scrape never blocks a door.

The endpoints need no authentication: they give counts, never personal data,
and are meant for the building's own network (the API is HTTPS as always).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from starlette.datastructures import State

from gateway import __version__
from gateway.api.terminal_api import TerminalApiStats
from gateway.doors.access import DecisionReason
from gateway.ops.readings import (
    Monitored,
    ReadWarnings,
    StorageReading,
    read_storage,
)
from gateway.ops.status import GatewayStatus

log = logging.getLogger(__name__)

K = TypeVar("K", bound=str)


class NotReady(StrEnum):
    """Why `/readyz` says 503: the gateway cannot both decide doors and record events."""

    DOORS_OFFLINE = "doors_offline"
    """The door core is starting, restarting or stopped: the web cannot reach it."""
    STORE_FAILING = "store_failing"


Samples = dict[tuple[str, ...], float]

FAMILIES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    # name, type, help, labels: every family a scrape can show, once.
    ("rentgate_info", "gauge", "The gateway and its software.", ("gateway", "version")),
    ("rentgate_decisions", "counter", "Access decisions.", ("result", "reason")),
    (
        "rentgate_rejected_inputs",
        "counter",
        "Reader inputs that were not credentials.",
        ("reason",),
    ),
    ("rentgate_door_signals", "counter", "Door contact and exit button signals.", ("signal",)),
    ("rentgate_door_alarms", "counter", "Door alarms raised and cleared.", ("alarm", "state")),
    ("rentgate_door_open", "gauge", "Door open (1) or shut.", ("door",)),
    ("rentgate_door_alarm_active", "gauge", "Door alarms in force.", ("door", "alarm")),
    ("rentgate_reader_online", "gauge", "Reader connected and working (1) or not.", ("reader",)),
    ("rentgate_credentials", "gauge", "Credentials in the access index.", ()),
    ("rentgate_outbox_readable", "gauge", "This scrape read the outbox (0: no outbox_*).", ()),
    ("rentgate_outbox_depth", "gauge", "Recorded events not yet PUBACKed.", ()),
    ("rentgate_outbox_oldest_unsent_age_seconds", "gauge", "Age of the oldest (0: none).", ()),
    ("rentgate_outbox_head_seq", "gauge", "Seq of the newest recorded event.", ()),
    ("rentgate_outbox_acked_seq", "gauge", "Seq the platform acknowledged storing through.", ()),
    ("rentgate_outbox_unacked", "gauge", "Recorded events the platform has not acknowledged.", ()),
    (
        "rentgate_outbox_oldest_unacked_age_seconds",
        "gauge",
        "Age of the oldest event the platform has not acknowledged (0: none).",
        (),
    ),
    ("rentgate_platform_acks", "counter", "Platform acks by what they did.", ("outcome",)),
    ("rentgate_uplink_resends", "counter", "Times unacknowledged events were sent again.", ()),
    ("rentgate_disk_free_bytes", "gauge", "Free space on the data dir's filesystem.", ()),
    ("rentgate_disk_size_bytes", "gauge", "Size of the data dir's filesystem.", ()),
    ("rentgate_store_failing", "gauge", "Store writes failing (1) or not.", ()),
    ("rentgate_store_pending", "gauge", "Events and writes queued for commit.", ()),
    ("rentgate_store_commits", "counter", "Store transactions committed.", ()),
    ("rentgate_mqtt_connected", "gauge", "MQTT session up (1) or not.", ()),
    ("rentgate_mqtt_reconnects", "counter", "MQTT sessions that ended.", ()),
    (
        "rentgate_mqtt_broker",
        "gauge",
        "The broker URL and MQTT version of the session (1; the last one while reconnecting).",
        ("url", "protocol"),
    ),
    ("rentgate_mqtt_failovers", "counter", "Moves from one broker URL to the next.", ()),
    ("rentgate_mqtt_publishes", "counter", "Event envelopes published.", ()),
    ("rentgate_mqtt_pubacks", "counter", "Event envelopes PUBACKed.", ()),
    ("rentgate_mqtt_events_acked", "counter", "Events PUBACKed.", ()),
    ("rentgate_mqtt_pubacks_rejected", "counter", "PUBACKs with a failure code.", ()),
    ("rentgate_mqtt_last_puback_timestamp_seconds", "gauge", "Last PUBACK (Unix time).", ()),
    ("rentgate_commands", "counter", "Platform commands by what became of them.", ("outcome",)),
    ("rentgate_commands_rejected", "counter", "Platform commands refused.", ("reason",)),
    (
        "rentgate_command_replies_suppressed",
        "counter",
        "Refusals of unauthenticated commands left unanswered (over the reply rate).",
        (),
    ),
    ("rentgate_alerts_raised", "counter", "Residence alerts raised.", ()),
    ("rentgate_alerts_cleared", "counter", "Residence alerts cleared.", ()),
    ("rentgate_gateway_alarm_active", "gauge", "Gateway alarms in force.", ("alarm",)),
    ("rentgate_api_unauthorized", "counter", "Terminal requests refused.", ("reason",)),
    ("rentgate_api_batches_refused", "counter", "Terminal batches refused.", ("reason",)),
    ("rentgate_api_records", "counter", "Terminal records by outcome.", ("outcome",)),
    ("rentgate_api_records_rejected", "counter", "Terminal records rejected.", ("reason",)),
    ("rentgate_api_refused", "counter", "Web and REST requests refused.", ("reason",)),
)


class GatewayCollector:
    """A prometheus_client collector over one status snapshot and one scrape's disk reads."""

    def __init__(
        self, status: GatewayStatus, storage: StorageReading, api_state: State | None = None
    ) -> None:
        self._status = status
        self._storage = storage
        self._api_state = api_state

    def collect(self) -> Iterator[Metric]:
        values = _samples(self._status, self._storage)
        if self._api_state is not None:
            values.update(_api_samples(self._api_state))
        for name, kind, documentation, labels in FAMILIES:
            samples = values.get(name)
            if samples is None:
                continue
            family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_type(name, documentation, labels=labels)
            for label_values, value in sorted(samples.items()):
                family.add_metric(label_values, value)
            yield family
        latency = self._status.latency
        yield HistogramMetricFamily(
            "rentgate_decision_latency_seconds",
            "Credential read by the gateway to decision done (lock commanded, event queued).",
            buckets=list(latency.buckets),
            sum_value=latency.sum_s,
        )


def _samples(status: GatewayStatus, storage: StorageReading) -> dict[str, Samples]:
    """Every family's samples by name; a family left out has nothing to show this time."""
    link, store, commands = status.link, status.store, status.commands
    values: dict[str, Samples] = {
        "rentgate_info": {(status.gateway, __version__): 1},
        "rentgate_decisions": {
            ("allow" if _allowed(reason) else "deny", reason): n
            for reason, n in status.decisions.items()
        },
        "rentgate_rejected_inputs": _by(status.rejected_inputs),
        "rentgate_door_signals": _by(status.door_signals),
        "rentgate_door_alarms": {
            tuple(key.partition(":")[::2]): n for key, n in status.door_alarms.items()
        },
        "rentgate_door_open": {(door,): int(s.open) for door, s in status.doors.items()},
        "rentgate_door_alarm_active": {
            (door, alarm): 1 for door, s in status.doors.items() for alarm in s.alarms
        },
        "rentgate_reader_online": {
            (reader,): int(s.online) for reader, s in status.readers.items()
        },
        "rentgate_credentials": {(): status.credentials},
        "rentgate_outbox_readable": {(): int(storage.outbox is not None)},
        "rentgate_store_failing": {(): int(store.failing)},
        "rentgate_store_pending": {(): store.pending},
        "rentgate_store_commits": {(): store.commits},
        "rentgate_mqtt_connected": {(): int(link.connected)},
        "rentgate_mqtt_reconnects": {(): link.reconnects},
        "rentgate_mqtt_failovers": {(): link.failovers},
        "rentgate_mqtt_publishes": {(): link.envelopes_published},
        "rentgate_mqtt_pubacks": {(): link.envelopes_acked},
        "rentgate_mqtt_events_acked": {(): link.events_acked},
        "rentgate_mqtt_pubacks_rejected": {(): link.rejected_pubacks},
        "rentgate_platform_acks": {
            ("applied",): link.acks_applied,
            ("stale",): link.acks_stale,
            ("refused",): link.acks_refused,
        },
        "rentgate_uplink_resends": {(): link.resends},
        "rentgate_commands": {
            ("received",): commands.received,
            ("accepted",): commands.accepted,
            ("applied",): commands.applied,
            ("duplicates",): commands.duplicates,
            ("rate_limited",): commands.rate_limited,
            ("dropped",): commands.dropped,
        },
        "rentgate_command_replies_suppressed": {(): commands.replies_suppressed},
        "rentgate_commands_rejected": _by(commands.rejected),
        "rentgate_alerts_raised": {(): status.alerts_raised},
        "rentgate_alerts_cleared": {(): status.alerts_cleared},
        "rentgate_gateway_alarm_active": {(alarm,): 1 for alarm in status.alarms},
    }
    if link.broker is not None:
        values["rentgate_mqtt_broker"] = {(link.broker, link.protocol or ""): 1}
    if link.last_puback is not None:
        values["rentgate_mqtt_last_puback_timestamp_seconds"] = {(): link.last_puback.timestamp()}
    if (outbox := storage.outbox) is not None:
        oldest = outbox.oldest_unsent_ts
        age = (status.updated - oldest).total_seconds() if oldest is not None else 0.0
        values["rentgate_outbox_depth"] = {(): outbox.depth}
        values["rentgate_outbox_oldest_unsent_age_seconds"] = {(): max(0.0, age)}
        values["rentgate_outbox_head_seq"] = {(): outbox.head_seq}
        values["rentgate_outbox_acked_seq"] = {(): outbox.acked_seq}
        values["rentgate_outbox_unacked"] = {(): outbox.unacked}
        unacked = outbox.oldest_unacked_ts
        unacked_age = (status.updated - unacked).total_seconds() if unacked is not None else 0.0
        values["rentgate_outbox_oldest_unacked_age_seconds"] = {(): max(0.0, unacked_age)}
    if storage.disk_free_bytes is not None and storage.disk_total_bytes is not None:
        values["rentgate_disk_free_bytes"] = {(): storage.disk_free_bytes}
        values["rentgate_disk_size_bytes"] = {(): storage.disk_total_bytes}
    return values


def _api_samples(state: State) -> dict[str, Samples]:
    """What the API itself counted: terminal requests and refused web requests."""
    values: dict[str, Samples] = {}
    terminals = getattr(state, "terminal_stats", None)
    if isinstance(terminals, TerminalApiStats):
        values["rentgate_api_unauthorized"] = _by(terminals.unauthorized)
        values["rentgate_api_batches_refused"] = _by(terminals.batches_refused)
        values["rentgate_api_records"] = _by(terminals.records)
        values["rentgate_api_records_rejected"] = _by(terminals.records_rejected)
    refused = getattr(state, "refused", None)
    if isinstance(refused, Counter):
        values["rentgate_api_refused"] = _by(refused)
    return values


def render(status: GatewayStatus, storage: StorageReading, api_state: State | None = None) -> bytes:
    """The Prometheus text exposition of the gateway and its process (memory, CPU, fds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(status, storage, api_state))
    ProcessCollector(registry=registry)
    return generate_latest(registry)


def metrics_router(gateway: Monitored) -> APIRouter:
    """`/metrics`, `/healthz` and `/readyz`, kept out of the API's OpenAPI document."""
    router = APIRouter(include_in_schema=False)
    warnings = ReadWarnings()

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        status = (
            await gateway.fresh_status()
        )  # one snapshot per scrape, taken before the disk reads
        storage = await read_storage(gateway, status.link.delivered_seq, warnings)
        body = render(status, storage, request.app.state)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        """Alive: the web process answers (the doors have a process of their own; see /readyz)."""
        return JSONResponse({"status": "ok"})

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready: doors can be decided and events recorded. MQTT down is not unready
        (events wait in the outbox), but it is shown."""
        status = await gateway.fresh_status()
        problems: list[NotReady] = []
        if not status.running:
            problems.append(NotReady.DOORS_OFFLINE)
        if status.store.failing:
            problems.append(NotReady.STORE_FAILING)
        body = {
            "ready": not problems,
            "problems": [problem.value for problem in problems],
            "store": {"failing": status.store.failing, "last_error": status.store.last_error},
            "credentials": status.credentials,
            "mqtt": {
                "connected": status.link.connected,
                "broker": status.link.broker,
                "last_error": status.link.last_error,
            },
        }
        return JSONResponse(body, status_code=503 if problems else 200)

    return router


def _allowed(reason: str) -> bool:
    return reason == DecisionReason.GRANTED.value


def _by(counts: Mapping[K, int]) -> Samples:
    """One sample per key of a Counter (its one label's values are enum values)."""
    return {(str(key),): count for key, count in counts.items()}
