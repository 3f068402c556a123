"""The gateway's terminal API: idempotent by record id, one event per record, no 5xx for garbage.

A real store (SQLite file, the real writer thread) behind the real FastAPI app,
driven through FastAPI's TestClient. Events are read back from the outbox and
checked against the proposed `registration.captured` schema.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.application import create_api
from gateway.api.terminal_api import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    BatchProblem,
    RecordOutcome,
    RecordProblem,
)
from gateway.clock import SystemClock
from gateway.domain.capture import CapturedRecord
from gateway.domain.events import EventType, OutboxEvent, new_event
from gateway.domain.sealed_box import OpeningKey
from gateway.residence.intake import RecordIntake, TerminalRegistry, issue_token_offline
from gateway.store import outbox
from gateway.store import terminal_records as records
from gateway.store.crypto import KeyRing
from gateway.store.db import connect, transaction
from gateway.store.migrations import migrate
from gateway.store.terminal_records import TokenProblem
from gateway.store.writer import Writer
from tests.support.contract import opened, validator
from tests.support.gateway import make_id_number
from tests.support.terminal import record_json

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 behind its TestClient; httpx (the terminal's client) works.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from fastapi.testclient import TestClient

URL = "/api/v1/terminal/records"
VALIDATOR = validator("#/components/schemas/RegistrationCapturedEvent")
GW = "GW-TEST"
PLATFORM = OpeningKey.generate()
"""The platform's encryption key pair: the intake seals to its public half."""


@dataclass
class Api:
    client: TestClient
    writer: Writer
    database: Path
    keys: KeyRing
    intake: RecordIntake
    registry: TerminalRegistry
    token: str

    def post(self, body: Any, token: str | None = None) -> Any:
        return self.client.post(URL, json=body, headers=self.auth(token))

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    @property
    def stats(self) -> Any:
        return self.client.app.state.terminal_stats  # type: ignore[attr-defined]

    def events(self) -> list[dict[str, Any]]:
        """The outbox's events as the platform reads them (sealed fields opened)."""
        return opened(self.sealed_events(), GW, [PLATFORM])

    def sealed_events(self) -> list[dict[str, Any]]:
        self.writer.flush()
        conn = connect(self.database, readonly=True)
        try:
            stored = outbox.read_after(conn, 0, 100_000)
            return [{"seq": e.seq, **json.loads(e.payload)} for e in stored]
        finally:
            conn.close()

    def stored(self) -> int:
        conn = connect(self.database, readonly=True)
        try:
            return records.count_records(conn)
        finally:
            conn.close()


def make_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    database = tmp_path / "gateway.db"
    conn = connect(database)
    migrate(conn)
    conn.close()
    return database


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    database = make_store(tmp_path, monkeypatch)
    clock = SystemClock()
    token = issue_token_offline(database, "T-01", clock)
    writer = Writer(database)
    writer.start()
    keys = KeyRing.generate()
    intake = RecordIntake(
        writer=writer, keys=keys, clock=clock, gateway_id=GW, sealing=PLATFORM.public
    )
    registry = TerminalRegistry(database, writer=writer, clock=clock)
    with TestClient(create_api(intake, registry)) as client:
        yield Api(client, writer, database, keys, intake, registry, token)
    registry.close()
    writer.close()


def test_a_batch_is_stored_and_each_record_announced_once(api: Api) -> None:
    batch = [record_json(serial=n) for n in range(3)]
    batch.append(record_json(serial=7, kind="departure", moved_in_on=None, room="2"))

    response = api.post({"records": batch})

    assert response.status_code == 200
    body = response.json()
    assert (body["stored"], body["duplicate"], body["rejected"]) == (4, 0, 0)
    assert [r["record_id"] for r in body["results"]] == [r["record_id"] for r in batch]
    sealed = api.sealed_events()
    for event in sealed:
        VALIDATOR.validate(event)
        assert "id_number" not in event
        assert "name" not in event
    events = api.events()
    assert [e["record"] for e in events] == [r["record_id"] for r in batch]
    for event, result, sent in zip(events, body["results"], batch, strict=True):
        assert event["type"] == "registration.captured"
        assert event["seq"] == result["seq"]  # the seq the API reported is the event's
        assert event["id_number"] == sent["id_number"]
        assert event["id_masked"] == make_id_number(int(sent["name"].split()[1])).masked
        assert event["id_hash"] == api.keys.lookup("id_number", sent["id_number"]).hex()
        assert (event["building"], event["unit"], event["kind"]) == (
            sent["building"],
            sent["unit"],
            sent["kind"],
        )
    assert events[3]["moved_out_on"] == "2026-03-02"
    assert events[3]["moved_in_on"] is None


