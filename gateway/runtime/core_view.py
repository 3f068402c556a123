"""How the door core sees itself for its birth message: the same readings the web's `/metrics`
takes (`gateway.ops.readings`), without importing the web stack."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.ops.status import GatewayStatus
from gateway.runtime.parts import GatewayParts
from gateway.store.outbox import OutboxStats


class RunningGatewayView:
    """`RunningView` of a gateway: its status from a callable, the rest from its parts."""

    def __init__(self, parts: GatewayParts, status: Callable[[], GatewayStatus]) -> None:
        self._parts = parts
        self.status = status
        self.data_dir = parts.config.gateway.data_dir

    async def fresh_status(self) -> GatewayStatus:
        return self.status()

    async def outbox_stats(self, delivered_at_least: int = 0) -> OutboxStats:
        return await self._parts.source.stats(delivered_at_least)

    def acknowledge_alert(self, alert_id: str) -> Awaitable[bool]:
        return self._parts.alerts.acknowledge(alert_id)
