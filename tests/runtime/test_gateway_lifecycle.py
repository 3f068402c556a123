"""The running gateway owns its loops: one that fails stops it the clean way, then says why.

A real gateway (real Mosquitto, SQLite files, a FIFO reader) whose housekeeping
loop is made to fail on cue, after a tap: the gateway must still commit what it
accepted, say goodbye on its retained state topic, write `running: false` to its
status file, log the failure with its traceback, and `run()` must raise that
very error (so `rentgate run` exits non-zero and systemd restarts it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from gateway.ops.status import read_status_file
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    enrol_cards,
    load,
    stats_of,
    wait_until,
    write_config,
    write_taps,
)

CARD = "04A1B2C3D4"


class DiskOnFire(RuntimeError):
    """The failure the test injects into one of the gateway's loops."""


def test_a_failing_loop_stops_the_gateway_cleanly_and_is_raised(
    broker: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load(write_config(tmp_path, broker.url, gateway_id="GW-FAIL"))
    enrol_cards(config, [CARD])
    platform = Subscriber(broker.port, "rentgate/v1/GW-FAIL/#", "fail-platform")
    fail_now = threading.Event()

    async def housekeeping_that_fails() -> None:
        while not fail_now.is_set():
            await asyncio.sleep(0.02)
        raise DiskOnFire("housekeeping cannot go on")

    running = InProcessGateway(config)
    running.gateway.parts.housekeeper.run = housekeeping_that_fails  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.ERROR, logger="gateway.runtime.gateway"):
            running.start()
            running.wait_connected()
            write_taps(tmp_path / "front.reader", [CARD, "04DEADBEEF"])
            wait_until(lambda: len(platform.decisions()) == 2, 10, "both taps delivered")
            fail_now.set()
            wait_until(lambda: not running.gateway.ready.is_set(), 20, "the gateway stopped")
            with pytest.raises(DiskOnFire, match="cannot go on"):
                running.stop()
        wait_until(lambda: platform.states()[-1]["online"] is False, 10, "the goodbye")
    finally:
        platform.close()
    failure = [r for r in caplog.records if "background task housekeeping failed" in r.message]
    assert failure, "the failing loop is named in the log"
    assert failure[0].exc_info is not None, "with its traceback"
    status = read_status_file(config.gateway.status_file)
    assert status is not None
    assert status.running is False
    assert stats_of(config.gateway.database).head_seq >= 2, "what was accepted was committed"
    assert status.decisions == {"granted": 1, "unknown": 1}


def test_a_task_a_command_starts_may_fail_without_stopping_the_gateway(
    broker: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load(write_config(tmp_path, broker.url, gateway_id="GW-SPAWN"))
    enrol_cards(config, [CARD])

    async def sweep_that_fails() -> None:
        raise DiskOnFire("this sweep failed")

    with InProcessGateway(config) as running, caplog.at_level(logging.ERROR):
        gateway = running.gateway
        gateway.parts.alerts.sweep = sweep_that_fails  # type: ignore[method-assign]
        # What a signed `config.set` does once applied: new door settings, then a sweep.
        running.call_soon(gateway.parts.actions.settings_changed)
        wait_until(
            lambda: any("alerts-after-settings failed" in r.message for r in caplog.records),
            10,
            "the failure logged",
        )
        write_taps(tmp_path / "front.reader", [CARD])
        wait_until(lambda: gateway.doors.counters.decisions["granted"] == 1, 10, "doors decide")
        assert gateway.ready.is_set()
