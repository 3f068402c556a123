"""A gateway as the platform's sources see it: an MQTT 3.1.1 client that publishes event
envelopes (QoS 1) and a retained state, and waits for every PUBACK."""

from __future__ import annotations

import json
from types import TracebackType

import paho.mqtt.client as paho

from tests.support.gateway import wait_until


def envelope(gateway_id: str, seq: int) -> bytes:
    return json.dumps({"v": 1, "gw": gateway_id, "events": [{"seq": seq}]}).encode()


class GatewayPublisher:
    """Publishes as gateway `gateway_id` to the MQTT port `port` on 127.0.0.1."""

    def __init__(self, port: int, gateway_id: str, timeout: float = 10.0) -> None:
        self.gateway_id = gateway_id
        self.timeout = timeout
        self._client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=gateway_id, protocol=paho.MQTTv311
        )
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        wait_until(self._client.is_connected, timeout, f"{gateway_id} connected over MQTT")

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish with QoS 1 and return once the broker PUBACKed it."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(self.timeout)
        assert info.is_published(), f"no PUBACK for {topic}"

    def events(self, seqs: range) -> list[bytes]:
        """One envelope per seq on `rentgate/v1/{gw}/events`; the payloads published."""
        payloads = [envelope(self.gateway_id, seq) for seq in seqs]
        for payload in payloads:
            self.publish(f"rentgate/v1/{self.gateway_id}/events", payload)
        return payloads

    def state(self, online: bool = True) -> bytes:
        payload = json.dumps({"v": 1, "gw": self.gateway_id, "online": online}).encode()
        self.publish(f"rentgate/v1/{self.gateway_id}/state", payload, retain=True)
        return payload

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> GatewayPublisher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
