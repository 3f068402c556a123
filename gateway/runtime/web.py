"""Put the gateway's API together: services, routers, web pages, and the running gateway's view.

`app.py` builds the gateway; this builds everything its HTTPS port serves,
so the wiring of the web side sits in one place of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from gateway.api import models
from gateway.api.accounts import Accounts
from gateway.api.application import create_api
from gateway.api.directory import Directory, Residence
from gateway.api.events_api import events_router
from gateway.api.history import History, LiveFeed
from gateway.api.metrics import metrics_router
from gateway.api.monitor import LinkState, Monitor
from gateway.api.overview import overview_router
from gateway.api.pages import pages_router
from gateway.api.people_api import people_router
from gateway.api.rendering import STATIC_DIR
from gateway.api.security import security_router
from gateway.api.storeaccess import StoreAccess
from gateway.clock import iso_ms
from gateway.devices.osdp.reader import OsdpReader
from gateway.doors.enrol_by_tap import CardCaptures

if TYPE_CHECKING:
    from gateway.runtime.gateway import Gateway


class RunningGatewayView:
    """`GatewayView` of a running `Gateway`: its doors, readers and link, read in place."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def doors(self) -> list[models.DoorOut]:
        gateway = self._gateway
        found = []
        for door in gateway.config.all_doors():
            supervisor = gateway.doors.supervisors.get(door.name)
            readers = [
                self._reader(name)
                for name, reader in gateway.readers.items()
                if reader.door == door.name
            ]
            found.append(
                models.DoorOut(
                    name=door.name,
                    units=sorted(door.units) if door.units else None,
                    open=bool(supervisor and supervisor.open_since is not None),
                    fail_mode=supervisor.fail_mode.value if supervisor else door.fail_mode,
                    alarms=sorted(a.value for a in supervisor.active) if supervisor else [],
                    readers=readers,
                )
            )
        return found

    def _reader(self, name: str) -> models.ReaderOut:
        reader = self._gateway.readers[name]
        if isinstance(reader, OsdpReader):
            return models.ReaderOut(
                name=name, online=reader.online, error=None if reader.online else reader.detail
            )
        health = self._gateway.reader_health[name]
        return models.ReaderOut(name=name, online=health.online, error=health.error)

    def link(self) -> LinkState:
        uplink = self._gateway.uplink
        link = uplink.link if uplink else None
        stats = uplink.stats if uplink else None
        return LinkState(
            connected=bool(link and link.connected),
            reconnects=link.reconnects if link else 0,
            last_error=link.last_error if link else None,
            last_puback=iso_ms(stats.last_puback) if stats and stats.last_puback else None,
            acked_through=stats.delivered_seq if stats else 0,
        )

    def acknowledge_alert(self, alert_id: str) -> Awaitable[bool]:
        return self._gateway.alerts.acknowledge(alert_id)


@dataclass
class WebSide:
    """What the gateway's HTTPS port serves, and the parts the gateway runs or closes."""

    app: FastAPI
    accounts: Accounts
    captures: CardCaptures
    feed: LiveFeed
    store: StoreAccess

    def close(self) -> None:
        self.feed.close()
        self.accounts.close()
        self.store.close()


def build_web(gateway: Gateway, captures: CardCaptures) -> WebSide:
    """Everything the API serves for `gateway`; `captures` is the one its doors offer taps to."""
    config = gateway.config
    store = StoreAccess(config.gateway.database, gateway.writer)
    accounts = Accounts(
        config.gateway.database,
        writer=gateway.writer,
        clock=gateway.clock,
        setup_code_file=config.gateway.data_dir / "setup-code",
        terminals=gateway.terminals,
    )
    monitor = Monitor(store, RunningGatewayView(gateway))
    directory = Directory(
        store,
        keys=gateway.keys,
        clock=gateway.clock,
        accounts=accounts,
        residence=Residence(
            config.building,
            lambda: gateway.settings.local_districts(config.residence.local_districts),
        ),
        captures=captures,
    )
    history = History(store, monitor)
    feed = LiveFeed(store, history)
    app = create_api(gateway.intake, gateway.terminals)
    app.state.zone = ZoneInfo(config.gateway.timezone)  # how pages show times
    app.include_router(security_router(accounts))
    app.include_router(people_router(accounts, directory))
    app.include_router(overview_router(accounts, monitor, captures))
    app.include_router(events_router(accounts, history, feed))
    app.include_router(metrics_router(gateway))
    app.include_router(pages_router(accounts, directory, monitor, history))
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="static")
    return WebSide(app, accounts, captures, feed, store)
