"""The door core owns its loops: one that fails is contained, counted and started again.

A real gateway (real Mosquitto, SQLite files, a FIFO reader) whose housekeeping
loop is made to fail on cue, twice: the doors must go on deciding and the
platform on receiving, the failure must be logged with its traceback, counted
in the status (and so in `/metrics`), and the loop must run again afterwards.
Nothing a loop meets may stop a door (issue 13).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    enrol_cards,
    load,
    wait_until,
    write_config,
    write_taps,
)

CARD = "04A1B2C3D4"


class DiskOnFire(RuntimeError):
    """The failure the test injects into one of the gateway's loops."""


def test_a_failing_loop_is_counted_and_started_again_while_the_doors_go_on(
    broker: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load(write_config(tmp_path, broker.url, gateway_id="GW-FAIL"))
    enrol_cards(config, [CARD])
    platform = Subscriber(broker.port, "rentgate/v1/GW-FAIL/#", "fail-platform")
    fail_now = threading.Event()
    failures_left = [2]
    runs = [0]

    async def housekeeping_that_fails() -> None:
        runs[0] += 1
        while not fail_now.is_set() or failures_left[0] == 0:
            await asyncio.sleep(0.02)
        failures_left[0] -= 1
        raise DiskOnFire("housekeeping cannot go on")

    running = InProcessGateway(config)
    gateway = running.gateway
    gateway.parts.housekeeper.run = housekeeping_that_fails  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.ERROR, logger="gateway.runtime.gateway"):
            running.start()
            running.wait_connected()
            write_taps(tmp_path / "front.reader", [CARD])
            wait_until(lambda: len(platform.decisions()) == 1, 10, "the first tap delivered")
            fail_now.set()
            wait_until(lambda: runs[0] == 3, 20, "the loop started again after two failures")
            write_taps(tmp_path / "front.reader", [CARD, "04DEADBEEF"])
            wait_until(lambda: len(platform.decisions()) == 3, 10, "taps after the failures")
            assert gateway.ready.is_set(), "the door core is still running"
            assert gateway.status().loop_failures == {"housekeeping": 2}
        running.stop()
    finally:
        platform.close()
    failure = [r for r in caplog.records if "background task housekeeping failed" in r.message]
    assert len(failure) == 2, "each failure is named in the log"
    assert failure[0].exc_info is not None, "with its traceback"
    assert gateway.doors.counters.decisions == {"granted": 2, "unknown": 1}


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
