"""Helpers for the terminal tests: records as a handheld sends them, the API served over HTTPS.

Certificates come from tests/support/pki.py; the events the records become are checked
against docs/asyncapi.yaml (`RegistrationCapturedEvent`) through tests/support/contract.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from gateway.sync.local_broker import free_port
from tests.support.gateway import make_id_number, wait_until
from tests.support.pki import Pki

SH = dt.timezone(dt.timedelta(hours=8))


def record_json(
    terminal: str = "T-01",
    serial: int = 1,
    kind: str = "registration",
    **overrides: Any,
) -> dict[str, Any]:
    """A valid record as a terminal sends it (JSON types), with fields overridden."""
    document: dict[str, Any] = {
        "record_id": str(uuid.uuid4()),
        "terminal": terminal,
        "kind": kind,
        "captured_at": "2026-03-02T10:15:00.000+08:00",
        "id_number": make_id_number(serial).value,
        "name": f"Tenant {serial}",
        "building": "B1",
        "unit": f"{100 + serial % 50}",
        "moved_in_on": "2026-03-01",
    }
    if kind == "departure":
        document["moved_out_on"] = "2026-03-02"
    document.update(overrides)
    return {key: value for key, value in document.items() if value is not None}


# --------------------------------------------------------------------------- HTTPS server


@contextmanager
def serve_https(app: FastAPI, pki: Pki, port: int | None = None) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 over TLS in a thread; yields the base URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(pki.server_cert),
            ssl_keyfile=str(pki.server_key),
            log_level="warning",
            lifespan="off",
            ws="none",
            http="h11",
            loop="asyncio",
        )
    )
    thread = threading.Thread(target=server.run, name="terminal-api", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "API server listening")
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
