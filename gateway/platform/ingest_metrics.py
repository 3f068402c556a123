"""The ingest's own Prometheus metrics, in a registry of its own (`--metrics host:port`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from gateway.platform.intake import Intake
from gateway.platform.pg_store import Stored


class IngestMetrics:
    """Counters of what the ingest took, stored, rejected and sent; fleet gauges are set by
    the fleet summary (fleet.py)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "rentgate_ingest_events",
            "Events taken, by whether they were new or a repeat of a stored one",
            ["result"],
            registry=r,
        )
        self.envelopes = Counter("rentgate_ingest_envelopes", "Envelopes stored", registry=r)
        self.states = Counter("rentgate_ingest_states", "State messages taken", registry=r)
        self.registrations = Counter(
            "rentgate_ingest_registrations", "Registration events taken", registry=r
        )
        self.unopened = Counter(
            "rentgate_ingest_unopened",
            "Registrations whose sealed personal data could not be opened (kept sealed)",
            registry=r,
        )
        self.rejected = Counter(
            "rentgate_ingest_rejected", "Messages refused (kept in table rejected)", registry=r
        )
        self.batches = Counter("rentgate_ingest_batches", "Transactions committed", registry=r)
        self.batch_seconds = Histogram(
            "rentgate_ingest_batch_seconds",
            "From taking a batch to its commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.store_failures = Counter(
            "rentgate_ingest_store_failures",
            "Database errors (the batch is tried again)",
            registry=r,
        )
        self.store_retries = Counter(
            "rentgate_ingest_store_retries", "Deadlocks or serialization retries", registry=r
        )
        self.source_errors = Counter(
            "rentgate_ingest_source_errors", "Broker unreachable when fetching", registry=r
        )
        self.acks = Counter("rentgate_ingest_acks", "Acks made for gateways", registry=r)
        self.replays = Counter(
            "rentgate_ingest_replays", "Replays asked of gateways to repair a gap", registry=r
        )
        self.fleet = Gauge(
            "rentgate_fleet_gateways", "Gateways by presence", ["status"], registry=r
        )
        self.fleet_lag = Gauge(
            "rentgate_fleet_lag_events", "Events gateways hold that are not stored", registry=r
        )
        self.fleet_gaps = Gauge(
            "rentgate_fleet_gateways_with_gap", "Gateways with a gap in what is stored", registry=r
        )
        self.fleet_oldest_unacked = Gauge(
            "rentgate_fleet_oldest_unacked_seconds",
            "Age of the oldest event a gateway holds unacknowledged",
            registry=r,
        )

    def batch_done(self, intake: Intake, stored: Stored, seconds: float) -> None:
        self.events.labels("new").inc(stored.events_new)
        self.events.labels("repeated").inc(stored.events_repeated)
        self.envelopes.inc(intake.envelopes)
        self.states.inc(stored.states)
        self.registrations.inc(stored.registrations)
        self.unopened.inc(intake.unopened)
        self.rejected.inc(stored.rejected)
        self.acks.inc(len(stored.acks))
        self.batches.inc()
        self.batch_seconds.observe(seconds)

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics over HTTP (a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)
