"""Helpers for the terminal tests: records as a handheld sends them, the API served over HTTPS.

Certificates come from tests/support/pki.py. `PROPOSED_EVENT_SCHEMA` is the
`registration.captured` schema proposed for docs/asyncapi.yaml (as
`RegistrationCapturedEvent`); the tests check real events against it until the
document has it.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
import yaml
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


# --------------------------------------------------------------------------- contract

PROPOSED_EVENT_SCHEMA: dict[str, Any] = yaml.safe_load(
    r"""
title: registration.captured
description: |
  A co-ordinator's handheld terminal captured a registration, a change of
  address or workplace, or a departure (R1), and the gateway accepted it.
  Each record is announced once: `record` (made by the terminal) identifies
  it; a terminal that sends it again is answered "duplicate" and no second
  event is recorded. Carries the full ID number and name (a registration
  needs them): travels only over TLS to the platform.
type: object
required: [seq, id, type, ts, mono, record, terminal, kind, captured_at, id_number,
           id_masked, id_hash, person, name, building, unit, room, moved_in_on,
           moved_out_on, workplace, phone, voucher]
additionalProperties: false
properties:
  seq: {type: integer, minimum: 1}
  id:
    type: string
    pattern: "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
  type: {type: string, const: registration.captured}
  ts: {type: string, format: date-time}
  mono: {type: number}
  record:
    description: The record's id, made by the terminal (a UUID); deduplicate by it.
    type: string
    pattern: "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
  terminal:
    description: The capturing terminal's id (the one its token belongs to).
    type: string
    pattern: "^[A-Za-z0-9._-]{1,64}$"
  kind:
    description: >-
      `registration`: lives here since `moved_in_on`. `change`: address or
      workplace changed, effective `moved_in_on`. `departure`: moved out on
      `moved_out_on`.
    type: string
    enum: [registration, change, departure]
  captured_at:
    description: The terminal's clock at capture, with its UTC offset.
    type: string
    format: date-time
  id_number:
    description: The full 18-character resident ID number (GB 11643-1999).
    type: string
    pattern: "^[1-9][0-9]{16}[0-9X]$"
  id_masked:
    type: string
    pattern: "^[0-9]{3}\\*{11}[0-9]{3}[0-9X]$"
  id_hash:
    description: The gateway's keyed hash (HMAC-SHA256, hex) of the ID number.
    type: string
    pattern: "^[0-9a-f]{64}$"
  person:
    description: The person's id at this gateway when enrolled here, else null.
    type: [string, "null"]
  name: {type: string, minLength: 1, maxLength: 64}
  building: {type: string, minLength: 1, maxLength: 64}
  unit: {type: string, minLength: 1, maxLength: 32}
  room: {type: [string, "null"], minLength: 1, maxLength: 32}
  moved_in_on: {type: [string, "null"], format: date}
  moved_out_on: {type: [string, "null"], format: date}
  workplace: {type: [string, "null"], minLength: 1, maxLength: 128}
  phone: {type: [string, "null"]}
  voucher:
    description: The residence-registration voucher text as scanned, not verified here.
    type: [string, "null"]
    maxLength: 1024
"""
)
