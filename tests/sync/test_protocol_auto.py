"""`protocol = "auto"` against a broker that speaks MQTT 3.1.1 only: Debian's nats-server
(2.9) with MQTT on. The gateway asks for MQTT 5, is refused, connects in 3.1.1, delivers
its events and takes a signed command, replied on cmd-reply (3.1.1 has no response
topics). `rentgate platform send/watch` fall back the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.cli import main
from gateway.ops.status import read_status_file
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    access_decisions,
    enrol_cards,
    load,
    stats_of,
    wait_until,
    write_config,
    write_taps,
)
from tests.support.nats import NatsBroker
from tests.support.platform import Platform, key_file

KNOWN = ["0D000001", "0D000002"]
TAPS = [KNOWN[0], "0DDEADBE", KNOWN[1]] * 4


def test_auto_falls_back_to_311_on_nats_delivers_and_takes_a_command(
    nats_broker: NatsBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway_id = "GW-NATS-AUTO"
    key, public = key_file(tmp_path / "platform")
    config = load(
        write_config(
            tmp_path,
            nats_broker.url,
            gateway_id=gateway_id,
            extra=f'[platform]\nkeys = ["{public}"]\n',
        )
    )
    assert config.mqtt.protocol == "auto", "the default"
    enrol_cards(config, KNOWN)
    subscriber = Subscriber(
        nats_broker.port,
        f"rentgate/v1/{gateway_id}/#",
        "nats-platform",
        protocol=paho.MQTTv311,
    )
    try:
        with InProcessGateway(config) as running:
            uplink = running.gateway.uplink
            assert uplink is not None
            wait_until(lambda: uplink.link.connected, 20, "connected to NATS")
            assert uplink.link.protocol == "3.1.1"
            write_taps(tmp_path / "front.reader", TAPS)
            wait_until(lambda: len(subscriber.decisions()) >= len(TAPS), 30, "taps at NATS")
            head = stats_of(config.gateway.database).head_seq
            wait_until(lambda: uplink.stats.delivered_seq >= head, 20, "cursor at the head")

            platform = Platform(
                nats_broker, gateway_id, key, running.gateway.clock, protocol="auto"
            )
            try:
                assert platform.client.protocol == "3.1.1"
                reply = platform.send("resync", {})
                with pytest.raises(ValueError, match="needs MQTT 5"):
                    platform.client.publish("x/y", b"{}", response_topic="platform/replies/1")
            finally:
                platform.close()

            private = tmp_path / "platform.key"
            private.write_bytes(
                key._private.private_bytes(  # the trusted key, as the operator's file
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            common = ["--broker", nats_broker.url, "--gateway", gateway_id, "--key", str(private)]
            capsys.readouterr()
            sent = main(["platform", "send", *common, "resync"])
            out, err = capsys.readouterr()
            assert sent == 0, err
            assert json.loads(out)["ok"] is True
            strict = main(["platform", "send", "--protocol", "5", *common, "resync"])
            assert strict == 3, "MQTT 5 alone is refused by this broker"
            assert "refused the connection" in capsys.readouterr().err
            topic = main(["platform", "send", *common, "--response-topic", "p/r/", "resync"])
            assert topic == 2
            assert "--response-topic needs MQTT 5" in capsys.readouterr().err
            status_file = config.gateway.status_file

            def status_names_the_broker() -> bool:
                status = read_status_file(status_file)
                return status is not None and status.link.broker is not None

            wait_until(status_names_the_broker, 10, "the status file naming the broker")
            status = read_status_file(status_file)
    finally:
        subscriber.close()

    assert reply["ok"] is True, reply
    assert reply["gw"] == gateway_id
    assert "unacceptable protocol version of 5" in nats_broker.log, "5 was asked for first"
    events = subscriber.events()
    seqs = sorted({event["seq"] for event in events})
    assert seqs == list(range(1, head + 1)), "every seq, over 3.1.1"
    decisions = access_decisions(events)
    assert [d["result"] for d in decisions][: len(TAPS)] == ["allow", "deny", "allow"] * 4
    births = [s for s in subscriber.states() if s["online"]]
    assert births
    assert births[0]["gw"] == gateway_id
    assert status is not None
    assert (status.link.broker, status.link.protocol) == (nats_broker.url, "3.1.1")
