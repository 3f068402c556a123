"""Put the gateway's web side together: services, routers, pages, and how they see the gateway.

The web side never holds the gateway itself: it sees the running gateway only
through `GatewayView` (its status, and alerts to acknowledge) and `Monitored`
(status, outbox and disk for `/metrics`), which `gateway.runtime.gateway`
implements; every other service comes in as a built part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from gateway.api.accounts import Accounts
from gateway.api.application import create_api
from gateway.api.core_client import CoreClient
from gateway.api.core_links import RemoteCaptures
from gateway.api.directory import Directory
from gateway.api.events_api import events_router
from gateway.api.history import History, LiveFeed
from gateway.api.metrics import metrics_router
from gateway.api.monitor import GatewayView, Monitor
from gateway.api.overview import overview_router
from gateway.api.pages import pages_router
from gateway.api.people_api import people_router
from gateway.api.person_view import Residence
from gateway.api.rendering import STATIC_DIR
from gateway.api.schema import schema_router
from gateway.api.security import security_router
from gateway.api.storeaccess import StoreAccess
from gateway.clock import Clock
from gateway.config import Config
from gateway.ops.readings import Monitored
from gateway.residence.intake import RecordIntake, TerminalRegistry
from gateway.residence.runtime_settings import RuntimeSettings
from gateway.store.crypto import KeyRing
from gateway.store.writer import Writer


class RunningView(GatewayView, Monitored, Protocol):
    """Both views of the running gateway the web side may hold."""


@dataclass
class WebParts:
    """What the web side is built from: the store, its keys, and the line to the door core."""

    config: Config
    clock: Clock
    keys: KeyRing
    writer: Writer
    terminals: TerminalRegistry
    intake: RecordIntake
    captures: RemoteCaptures
    core: CoreClient

    def local_districts(self) -> list[str]:
        """Read afresh: the platform changes them through the door core's settings file."""
        settings = RuntimeSettings(self.config.gateway.data_dir / "settings.json")
        return settings.local_districts(self.config.residence.local_districts)


@dataclass
class WebSide:
    """What the gateway's HTTPS port serves, and the parts the gateway runs or closes."""

    app: FastAPI
    accounts: Accounts
    feed: LiveFeed
    store: StoreAccess

    def close(self) -> None:
        self.feed.close()
        self.accounts.close()
        self.store.close()


def build_web(parts: WebParts, view: RunningView) -> WebSide:
    """Everything the API serves; enrol-by-tap captures are the door core's, over its socket."""
    config = parts.config
    store = StoreAccess(config.gateway.database, parts.writer)
    accounts = Accounts(
        config.gateway.database,
        writer=parts.writer,
        clock=parts.clock,
        setup_code_file=config.web_state_dir / "setup-code",
        terminals=parts.terminals,
    )
    monitor = Monitor(store, view)
    directory = Directory(
        store,
        keys=parts.keys,
        clock=parts.clock,
        accounts=accounts,
        residence=Residence(config.building, parts.local_districts),
        captures=parts.captures,
        scope=monitor.scope_in,
    )
    history = History(store, monitor)
    feed = LiveFeed(store, history)
    app = create_api(parts.intake, parts.terminals, trusted_proxies=config.api.trusted_proxies)
    app.state.zone = ZoneInfo(config.gateway.timezone)  # how pages show times
    app.include_router(security_router(accounts))
    app.include_router(people_router(accounts, directory))
    app.include_router(overview_router(accounts, monitor, parts.captures))
    app.include_router(events_router(accounts, history, feed))
    app.include_router(metrics_router(view))
    app.include_router(pages_router(accounts, directory, monitor, history))
    app.include_router(schema_router(accounts))
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="static")
    return WebSide(app, accounts, feed, store)
