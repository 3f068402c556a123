"""/metrics, /healthz and /readyz of a real gateway over its own HTTPS, parsed by
Prometheus's own text parser: the numbers are what happened at the door and on the link."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.doors.latency import LATENCY_BUCKETS_MS, DecisionLatency
from gateway.runtime.parts import open_store
from gateway.runtime.web_process import WebGateway
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    enrol_cards,
    load,
    stats_of,
    wait_until,
    write_config,
    write_taps,
)

KNOWN = ["0A000001", "0A000002"]
UNKNOWN = "0B00000F"
FRONT = "front-line-0"
MISSING = "front-line-1"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _config(tmp_path: Path, broker_url: str) -> Path:
    """One FIFO reader at the front door, and one whose device is missing (offline)."""
    missing = f'\n[[devices]]\nkind = "line"\ndoor = "front"\npath = "{tmp_path / "gone"}"\n'
    return write_config(tmp_path, broker_url, gateway_id="GW-METRICS", extra=missing)


@contextmanager
def _serving(config_path: Path) -> Iterator[tuple[InProcessGateway, httpx.Client]]:
    running = InProcessGateway(load(config_path))
    with running, running.api_client() as client:
        yield running, client


def _scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(key)[label]: value for (metric, key), value in samples.items() if metric == name}


def _until(
    client: httpx.Client, what: str, check: Callable[[Samples], bool], timeout: float = 20
) -> Samples:
    """Scrape until `check(samples)` holds (bounded); the last scrape is returned."""
    last: list[Samples] = [{}]

    def holds() -> bool:
        last[0] = _scrape(client)
        return check(last[0])

    wait_until(holds, timeout, what)
    return last[0]


def test_metrics_count_what_happened_at_the_door_and_on_the_link(
    tmp_path: Path, broker: LocalBroker
) -> None:
    config_path = _config(tmp_path, broker.url)
    config = load(config_path)
    database = config.gateway.database
    enrol_cards(config, KNOWN)
    with _serving(config_path) as (running, client):
        before = _scrape(client)
        assert _by_label(before, "rentgate_decisions_total", "reason") == {}
        assert _value(before, "rentgate_decision_latency_seconds_count") == 0
        taps = [KNOWN[0], UNKNOWN, KNOWN[1], KNOWN[0], "ZZ-NOT-A-CARD", "0A\x01\x02", "F" * 2000]
        write_taps(tmp_path / "front.reader", taps)

        def decided(samples: Samples) -> bool:
            return (
                sum(_by_label(samples, "rentgate_decisions_total", "reason").values()) == 4
                and sum(_by_label(samples, "rentgate_rejected_inputs_total", "reason").values())
                == 3
                and _value(samples, "rentgate_reader_online", reader=FRONT) == 1  # back after EOF
            )

        _until(client, "taps decided", decided)
        running.gateway.writer.flush(10)  # every event so far committed; no more will come
        truth = stats_of(database)  # the outbox as the store itself has it
        samples = _until(
            client, "everything delivered", lambda s: _value(s, "rentgate_outbox_depth") == 0
        )
        health, ready = client.get("/healthz"), client.get("/readyz")

    decisions = {
        (dict(labels)["result"], dict(labels)["reason"]): value
        for (name, labels), value in samples.items()
        if name == "rentgate_decisions_total"
    }
    assert decisions == {("allow", "granted"): 3, ("deny", "unknown"): 1}
    assert _by_label(samples, "rentgate_rejected_inputs_total", "reason") == {
        "bad_format": 1,
        "binary": 1,
        "too_long": 1,
    }
    # Every decision is in the histogram, in cumulative buckets ending at +Inf.
    assert _value(samples, "rentgate_decision_latency_seconds_count") == 4
    assert (_value(samples, "rentgate_decision_latency_seconds_sum") or 0) > 0
    buckets = _by_label(samples, "rentgate_decision_latency_seconds_bucket", "le")
    assert len(buckets) == len(LATENCY_BUCKETS_MS) + 1
    counts = [buckets[le] for le in sorted(buckets, key=float)]
    assert counts == sorted(counts)
    assert counts[-1] == 4

    # Everything recorded (decisions, the reader's comings and goings) was PUBACKed.
    assert truth.head_seq >= 4
    assert _value(samples, "rentgate_outbox_head_seq") == truth.head_seq
    assert _value(samples, "rentgate_outbox_oldest_unsent_age_seconds") == 0
    assert _value(samples, "rentgate_mqtt_events_acked_total") == truth.head_seq
    published = _value(samples, "rentgate_mqtt_publishes_total") or 0
    assert published >= 1
    assert _value(samples, "rentgate_mqtt_pubacks_total") == published
    assert _value(samples, "rentgate_mqtt_pubacks_rejected_total") == 0
    assert (_value(samples, "rentgate_mqtt_last_puback_timestamp_seconds") or 0) > 0
    assert _value(samples, "rentgate_mqtt_connected") == 1
    assert _value(samples, "rentgate_mqtt_reconnects_total") == 0
    assert _value(samples, "rentgate_mqtt_broker", url=broker.url, protocol="5") == 1
    assert _value(samples, "rentgate_mqtt_failovers_total") == 0

    assert _by_label(samples, "rentgate_reader_online", "reader") == {FRONT: 1, MISSING: 0}
    assert _value(samples, "rentgate_credentials") == len(KNOWN)
    assert _value(samples, "rentgate_store_failing") == 0
    free = _value(samples, "rentgate_disk_free_bytes") or 0
    size = _value(samples, "rentgate_disk_size_bytes") or 0
    assert 0 < free <= size == shutil.disk_usage(config.gateway.data_dir).total
    assert _value(samples, "rentgate_info", gateway="GW-METRICS", version="0.1.0") == 1
    assert (_value(samples, "process_resident_memory_bytes") or 0) > 0

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "problems": [],
        "store": {"failing": False, "last_error": None},
        "credentials": len(KNOWN),
        "mqtt": {"connected": True, "broker": broker.url, "last_error": None},
    }


def test_readyz_says_503_while_the_store_really_cannot_write(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """SQLite's max_page_count pinned to the file's size: commits fail as on a full disk."""
    config_path = _config(tmp_path, broker.url)
    with _serving(config_path) as (running, client):
        writer = running.gateway.writer
        assert client.get("/readyz").status_code == 200
        writer.submit(lambda conn: conn.execute("PRAGMA max_page_count = 1")).result(10)
        batches = iter(range(20))

        def full() -> bool:  # more decisions until the file has no room left (bounded)
            batch = next(batches, None)
            if writer.health.failing_since is None and batch is not None:
                write_taps(tmp_path / "front.reader", [f"0C{batch:02X}{n:04X}" for n in range(50)])
            return writer.health.failing_since is not None

        wait_until(full, 30, "store writes failing")
        wait_until(lambda: client.get("/readyz").status_code == 503, 20, "readyz 503")
        failing = client.get("/readyz").json()
        samples = _scrape(client)
        assert client.get("/healthz").status_code == 200, "alive all the same"
        writer.submit(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
        wait_until(lambda: client.get("/readyz").status_code == 200, 30, "readyz 200 again")
        recovered = client.get("/readyz").json()
    assert failing["ready"] is False
    assert failing["problems"] == ["store_failing"]
    assert "full" in failing["store"]["last_error"]
    assert _value(samples, "rentgate_store_failing") == 1
    assert (_value(samples, "rentgate_store_pending") or 0) > 0
    assert recovered["problems"] == []


def test_a_broker_outage_is_ready_and_shows_as_backlog_and_a_reconnect(
    tmp_path: Path, own_broker: LocalBroker
) -> None:
    config_path = _config(tmp_path, own_broker.url)
    config = load(config_path)
    database = config.gateway.database
    enrol_cards(config, KNOWN)
    with _serving(config_path) as (running, client):
        _until(client, "connected", lambda s: _value(s, "rentgate_mqtt_connected") == 1)
        own_broker.stop()
        _until(client, "disconnected", lambda s: _value(s, "rentgate_mqtt_connected") == 0)
        write_taps(tmp_path / "front.reader", KNOWN * 3)

        def recorded(samples: Samples) -> bool:
            return (
                _value(samples, "rentgate_decisions_total", result="allow", reason="granted") == 6
                and _value(samples, "rentgate_reader_online", reader=FRONT) == 1
            )

        _until(client, "taps decided while the broker is away", recorded)
        running.gateway.writer.flush(10)  # every event so far committed; no more will come
        truth = stats_of(database)
        away = _scrape(client)
        ready = client.get("/readyz")
        own_broker.start()
        back = _until(
            client,
            "the backlog drained after reconnecting",
            lambda s: (
                _value(s, "rentgate_outbox_depth") == 0
                and _value(s, "rentgate_mqtt_connected") == 1
            ),
            30,
        )
    assert truth.depth >= 6, "six decisions at least wait in the outbox"
    assert _value(away, "rentgate_outbox_depth") == truth.depth
    assert _value(away, "rentgate_outbox_head_seq") == truth.head_seq
    assert (_value(away, "rentgate_outbox_oldest_unsent_age_seconds") or 0) > 0
    assert _value(away, "rentgate_mqtt_reconnects_total") == 1
    assert ready.status_code == 200, "store-and-forward: a broker outage is not unready"
    assert ready.json()["mqtt"]["connected"] is False
    assert _value(back, "rentgate_mqtt_reconnects_total") == 1
    assert (
        _value(back, "rentgate_mqtt_events_acked_total")
        == stats_of(config.gateway.database).head_seq
    )


def test_readyz_says_doors_offline_while_the_door_core_is_not_running(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """The web process alone (no door core behind its socket) serves, and says the doors
    are offline rather than failing."""
    config = load(_config(tmp_path, broker.url))
    open_store(config)

    async def ask() -> tuple[httpx.Response, httpx.Response]:
        async with WebGateway(config) as web:
            transport = httpx.ASGITransport(app=web.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                return await client.get("/readyz"), await client.get("/healthz")

    ready, health = asyncio.run(ask())
    assert ready.status_code == 503
    assert ready.json()["problems"] == ["doors_offline"]
    assert health.status_code == 200


@pytest.mark.parametrize(
    ("seconds", "first_bucket_ms"),
    [(0.0, 0.05), (0.00005, 0.05), (0.0000501, 0.1), (0.002, 2.0), (0.0021, 5.0), (0.05, 50.0)],
)
def test_latency_lands_in_the_first_bucket_at_or_above_it(
    seconds: float, first_bucket_ms: float
) -> None:
    latency = DecisionLatency()
    latency.observe(seconds)
    cumulative = dict(latency.cumulative())
    first = min(float(le) for le, count in cumulative.items() if count == 1)
    assert first == pytest.approx(first_bucket_ms / 1000)
    assert cumulative["+Inf"] == latency.count == 1


def test_latency_beyond_the_last_bucket_counts_only_in_inf() -> None:
    latency = DecisionLatency()
    latency.observe(0.2)
    assert [count for _le, count in latency.cumulative()] == [0] * len(LATENCY_BUCKETS_MS) + [1]
    assert latency.sum_s == pytest.approx(0.2)
    with pytest.raises(ValueError, match="ascending"):
        DecisionLatency((1.0, 0.5))