def test_sending_again_is_a_duplicate_and_records_no_event(api: Api) -> None:
    batch = [record_json(serial=n) for n in range(5)]
    first = api.post({"records": batch}).json()
    again = api.post({"records": [batch[2], record_json(serial=9), batch[2]]})

    assert again.status_code == 200
    outcomes = [(r["outcome"], r["seq"]) for r in again.json()["results"]]
    assert outcomes[0] == ("duplicate", first["results"][2]["seq"])
    assert outcomes[1][0] == "stored"
    assert outcomes[2] == ("duplicate", first["results"][2]["seq"])  # twice in one batch
    events = api.events()
    assert len(events) == 6
    assert len({e["record"] for e in events}) == 6
    assert api.stored() == 6
    assert api.intake.stats.duplicates == 2


def test_an_enrolled_person_is_named_by_the_gateways_person_id(api: Api) -> None:
    number = make_id_number(42).value
    id_hash = api.keys.lookup("id_number", number)
    conn = connect(api.database)
    with transaction(conn):
        conn.execute(
            "INSERT INTO people (id, id_hash, id_masked, id_number_sealed, created_at,"
            " updated_at) VALUES ('p-42', ?, 'x', x'00', 'now', 'now')",
            (id_hash,),
        )
    conn.close()

    api.post({"records": [record_json(serial=42), record_json(serial=43)]})

    assert [e["person"] for e in api.events()] == ["p-42", None]


def test_invalid_records_are_rejected_one_by_one_and_the_valid_stored(api: Api) -> None:
    good = record_json(serial=1)
    number = make_id_number(2).value
    wrong = next(c for c in "0123456789X" if c != number[17])
    bad_check = record_json(serial=2, id_number=number[:17] + wrong)
    no_move_out = record_json(serial=3, kind="departure", moved_out_on=None)
    extra = {**record_json(serial=4), "password": "x"}
    naive_time = record_json(serial=5, captured_at="2026-03-02T10:15:00")
    future_move = record_json(serial=6, moved_in_on="2026-03-05")
    other_terminal = record_json(terminal="T-99", serial=7)
    not_an_object = "hello"

    batch = [good, bad_check, no_move_out, extra, naive_time, future_move, other_terminal]
    response = api.post({"records": [*batch, not_an_object]})

    assert response.status_code == 422
    body = response.json()
    assert (body["stored"], body["rejected"]) == (1, 7)
    results = body["results"]
    assert results[0]["outcome"] == RecordOutcome.STORED
    assert [r["reason"] for r in results[1:]] == [RecordProblem.INVALID] * 5 + [
        RecordProblem.WRONG_TERMINAL,
        RecordProblem.INVALID,
    ]
    assert "check character" in results[1]["errors"][0]
    assert results[2]["errors"] == ["record: a departure needs moved_out_on"]
    assert results[3]["errors"] == ["password: Extra inputs are not permitted"]
    assert "UTC offset" in results[4]["errors"][0]
    assert "after the day of capture" in results[5]["errors"][0]
    assert results[7]["record_id"] is None
    # Messages never echo personal data.
    assert number[:17] not in response.text
    assert "Tenant" not in response.text
    assert [e["record"] for e in api.events()] == [good["record_id"]]
    assert api.stats.records_rejected[RecordProblem.INVALID] == 6


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (None, TokenProblem.MISSING),
        ("Basic dXNlcjpwYXNz", TokenProblem.MISSING),
        ("Bearer nocolon", TokenProblem.MALFORMED),
        ("Bearer T-01:wrong-secret", TokenProblem.UNKNOWN),
        ("Bearer T-77:wrong-secret", TokenProblem.UNKNOWN),
    ],
)
def test_a_bad_token_is_401_and_nothing_is_stored(
    api: Api, header: str | None, problem: TokenProblem
) -> None:
    headers = {"Authorization": header} if header else {}
    response = api.client.post(URL, json={"records": [record_json()]}, headers=headers)

    assert response.status_code == 401
    assert response.json()["error"] == problem
    assert response.headers["www-authenticate"] == "Bearer"
    assert api.client.get("/api/v1/terminal/ping", headers=headers).status_code == 401
    assert api.stored() == 0
    assert api.stats.unauthorized[problem] == 2


