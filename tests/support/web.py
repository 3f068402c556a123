"""A running gateway with two landlords' buildings' worth of data, for the web API and UI tests.

Landlord A owns unit 101 (door `unit-101`), landlord B unit 202 (door
`unit-202`); `front` is the shared door. Each has one tenant with a card, a
tap recorded and an open alert. Readers are FIFO line readers, so a test taps
a card by writing its serial, as a serial reader would.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from gateway.api import auth
from gateway.config import Config
from gateway.domain.alerting import AlertRule
from gateway.residence.intake import issue_token_offline
from gateway.runtime.gateway import Gateway
from gateway.store import residents, users
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    SH,
    InProcessGateway,
    load,
    wait_for_index,
    wait_until,
    write_config,
)

PASSWORD = "a long enough passphrase"
ACCOUNTS = {
    "admin": ("admin", ()),
    "landlord_a": ("landlord", ("101",)),
    "landlord_b": ("landlord", ("202",)),
    "coordinator": ("coordinator", ()),
}
TENANT_A = {"id_number": "11010519491231002X", "name": "张三", "unit": "101", "card": "04A1B2C3"}
TENANT_B = {"id_number": "440524188001010014", "name": "李四", "unit": "202", "card": "0B0B0B0B"}


@dataclass
class WebGateway:
    """The running gateway, its URL and certificate, and what was seeded."""

    gateway: Gateway
    config: Config
    readers: dict[str, Path]
    terminal_token: str = ""
    seeded: dict[str, dict[str, str]] = field(default_factory=dict)
    _lines: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self.gateway.api_server.url is not None
        return self.gateway.api_server.url

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.gateway.api_certificate))

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.trust(), timeout=30)

    @contextmanager
    def login(self, account: str) -> Iterator[httpx.Client]:
        """A client with `account`'s session cookie and CSRF header."""
        with self.anonymous() as client:
            reply = client.post("/api/v1/login", json={"name": account, "password": PASSWORD})
            assert reply.status_code == 200, reply.text
            client.headers["X-CSRF-Token"] = reply.json()["csrf_token"]
            yield client

    def terminal(self) -> httpx.Client:
        client = self.anonymous()
        client.headers["Authorization"] = f"Bearer {self.terminal_token}"
        return client

    def tap(self, door: str, card: str) -> None:
        """Write the card's serial to the door's reader, as a serial reader would.

        The FIFO is held open (read-write, so opening never blocks): the reader never
        sees end-of-file between taps and stays online, like a real serial line.
        """
        if door not in self._lines:
            self._lines[door] = os.open(self.readers[door], os.O_RDWR)
        os.write(self._lines[door], f"{card}\n".encode())

    def close(self) -> None:
        for fd in self._lines.values():
            os.close(fd)
        self._lines.clear()

    def wait_for_index(self) -> None:
        """Until the access index reflects every registry change so far."""
        wait_for_index(self.gateway, 10)


def web_config(directory: Path, broker: LocalBroker) -> tuple[Config, dict[str, Path]]:
    readers = {"front": directory / "front.reader"}
    extra = ""
    for door, unit in (("unit-101", "101"), ("unit-202", "202")):
        path = directory / f"{door}.reader"
        os.mkfifo(path, 0o600)
        readers[door] = path
        extra += f'\n[[devices]]\nkind = "line"\ndoor = "{door}"\npath = "{path}"\n'
        extra += f'credential = "card_uid"\n\n[[doors]]\nname = "{door}"\nunits = ["{unit}"]\n'
    config = load(write_config(directory, broker.url, gateway_id="GW-WEB", extra=extra))
    return config, readers


def start_web_gateway(directory: Path, broker: LocalBroker) -> Iterator[WebGateway]:
    """Start the gateway, add the accounts, enrol a tenant for each landlord through the API,
    record a tap at each tenant's door and open an alert about each tenant."""
    config, readers = web_config(directory, broker)
    with InProcessGateway(config) as running:
        gateway = running.gateway
        wait_until(lambda: gateway.api_server.url is not None, 15, "the API listening")
        password_hash = auth.hash_password(PASSWORD)

        def add_accounts(conn: Any) -> None:
            for name, (role, units) in ACCOUNTS.items():
                users.create_user(
                    conn,
                    name=name,
                    role=role,
                    password_hash=password_hash,
                    created_at="2026-01-01T00:00:00+08:00",
                    units=units,
                )

        gateway.writer.submit(add_accounts).result(10)
        web = WebGateway(gateway, config, readers)
        web.terminal_token = issue_token_offline(config.gateway.database, "hh-01", gateway.clock)
        for account, tenant in (("landlord_a", TENANT_A), ("landlord_b", TENANT_B)):
            with web.login(account) as client:
                web.seeded[account] = _seed(web, client, tenant)
        try:
            yield web
        finally:
            web.close()


def _seed(web: WebGateway, client: httpx.Client, tenant: dict[str, str]) -> dict[str, str]:
    body = {
        "id_number": tenant["id_number"],
        "name": tenant["name"],
        "unit": tenant["unit"],
        "cards": [{"card_uid": tenant["card"]}],
    }
    reply = client.post("/api/v1/people", json=body)
    assert reply.status_code == 201, reply.text
    person = reply.json()["person"]
    web.wait_for_index()
    door = f"unit-{tenant['unit']}"
    web.tap(door, tenant["card"])
    now = datetime.now(SH)

    def open_alert(conn: Any) -> str | None:
        return residents.raise_alert(
            conn,
            rule=AlertRule.CANCELLED_CREDENTIAL_USED.value,  # stays open until acknowledged
            person_id=person["id"],
            deadline=None,
            detail={"severity": "alarm", "action": "check", "id_masked": person["id_masked"]},
            now=now,
        )

    alert = web.gateway.writer.submit(open_alert).result(10)
    assert alert is not None
    capture = client.post("/api/v1/captures", json={"door": door})
    assert capture.status_code == 201, capture.text
    web.tap(door, "0C0C0C0C")  # fulfil it: later taps at the door are decided again
    taken = client.get(f"/api/v1/captures/{capture.json()['id']}", params={"wait_s": 10})
    assert taken.json()["state"] == "captured", taken.text
    return {
        "person_id": person["id"],
        "id_masked": person["id_masked"],
        "name": tenant["name"],
        "card_id": person["cards"][0]["id"],
        "card_masked": person["cards"][0]["masked"],
        "tenancy_id": person["tenancies"][0]["id"],
        "alert_id": alert,
        "capture_id": capture.json()["id"],
        "unit": tenant["unit"],
        "door": door,
    }
