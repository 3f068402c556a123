"""A handheld terminal against the API the running gateway itself serves (its own TLS
certificate): captures made while the gateway is away reach the platform once each."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.residence.intake import issue_token_offline
from gateway.sync.local_broker import LocalBroker
from terminal.cli import main as terminal
from tests.support.gateway import InProcessGateway, Subscriber, load, make_id_number, wait_until
from tests.support.gateway import write_config as gateway_config

GW = "GW-TERMINAL"
RECORDS = 120


def test_captures_made_offline_sync_through_the_gateways_own_api(
    tmp_path: Path, broker: LocalBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load(gateway_config(tmp_path, broker.url, gateway_id=GW))
    home = ["--home", str(tmp_path / "handheld")]
    subscriber = Subscriber(broker.port, f"rentgate/v1/{GW}/events", client_id="terminal-gw")
    try:
        with InProcessGateway(config) as running:
            gateway = running.gateway
            token = issue_token_offline(config.gateway.database, "T-01", gateway.clock)
            wait_until(lambda: gateway.api_server.url is not None, 10, "the API listening")
            url = gateway.api_server.url
            assert url is not None
            ca = str(gateway.api_certificate)
            unreachable = url.rsplit(":", 1)[0] + ":1"
            assert terminal([*home, "init", "--terminal", "T-01", "--gateway", unreachable,
                             "--token", token, "--ca", ca]) == 0  # fmt: skip
            for serial in range(RECORDS):
                number = make_id_number(serial, birth="19880808").value
                assert terminal([*home, "capture", "registration", "--id-number", number,
                                 "--name", f"租户{serial}", "--building", GW, "--unit", "1",
                                 "--moved-in", "2026-11-01"]) == 0  # fmt: skip
            capsys.readouterr()
            assert terminal([*home, "sync"]) == 1  # the gateway is not reachable yet
            err = capsys.readouterr().err
            assert "nothing lost" in err.lower() or "pending" in err.lower()
            assert terminal([*home, "init", "--terminal", "T-01", "--gateway", url,
                             "--token", token, "--ca", ca]) == 0  # fmt: skip
            capsys.readouterr()
            assert terminal([*home, "sync"]) == 0
            assert f"{RECORDS}" in capsys.readouterr().out
            wait_until(lambda: len(_captured(subscriber)) >= RECORDS, 20, "every capture")
            assert terminal([*home, "pending"]) == 0
    finally:
        subscriber.close()
    captured = _captured(subscriber)
    assert len({e["record"] for e in captured}) == RECORDS
    assert all(e["terminal"] == "T-01" and e["building"] == GW for e in captured)


def _captured(subscriber: Subscriber) -> list[dict[str, object]]:
    return [e for e in subscriber.events() if e["type"] == "registration.captured"]