def test_tokens_are_reissued_and_revoked(api: Api) -> None:
    assert api.client.get("/api/v1/terminal/ping", headers=api.auth()).json()["terminal"] == "T-01"
    portal = api.client.portal
    assert portal is not None
    new_token = portal.call(api.registry.add, "T-01")

    old = api.post({"records": [record_json()]})
    assert (old.status_code, old.json()["error"]) == (401, TokenProblem.UNKNOWN)
    assert api.post({"records": [record_json()]}, new_token).status_code == 200

    assert portal.call(api.registry.revoke, "T-01") is True
    revoked = api.post({"records": [record_json()]}, new_token)
    assert (revoked.status_code, revoked.json()["error"]) == (401, TokenProblem.REVOKED)
    assert portal.call(api.registry.revoke, "T-01") is False
    assert api.stored() == 1


def test_only_a_hash_of_the_token_is_stored(api: Api) -> None:
    conn = connect(api.database, readonly=True)
    try:
        stored = conn.execute("SELECT token_hash FROM terminals").fetchone()[0]
    finally:
        conn.close()
    assert api.token.encode() not in bytes(stored)
    assert len(stored) == 32


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", BatchProblem.NOT_JSON),
        (b"{not json", BatchProblem.NOT_JSON),
        (b"\xff\xfe{}", BatchProblem.NOT_JSON),
        (b'{"records": [NaN]}', BatchProblem.NOT_JSON),
        (b"[" * 100_000 + b"]" * 100_000, BatchProblem.NOT_JSON),
        (b"[]", BatchProblem.NOT_A_BATCH),
        (b'{"records": {}}', BatchProblem.NOT_A_BATCH),
        (b'{"records": [], "more": 1}', BatchProblem.NOT_A_BATCH),
        (b"null", BatchProblem.NOT_A_BATCH),
    ],
)
def test_a_body_that_is_not_a_batch_is_422(api: Api, body: bytes, problem: BatchProblem) -> None:
    response = api.client.post(URL, content=body, headers=api.auth())

    assert response.status_code == 422
    assert response.json()["error"] == problem
    assert api.stats.batches_refused[problem] == 1


def test_more_than_a_batch_of_records_is_refused_whole(api: Api) -> None:
    response = api.post({"records": [record_json(serial=n) for n in range(MAX_BATCH + 1)]})

    assert response.status_code == 422
    assert response.json()["error"] == BatchProblem.TOO_MANY_RECORDS
    assert api.stored() == 0


def test_an_oversized_body_is_413_declared_or_streamed(api: Api) -> None:
    big = json.dumps({"records": [record_json(voucher="V" * 1024)] * 600}).encode()
    assert len(big) > MAX_BODY_BYTES

    declared = api.client.post(URL, content=big, headers=api.auth())
    streamed = api.client.post(
        URL, content=iter([big[:300_000], big[300_000:]]), headers=api.auth()
    )

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"] == BatchProblem.BODY_TOO_LARGE
    assert api.stored() == 0


def test_a_store_that_cannot_commit_is_503_and_keeps_nothing(api: Api) -> None:
    api.writer.close()

    response = api.post({"records": [record_json()]})

    assert response.status_code == 503
    assert response.json()["error"] == BatchProblem.STORE_UNAVAILABLE
    assert response.headers["retry-after"]


