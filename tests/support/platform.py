"""The platform side in tests: a key, signed commands, and a client that waits for replies."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from gateway.clock import Clock
from gateway.domain.command_bodies import snapshot_pages
from gateway.domain.signed_commands import CommandName, sign
from gateway.domain.signing import SigningKey
from gateway.sync.link import BrokerSettings
from gateway.sync.local_broker import LocalBroker
from gateway.sync.platform_client import PlatformClient
from tests.support.gateway import make_id_number
from tests.support.nats import NatsBroker
from tests.support.rabbitmq import RabbitBroker


class Platform:
    """Signs commands for one gateway with the gateway's clock and sends them."""

    def __init__(
        self,
        broker: LocalBroker | NatsBroker | RabbitBroker,
        gateway_id: str,
        key: SigningKey,
        clock: Clock,
        *,
        protocol: str = "5",
    ) -> None:
        self.gateway_id = gateway_id
        self.key = key
        self.clock = clock
        settings = BrokerSettings.from_url(
            f"mqtt://127.0.0.1:{broker.port}", "platform-test", protocol=protocol
        )
        self.client = PlatformClient(settings).__enter__()

    def close(self) -> None:
        self.client.__exit__()

    def signed(
        self,
        name: str,
        body: Mapping[str, Any],
        *,
        key: SigningKey | None = None,
        ttl_s: int = 300,
        issued_at: int | None = None,
        command_id: str | None = None,
        gateway_id: str | None = None,
    ) -> bytes:
        return sign(
            key or self.key,
            gateway_id=gateway_id or self.gateway_id,
            name=CommandName(name),
            body=body,
            now=issued_at if issued_at is not None else int(self.clock.now().timestamp()),
            ttl_s=ttl_s,
            command_id=command_id,
        )

    def send(
        self, name: str, body: Mapping[str, Any], *, timeout: float = 30, **options: Any
    ) -> dict[str, Any]:
        return self.send_raw(name, self.signed(name, body, **options), timeout=timeout)

    def send_snapshot(
        self, version: int, people: list[dict[str, Any]], *, timeout: float = 60
    ) -> dict[str, Any]:
        """Send a snapshot page by page; return the last page's reply (or the first refusal)."""
        reply: dict[str, Any] = {}
        for body in snapshot_pages(version, people):
            reply = self.send("allowlist.snapshot", body, timeout=timeout)
            if not reply["ok"]:
                return reply
        return reply

    def send_raw(
        self, name: str, payload: bytes, *, response_topic: str | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """Send bytes as they are (forged, garbled, oversized…) and return the reply."""
        command_id = _id_of(payload)
        topic = f"rentgate/v1/{self.gateway_id}/cmd/{name}"
        reply_topic = response_topic or f"rentgate/v1/{self.gateway_id}/cmd-reply"
        self.client.subscribe(reply_topic)
        correlation = self.client.publish(topic, payload, response_topic=response_topic)
        for message in self.client.messages(timeout):
            reply = json.loads(message.payload)
            if message.topic != reply_topic or reply.get("id") != command_id:
                continue
            if correlation is not None and message.correlation_data != correlation:
                continue
            return dict(reply)
        raise AssertionError(f"no reply to {name} within {timeout} s")


def _id_of(payload: bytes) -> str | None:
    try:
        document = json.loads(payload)
    except ValueError:
        return None
    value = document.get("id") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def id_number_for(serial: int) -> str:
    """A distinct valid ID number for each serial up to a few million."""
    birth = date(1970, 1, 1) + timedelta(days=serial // 1000)
    return make_id_number(serial % 1000, birth=birth.strftime("%Y%m%d")).value


def person_entry(serial: int, cards: list[str], unit: str = "1") -> dict[str, Any]:
    """An allowlist entry: a person with card credentials and a tenancy for a year."""
    return {
        "person": f"P-{serial}",
        "id_number": id_number_for(serial),
        "name": f"租户{serial}",
        "credentials": [{"kind": "card_uid", "value": card} for card in cards],
        "tenancies": [
            {
                "unit": unit,
                "valid_from": "2026-01-01T00:00:00+08:00",
                "valid_to": "2027-12-31T00:00:00+08:00",
            }
        ],
    }


def key_file(directory: Path) -> tuple[SigningKey, Path]:
    key = SigningKey.generate()
    _private, public = key.save(directory)
    return key, public
