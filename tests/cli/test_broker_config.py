"""`[mqtt] url` or `urls` (a broker cluster), `protocol`, `state_every_s`, and gateway ids
that every broker accepts: validated at load, every problem with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config
from gateway.runtime.parts import broker_settings

BASE = """
[gateway]
id = "{gateway_id}"
data_dir = "var/gw"

[mqtt]
{mqtt}

[[devices]]
kind = "line"
door = "front"
path = "var/gw/front.reader"
{device}
"""


def config_text(
    mqtt: str = 'url = "mqtt://127.0.0.1:1883"', gateway_id: str = "GW-0001", device: str = ""
) -> str:
    return BASE.format(mqtt=mqtt, gateway_id=gateway_id, device=device)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    return caught.value.problems


def test_a_gateway_id_with_a_dot_is_refused_at_load_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(config_text(gateway_id="gw.building-7"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    (problem,) = caught.value.problems
    assert problem.startswith("gateway.id: 'gw.building-7': only letters, digits, '-' and '_'")
    assert "NATS refuses '.'" in problem
    assert "RabbitMQ rewrites it to '/'" in problem


def test_client_ids_follow_the_same_rule_but_reader_names_may_keep_a_dot() -> None:
    (problem,) = problems_of(config_text('url = "mqtt://b"\nclient_id = "gw.7"'))
    assert problem.startswith("mqtt.client_id: 'gw.7': only letters, digits")
    config = parse_config(
        config_text('url = "mqtt://b"\nclient_id = "gw_7-a"', device='name = "front.in"'),
        environ={},
    )
    assert config.mqtt.client_id == "gw_7-a"
    assert config.reader_name(0) == "front.in"
    for good in ("GW-0001", "gw_7", "A"):
        assert parse_config(config_text(gateway_id=good), environ={}).gateway.id == good
    for bad in ("GW/1", "GW+1", "GW#1", "-GW", "GW 1", "G" * 65):
        assert problems_of(config_text(gateway_id=bad))[0].startswith("gateway.id:")


def test_url_is_a_cluster_of_one_and_urls_a_cluster_in_order() -> None:
    one = parse_config(config_text(), environ={})
    assert one.mqtt.brokers == ["mqtt://127.0.0.1:1883"]
    assert one.mqtt.protocol == "auto"
    assert one.mqtt.state_every_s == 60
    cluster = parse_config(
        config_text('urls = ["mqtts://n1:8883", "mqtts://n2", "mqtts://[::1]:9883"]\nca = "c.pem"'),
        environ={},
    )
    assert cluster.mqtt.brokers == ["mqtts://n1:8883", "mqtts://n2", "mqtts://[::1]:9883"]
    nodes = broker_settings(cluster)
    assert [node.url for node in nodes] == [
        "mqtts://n1:8883",
        "mqtts://n2:8883",
        "mqtts://[::1]:9883",
    ]
    assert {node.tls.ca_file for node in nodes if node.tls} == {Path("c.pem")}
    assert {node.client_id for node in nodes} == {"GW-0001"}
    overridden = parse_config(
        config_text(),
        environ={"RENTGATE_MQTT__URL": "", "RENTGATE_MQTT__URLS": "mqtt://a, mqtt://b"},
    )
    assert overridden.mqtt.urls == ["mqtt://a", "mqtt://b"]


def test_bad_broker_lists_are_refused_with_the_reason() -> None:
    both = problems_of(config_text('url = "mqtt://a"\nurls = ["mqtt://b"]'))
    assert both == ['mqtt: give the broker as url = "…" or as urls = ["…", …], exactly one']
    neither = problems_of(config_text("keepalive_s = 30"))
    assert "exactly one" in neither[0]
    mixed = problems_of(config_text('urls = ["mqtts://a", "mqtt://b"]'))
    assert "never fall back to plaintext" in mixed[0]
    twice = problems_of(config_text('urls = ["mqtt://a", "mqtt://a"]'))
    assert twice == ["mqtt.urls: a URL is listed twice"]
    bad = problems_of(config_text('urls = ["mqtt://a", "http://b"]'))
    assert bad == ["mqtt.urls: 'http://b' must be mqtt://host[:port] or mqtts://host[:port]"]
    assert problems_of(config_text("urls = []"))[0].startswith("mqtt.urls:")
    refused = problems_of(config_text('url = "mqtt://a"\nprotocol = "4"\nstate_every_s = 0'))
    assert "mqtt.protocol: Input should be 'auto', '5' or '3.1.1'" in refused
    assert any(problem.startswith("mqtt.state_every_s:") for problem in refused)
