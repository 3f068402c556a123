"""The ingest's commands to gateways: signed `ack`s after each commit, `replay`s to repair gaps.

They go over MQTT on whichever node of the broker cluster answers (NATS and RabbitMQ
deliver an MQTT publish to their MQTT subscribers too), fire and forget at QoS 1: a
lost ack is harmless, because a gateway that has not had it sends its events again
and a repeat is acknowledged again (pg_store.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from gateway.domain.signed_commands import CommandName, sign
from gateway.domain.signing import SigningKey
from gateway.sync.link import BrokerSettings
from gateway.sync.platform_acks import ack_command
from gateway.sync.platform_client import PlatformClient
from gateway.sync.wire import Topics

log = logging.getLogger(__name__)

REPLAY_TTL_S = 300
SWITCH_AFTER_S = 5.0
"""A node that has not answered for this long is left for the next one in the list."""


class GatewayCommands:
    """Signs and sends acks and replays; keeps a connection to some node of the cluster."""

    def __init__(
        self,
        brokers: Sequence[BrokerSettings],
        key: SigningKey,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not brokers:
            raise ValueError("at least one broker")
        self._brokers = list(brokers)
        self._key = key
        self._now = now
        self._client: PlatformClient | None = None
        self._next = 0
        self._down_since: float | None = None
        self.acks_sent = 0
        self.replays_sent = 0
        self.dropped = 0
        """Commands not sent because no node answered (they are made again later)."""

    def ack(self, gateway_id: str, through_seq: int) -> None:
        signed = ack_command(self._key, gateway_id, through_seq, int(self._now()))
        if self._send(Topics(gateway_id).command(CommandName.ACK.value), signed):
            self.acks_sent += 1

    def replay(self, gateway_id: str, from_seq: int) -> None:
        signed = sign(
            self._key,
            gateway_id=gateway_id,
            name=CommandName.REPLAY,
            body={"from_seq": from_seq},
            now=int(self._now()),
            ttl_s=REPLAY_TTL_S,
        )
        if self._send(Topics(gateway_id).command(CommandName.REPLAY.value), signed):
            self.replays_sent += 1
            log.info("asked gateway %s to replay from seq %d", gateway_id, from_seq)

    def flush(self) -> None:
        """Each command is published as it is made: nothing waits here."""

    def _send(self, topic: str, payload: bytes) -> bool:
        client = self._connected_client()
        if client is None:
            self.dropped += 1
            return False
        client.send(topic, payload)
        return True

    def _connected_client(self) -> PlatformClient | None:
        """The current connection, or a new one to the next node once this one stays down."""
        if self._client is not None and self._client.connected:
            self._down_since = None
            return self._client
        now = time.monotonic()
        if self._client is not None:
            self._down_since = self._down_since or now
            if now - self._down_since < SWITCH_AFTER_S:
                return None  # paho is reconnecting; give it a moment
            self._close_client()
        settings = self._brokers[self._next % len(self._brokers)]
        self._next += 1
        try:
            self._client = PlatformClient(settings).__enter__()
        except ConnectionError as exc:
            log.warning("commands to gateways: %s", exc)
            return None
        self._down_since = None
        log.info(
            "commands to gateways go through %s (MQTT %s)", settings.url, self._client.protocol
        )
        return self._client

    def _close_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.__exit__()
            self._client = None

    def close(self) -> None:
        self._close_client()
