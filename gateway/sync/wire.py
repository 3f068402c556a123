"""The wire contract, version 1 (docs/asyncapi.yaml): topics and payloads.

Envelopes are assembled from the outbox's stored JSON without re-parsing it:
each stored payload is an object, and the seq is spliced in as its first key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.store.outbox import StoredEvent

CONTRACT_VERSION = 1
TOPIC_ROOT = "rentgate/v1"
GATEWAY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""Gateway (and MQTT client) ids: letters, digits, `-` and `_`, 1 to 64 of them. Every broker
takes these in a topic level and a client id; a `.` is refused by NATS (its subject separator)
and silently rewritten to `/` by RabbitMQ, so events would vanish; `/ + #` split or match topics."""
GATEWAY_ID_RULE = (
    "only letters, digits, '-' and '_' (1 to 64, starting with a letter or digit):"
    " every MQTT broker accepts these in a topic level and a client id"
    " (NATS refuses '.', RabbitMQ rewrites it to '/')"
)


@dataclass(frozen=True)
class Topics:
    gateway_id: str

    @property
    def events(self) -> str:
        return f"{TOPIC_ROOT}/{self.gateway_id}/events"

    @property
    def state(self) -> str:
        return f"{TOPIC_ROOT}/{self.gateway_id}/state"

    @property
    def commands(self) -> str:
        """Filter for every command addressed to this gateway."""
        return f"{TOPIC_ROOT}/{self.gateway_id}/cmd/+"

    def command_name(self, topic: str) -> str | None:
        """The command name of a topic under `commands`, or None for any other topic."""
        prefix = f"{TOPIC_ROOT}/{self.gateway_id}/cmd/"
        return topic[len(prefix) :] if topic.startswith(prefix) else None

    def command(self, name: str) -> str:
        """The topic of one command to this gateway (the platform publishes there)."""
        return f"{TOPIC_ROOT}/{self.gateway_id}/cmd/{name}"

    @property
    def command_reply(self) -> str:
        return f"{TOPIC_ROOT}/{self.gateway_id}/cmd-reply"


def envelope(gateway_id: str, events: Sequence[StoredEvent]) -> bytes:
    """A batch envelope for events in ascending, contiguous seq order."""
    if not events:
        raise ValueError("an envelope carries at least one event")
    parts = [f'{{"seq":{event.seq},{event.payload[1:]}' for event in events]
    head = f'{{"v":{CONTRACT_VERSION},"gw":{json.dumps(gateway_id)},"events":['
    return (head + ",".join(parts) + "]}").encode("utf-8")


class StateHealth(Protocol):
    """The essentials of the gateway's /metrics that its birth message carries
    (`gateway.api.metrics.Essentials` is one): counts since the gateway process started."""

    @property
    def decisions(self) -> int: ...
    @property
    def decisions_denied(self) -> int: ...
    @property
    def rejected_inputs(self) -> int: ...
    @property
    def readers(self) -> int: ...
    @property
    def readers_online(self) -> int: ...
    @property
    def store_failing(self) -> bool: ...
    @property
    def disk_free_mb(self) -> int | None: ...


@dataclass(frozen=True)
class GatewayState:
    """The retained birth/state message; the Last Will is the same with online=false."""

    gateway_id: str
    online: bool
    ts: str
    backlog: int | None = None
    oldest_unsent_s: float | None = None
    head_seq: int | None = None
    acked_seq: int | None = None
    oldest_unacked_s: float | None = None
    software: str | None = None
    health: StateHealth | None = None
    state_every_s: float | None = None

    def encode(self) -> bytes:
        document: dict[str, object] = {
            "v": CONTRACT_VERSION,
            "gw": self.gateway_id,
            "online": self.online,
            "ts": self.ts,
        }
        optional = {
            "backlog": self.backlog,
            "oldest_unsent_s": self.oldest_unsent_s,
            "head_seq": self.head_seq,
            "acked_seq": self.acked_seq,
            "oldest_unacked_s": self.oldest_unacked_s,
            "software": self.software,
            "state_every_s": self.state_every_s,
        }
        if self.health is not None:
            optional.update(
                decisions=self.health.decisions,
                decisions_denied=self.health.decisions_denied,
                rejected_inputs=self.health.rejected_inputs,
                readers=self.health.readers,
                readers_online=self.health.readers_online,
                store_failing=self.health.store_failing,
                disk_free_mb=self.health.disk_free_mb,
            )
        document.update({key: value for key, value in optional.items() if value is not None})
        return json.dumps(document, separators=(",", ":")).encode("utf-8")
