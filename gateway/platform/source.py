"""What the ingest reads from: a broker's durable, shared stream of gateway messages.

Each engine has its own native way for several ingest instances to share one
stream without losing what an instance took and then died with (docs/deployment.md):
a `$share` group with persistent sessions on an MQTT broker, a JetStream durable
consumer on NATS, a durable queue bound to `amq.topic` on RabbitMQ. The ingest
sees only this: take a batch, store it, then settle it, so a delivery is
forgotten by the broker only after its rows are committed. An instance that dies
before settling gets its deliveries handed to another instance (or to itself,
restarted); the store makes the repeat harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

EVENTS_SUFFIX = "/events"
STATE_SUFFIX = "/state"


@dataclass(frozen=True)
class Delivery:
    """One message as the gateway published it, whatever the engine carried it as.

    `topic` is always in MQTT form (`rentgate/v1/{gw}/events` or `.../state`): a NATS
    subject or an AMQP routing key is mapped back by its source. `token` is the
    source's own handle for settling it.
    """

    topic: str
    payload: bytes
    token: object = None

    @property
    def gateway_id(self) -> str | None:
        """The gateway the topic names (the broker's ACL vouches for it), or None."""
        parts = self.topic.split("/")
        if len(parts) != 4 or parts[0] != "rentgate" or parts[1] != "v1" or not parts[2]:
            return None
        return parts[2]

    @property
    def is_state(self) -> bool:
        return self.topic.endswith(STATE_SUFFIX)


class Source(Protocol):
    """A shared, durable stream of the gateways' `events` and `state` messages."""

    def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        """Up to `max_items` deliveries; waits at most `timeout_s` for the first one.

        Returns as soon as some are at hand (it does not wait to fill the batch).
        Raises ConnectionError when the broker is gone for now; the ingest retries.
        """
        ...

    def settle(self, deliveries: Sequence[Delivery]) -> None:
        """These are stored (committed): the broker may forget them."""
        ...

    def close(self) -> None:
        """Disconnect, leaving whatever is unsettled to be delivered again."""
        ...