def test_without_the_platforms_encryption_key_captures_are_refused_and_nothing_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    database = make_store(tmp_path, monkeypatch)
    clock = SystemClock()
    token = issue_token_offline(database, "T-01", clock)
    writer = Writer(database)
    writer.start()
    intake = RecordIntake(
        writer=writer, keys=KeyRing.generate(), clock=clock, gateway_id=GW, sealing=None
    )
    registry = TerminalRegistry(database, writer=writer, clock=clock)
    sent = record_json()
    try:
        with TestClient(create_api(intake, registry)) as client:
            response = client.post(
                URL, json={"records": [sent]}, headers={"Authorization": f"Bearer {token}"}
            )
            stats = client.app.state.terminal_stats  # type: ignore[attr-defined]
    finally:
        registry.close()
        writer.close()
    assert response.status_code == 503  # the terminal keeps the record and tries again later
    assert response.json()["error"] == BatchProblem.NO_ENCRYPTION_KEY
    assert "encryption_key" in response.json()["detail"]
    assert stats.batches_refused[BatchProblem.NO_ENCRYPTION_KEY] == 1
    assert intake.stats.refused_unsealable == 1
    conn = connect(database, readonly=True)
    try:
        assert records.count_records(conn) == 0
        assert outbox.read_after(conn, 0, 10) == []
    finally:
        conn.close()
    assert sent["id_number"] not in caplog.text
    assert sent["name"] not in caplog.text


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(sorted(CapturedRecord.model_fields))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    records=st.lists(
        JSON_VALUES | st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=6), max_size=4
    )
)
def test_garbage_records_never_cause_a_server_error(api: Api, records: list[Any]) -> None:
    response = api.post({"records": records})

    assert response.status_code in (200, 422)
    results = response.json()["results"]
    assert len(results) == len(records)
    assert all(r["outcome"] == RecordOutcome.REJECTED for r in results) or not records


def test_mutated_valid_records_never_cause_a_server_error(api: Api) -> None:
    base = record_json(serial=3, room="1", workplace="Shop", phone="+86 138 0000 0000")
    seen = set()
    for field in sorted(base):
        for value in (
            None,
            "",
            " x",
            "x" * 2000,
            12,
            1.5,
            True,
            [],
            {},
            "\x00",
            "\uff12\uff10\uff12\uff16",
        ):
            record = {**base, "record_id": base["record_id"], field: value}
            response = api.post({"records": [record]})
            assert response.status_code in (200, 422), (field, value)
            seen.add(response.json()["results"][0]["outcome"])
    assert "rejected" in seen


def test_seqs_stay_right_when_other_events_share_the_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intake computes its events' seqs itself; other writers' events must not shift them."""
    database = make_store(tmp_path, monkeypatch)
    writer = Writer(database, window_s=0.05)
    writer.start()
    clock = SystemClock()
    intake = RecordIntake(
        writer=writer, keys=KeyRing.generate(), clock=clock, gateway_id=GW, sealing=PLATFORM.public
    )

    async def burst() -> list[Any]:
        def other() -> OutboxEvent:
            return new_event(EventType.DEVICE_STATUS, clock.now(), 0.0, {"device": "x"})

        writer.append(other())
        writer.submit_recording(lambda _c: (None, [other(), other()]))
        first = asyncio.ensure_future(intake.submit_many(_records(0, 3)))
        await asyncio.sleep(0)
        writer.append(other())
        second = asyncio.ensure_future(intake.submit_many(_records(3, 5)))
        return [*(await first), *(await second)]

    outcomes = asyncio.run(burst())
    writer.flush()
    conn = connect(database, readonly=True)
    by_seq = {
        e.seq: opened([json.loads(e.payload)], GW, [PLATFORM])[0]
        for e in outbox.read_after(conn, 0, 100)
    }
    conn.close()
    writer.close()
    assert len(by_seq) == 4 + 5
    assert writer.health.commits <= 2  # they did share transactions
    for n, outcome in enumerate(outcomes):
        assert by_seq[outcome.seq]["type"] == "registration.captured"
        assert by_seq[outcome.seq]["name"] == f"Tenant {n}"


def _records(start: int, stop: int) -> list[CapturedRecord]:
    return [
        CapturedRecord.model_validate_json(json.dumps(record_json(serial=n)))
        for n in range(start, stop)
    ]
