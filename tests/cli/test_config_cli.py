"""Config validation, environment overrides, and the command line as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    GatewayProcess,
    Subscriber,
    load,
    make_id_number,
    wait_until,
    write_config,
)

MINIMAL = """
[gateway]
id = "GW-0001"
data_dir = "var/gw-0001"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[api]
listen = "127.0.0.1:8080"

[[devices]]
kind = "line"
door = "front"
path = "var/gw-0001/front.reader"
credential = "card_uid"
"""

BROKEN = """
[gateway]
id = "GW 0001/#"
data_dir = "var/x"
commit_window_ms = -1
colour = "blue"

[mqtt]
url = "http://broker"
protocol = "4"

[[devices]]
kind = "osdp-ish"
door = "front"

[[devices]]
kind = "line"
door = "front"
path = "p"
credential = "fingerprint"
"""


def rentgate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
        env={**os.environ, "RENTGATE_LOG_LEVEL": "WARNING"},
    )


def test_design_minimal_config_is_valid() -> None:
    config = parse_config(MINIMAL, environ={})
    assert config.gateway.id == "GW-0001"
    assert config.mqtt.protocol == "auto", "MQTT 5, or 3.1.1 where the broker refuses 5"
    assert [door.name for door in config.all_doors()] == ["front"]
    assert config.gateway.database == Path("var/gw-0001/rentgate.db")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BROKEN, "broken.toml", environ={})
    problems = "\n".join(caught.value.problems)
    for expected in (
        "gateway.id: 'GW 0001/#': only letters, digits, '-' and '_'",
        "gateway.commit_window_ms: Input should be greater than or equal to 0",
        "gateway.colour: unknown key",
        "mqtt.url: 'http://broker' must be mqtt://host[:port] or mqtt",
        "mqtt.protocol: Input should be 'auto', '5' or '3.1.1'",
        "devices.0.kind: must be one of 'line', 'idcard-sam', 'osdp'",
        "devices.1.credential: Input should be 'card_uid', 'id_number' or 'voucher'",
    ):
        assert expected in problems
    assert caught.value.report().startswith("broken.toml: configuration is not valid:")


def test_toml_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError, match="1 problem") as caught:
        parse_config("[gateway\nid = 1", "x.toml", environ={})
    assert "line 1" in caught.value.problems[0]


def test_environment_overrides_keys_and_list_entries() -> None:
    config = parse_config(
        MINIMAL,
        environ={
            "RENTGATE_MQTT__URL": "mqtts://broker.example:8883",
            "RENTGATE_MQTT__INFLIGHT_WINDOW": "32",
            "RENTGATE_DEVICES__0__DOOR": "back",
            "UNRELATED": "x",
        },
    )
    assert config.mqtt.url == "mqtts://broker.example:8883"
    assert config.mqtt.inflight_window == 32
    assert config.devices[0].door == "back"


def test_bad_environment_override_is_a_problem_too() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            MINIMAL,
            environ={"RENTGATE_DEVICES__5__PATH": "x", "RENTGATE_MQTT__KEEPALIVE_S": "often"},
        )
    problems = "\n".join(caught.value.problems)
    assert "RENTGATE_DEVICES__5__PATH: no entry 5 in devices" in problems
    assert "mqtt.keepalive_s: Input should be a valid integer" in problems


def test_tls_files_with_a_plaintext_url_are_refused() -> None:
    with pytest.raises(ConfigError, match="problem") as caught:
        parse_config(MINIMAL, environ={"RENTGATE_MQTT__CA": "/etc/ca.pem"})
    assert "use mqtts://" in caught.value.problems[0]


def test_example_configs_are_valid() -> None:
    examples = sorted(Path("config").glob("*.toml"))
    assert examples, "config/ has commented examples"
    for example in examples:
        load_config(example, environ={})


def test_bad_config_exits_2_listing_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN)
    result = rentgate("run", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n  - ") >= 7
    missing = rentgate("run", "--config", str(tmp_path / "absent.toml"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
    tls = tmp_path / "tls.toml"
    tls.write_text(
        MINIMAL.replace(
            'url = "mqtt://127.0.0.1:1883"',
            'url = "mqtts://127.0.0.1"\n'
            f'ca = "{tmp_path}/no-ca.pem"\npassword_file = "{tmp_path}/no-password"',
        )
    )
    unreadable = rentgate("run", "--config", str(tls))
    assert unreadable.returncode == 2
    assert "mqtt.ca: cannot read" in unreadable.stderr
    assert "mqtt.password_file: cannot read" in unreadable.stderr


def test_enroll_then_status_show_what_the_store_holds(broker: LocalBroker, tmp_path: Path) -> None:
    config_path = write_config(tmp_path, broker.url, gateway_id="GW-CLI")
    number = make_id_number(42)
    enrolled = rentgate(
        "enroll",
        "--config",
        str(config_path),
        "--id-number",
        number.value,
        "--name",
        "王小明",
        "--card-uid",
        "04A1B2C3D4",
        "--id-card",
        "--unit",
        "3",
        "--room",
        "301",
        "--to",
        "2027-11-30",
    )
    assert enrolled.returncode == 0, enrolled.stderr
    assert number.masked in enrolled.stdout
    assert number.value not in enrolled.stdout + enrolled.stderr
    bad = rentgate(
        "enroll", "--config", str(config_path), "--id-number", "110105194912310021", "--name", "x"
    )
    assert bad.returncode == 2
    assert "check character" in bad.stderr
    status = rentgate("status", "--config", str(config_path), "--json")
    report = json.loads(status.stdout)
    assert report["enrolled"] == {"people": 1, "credentials": 2, "tenancies": 1}
    assert report["outbox"]["depth"] == 0
    assert report["process"] is None
    text = rentgate("status", "--config", str(config_path))
    assert "process: not running" in text.stdout


def test_run_reports_live_status_and_stops_cleanly_on_sigterm(
    broker: LocalBroker, tmp_path: Path
) -> None:
    config_path = write_config(tmp_path, broker.url, gateway_id="GW-SIGTERM")
    config = load(config_path)
    platform = Subscriber(broker.port, "rentgate/v1/GW-SIGTERM/#", "sigterm-platform")
    gateway = GatewayProcess(config_path, tmp_path / "gateway.log")
    gateway.start()
    try:
        wait_until(lambda: any(s["online"] for s in platform.states()), 20, "birth")
        fifo = os.open(tmp_path / "front.reader", os.O_WRONLY)
        os.write(fifo, b"04DEADBEEF\n")
        os.close(fifo)
        wait_until(lambda: bool(platform.decisions()), 10, "decision")

        def live() -> dict[str, object]:
            return json.loads(rentgate("status", "--config", str(config_path), "--json").stdout)

        wait_until(lambda: live()["process"]["link"]["last_puback"] is not None, 10, "status")
        report = live()
        assert report["process"]["running"] is True
        assert report["process"]["link"]["connected"] is True
        assert report["outbox"]["depth"] == 0
        text = rentgate("status", "--config", str(config_path)).stdout
        assert "link: connected" in text
        assert "last PUBACK: 20" in text
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(30) == 0
    finally:
        if gateway.process and gateway.process.poll() is None:
            gateway.kill()
        platform.close()
    assert platform.states()[-1]["online"] is False, "a clean stop says so on the state topic"
    final = json.loads(config.gateway.status_file.read_text())
    assert final["running"] is False
    log = (tmp_path / "gateway.log").read_text()
    assert "04DEADBEEF" not in log, "card serials do not reach the log unmasked"


@pytest.mark.parametrize(
    "prefix", ["rentgate/v1/GW-0001/", "platform/+/", "platform/replies", "$SYS/x/", "/"]
)
def test_a_reply_prefix_inside_the_gateways_topics_or_with_wildcards_is_refused(
    prefix: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL, environ={"RENTGATE_PLATFORM__REPLY_PREFIX": prefix})
    assert any(problem.startswith("platform.reply_prefix:") for problem in caught.value.problems)


def test_a_platform_reply_prefix_is_accepted_and_absent_by_default() -> None:
    assert parse_config(MINIMAL, environ={}).platform.reply_prefix is None
    config = parse_config(MINIMAL, environ={"RENTGATE_PLATFORM__REPLY_PREFIX": "platform/replies/"})
    assert config.platform.reply_prefix == "platform/replies/"
