"""REST for handheld terminals: `POST /api/v1/terminal/records`, `GET /api/v1/terminal/ping`.

Every request carries `Authorization: Bearer {terminal_id}:{secret}`; a bad or
missing token is a 401 before the body is read. A batch is a JSON object
`{"records": [...]}` of at most `MAX_BATCH` records and `MAX_BODY_BYTES`.

Records are judged one by one. Valid records of a batch are stored even when
others in it are rejected: the terminal need not hold back good captures for a
bad one, and sending a stored record again is harmless (it comes back as
`duplicate`). The status says whether the whole batch went in: 200 when every
record is `stored` or `duplicate`, 422 when any was `rejected`; either way the
body has each record's outcome, in order, so a client that reads only the
status never takes a rejected record for a delivered one. A batch that is not
a batch at all (not JSON, wrong shape, too many records) is a 422 and nothing
of it is stored; an oversized body is a 413. Bad input never causes a 5xx; a
store that cannot commit, or a gateway without the platform's encryption key
(`no_encryption_key`), is a 503 (retry later, nothing was kept).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from gateway.domain.capture import CapturedRecord
from gateway.domain.ids import mask
from gateway.residence.intake import SealingUnavailable
from gateway.store.errors import StoreError
from gateway.store.terminal_records import TokenCheck, TokenProblem

log = logging.getLogger(__name__)

MAX_BATCH = 100
MAX_BODY_BYTES = 512 * 1024
"""100 records at their longest (voucher text included) fit in under half of this."""
RETRY_AFTER_S = 5


class RecordOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class BatchProblem(StrEnum):
    """Why a whole request was refused (nothing of it stored)."""

    BODY_TOO_LARGE = "body_too_large"
    NOT_JSON = "not_json"
    NOT_A_BATCH = "not_a_batch"
    TOO_MANY_RECORDS = "too_many_records"
    STORE_UNAVAILABLE = "store_unavailable"
    NO_ENCRYPTION_KEY = "no_encryption_key"


class RecordProblem(StrEnum):
    """Why one record of a batch was rejected."""

    INVALID = "invalid"
    WRONG_TERMINAL = "wrong_terminal"


class IntakeOutcome(Protocol):
    @property
    def new(self) -> bool: ...
    @property
    def seq(self) -> int | None: ...


class RecordSink(Protocol):
    """Where valid records go (`gateway.residence.intake.RecordIntake`)."""

    async def submit_many(self, batch: Sequence[CapturedRecord]) -> Sequence[IntakeOutcome]: ...


class TokenVerifier(Protocol):
    """Who a bearer token belongs to (`gateway.residence.intake.TerminalRegistry`)."""

    async def verify(self, token: str | None) -> TokenCheck: ...


@dataclass
class TerminalApiStats:
    """Requests refused and records judged, by reason (bad input is counted, not just logged)."""

    unauthorized: Counter[TokenProblem] = field(default_factory=Counter)
    batches_refused: Counter[BatchProblem] = field(default_factory=Counter)
    records: Counter[RecordOutcome] = field(default_factory=Counter)
    records_rejected: Counter[RecordProblem] = field(default_factory=Counter)


class _Refused(Exception):
    def __init__(self, status: int, reason: BatchProblem | TokenProblem, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.response = _error(status, reason.value, detail)


class TerminalRefusal(BaseModel):
    """What the terminal endpoints answer when they refuse (a whole batch, or a token)."""

    error: str | None = None
    detail: str | None = None
    results: list[dict[str, Any]] | None = None


def _error(status: int, reason: str, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse({"error": reason, "detail": detail}, status_code=status, headers=headers)


def terminal_router(
    sink: RecordSink, terminals: TokenVerifier, stats: TerminalApiStats
) -> APIRouter:
    """The terminal endpoints; what they refuse and judge is counted in `stats`."""
    router = APIRouter(
        prefix="/api/v1/terminal",
        tags=["terminal"],
        responses={
            status: {"model": TerminalRefusal, "description": text}
            for status, text in (
                (401, "No valid terminal token"),
                (413, "The batch is too large"),
                (422, "The batch, or some records in it, are not valid"),
                (503, "The gateway cannot store now"),
            )
        },
    )

    async def authenticate(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        check = await terminals.verify(token.strip() if scheme.lower() == "bearer" else None)
        if check.terminal is None:
            problem = check.problem or TokenProblem.UNKNOWN
            stats.unauthorized[problem] += 1
            raise _Refused(401, problem, _TOKEN_DETAIL[problem])
        return check.terminal

    @router.get("/ping")
    async def ping(request: Request) -> JSONResponse:
        """Reachability and token check for the terminal's `status`."""
        try:
            terminal = await authenticate(request)
        except _Refused as refused:
            return refused.response
        return JSONResponse({"terminal": terminal, "max_batch": MAX_BATCH})

    @router.post("/records")
    async def post_records(request: Request) -> JSONResponse:
        """Accept a batch of captured records, idempotently by record id."""
        try:
            terminal = await authenticate(request)
            items = _parse_batch(await _read_body(request))
        except _Refused as refused:
            if isinstance(refused.reason, BatchProblem):
                stats.batches_refused[refused.reason] += 1
            return refused.response
        return await _store_batch(sink, stats, terminal, items)

    return router


async def _store_batch(
    sink: RecordSink, stats: TerminalApiStats, terminal: str, items: list[Any]
) -> JSONResponse:
    """Judge each record, store the valid ones in one go, and answer each one's outcome."""
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, CapturedRecord]] = []
    for index, item in enumerate(items):
        record, problem, errors = _judge(item, terminal)
        if record is None:
            assert problem is not None
            stats.records_rejected[problem] += 1
            results.append(_rejected(index, item, problem, errors))
        else:
            valid.append((index, record))
            results.append({})
    try:
        outcomes = await sink.submit_many([record for _, record in valid])
    except StoreError as exc:
        log.error("terminal %s: batch not stored: %s", terminal, exc)
        stats.batches_refused[BatchProblem.STORE_UNAVAILABLE] += 1
        return _error(503, BatchProblem.STORE_UNAVAILABLE.value, "the gateway cannot store now")
    except SealingUnavailable as exc:  # personal data is never taken in if it cannot be sealed
        log.error("terminal %s: batch refused: %s", terminal, exc)
        stats.batches_refused[BatchProblem.NO_ENCRYPTION_KEY] += 1
        return _error(503, BatchProblem.NO_ENCRYPTION_KEY.value, str(exc))
    for (index, record), outcome in zip(valid, outcomes, strict=True):
        result = RecordOutcome.STORED if outcome.new else RecordOutcome.DUPLICATE
        results[index] = {
            "index": index,
            "record_id": record.record_id,
            "outcome": result.value,
            "seq": outcome.seq,
        }
    counts = Counter(RecordOutcome(result["outcome"]) for result in results)
    stats.records.update(counts)
    body = {
        "terminal": terminal,
        **{outcome.value: counts[outcome] for outcome in RecordOutcome},
        "results": results,
    }
    return JSONResponse(body, status_code=422 if counts[RecordOutcome.REJECTED] else 200)


_TOKEN_DETAIL = {
    TokenProblem.MISSING: "no bearer token: send Authorization: Bearer <terminal token>",
    TokenProblem.MALFORMED: "the bearer token is not a terminal token",
    TokenProblem.UNKNOWN: "the terminal token is not valid at this gateway",
    TokenProblem.REVOKED: "this terminal's token was revoked: ask for a new one",
}


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it is known to be too large."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise _Refused(413, BatchProblem.BODY_TOO_LARGE, _too_large())
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _Refused(413, BatchProblem.BODY_TOO_LARGE, _too_large())
    return bytes(body)


def _too_large() -> str:
    return f"the body is larger than {MAX_BODY_BYTES} bytes: send at most {MAX_BATCH} records"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_batch(body: bytes) -> list[Any]:
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _Refused(422, BatchProblem.NOT_JSON, "the body is not UTF-8 JSON") from exc
    if not isinstance(document, dict) or set(document) != {"records"}:
        raise _Refused(422, BatchProblem.NOT_A_BATCH, 'the body must be {"records": [record, ...]}')
    items = document["records"]
    if not isinstance(items, list):
        raise _Refused(422, BatchProblem.NOT_A_BATCH, '"records" must be a list')
    if len(items) > MAX_BATCH:
        raise _Refused(
            422,
            BatchProblem.TOO_MANY_RECORDS,
            f"{len(items)} records in one batch; at most {MAX_BATCH}",
        )
    return items


def _judge(
    item: Any, terminal: str
) -> tuple[CapturedRecord | None, RecordProblem | None, list[str]]:
    try:
        record = CapturedRecord.model_validate_json(json.dumps(item))
    except ValidationError as exc:
        return None, RecordProblem.INVALID, _messages(exc)
    if record.terminal != terminal:
        detail = f"record of terminal {record.terminal!r} sent with the token of {terminal!r}"
        return None, RecordProblem.WRONG_TERMINAL, [detail]
    return record, None, []


def _messages(exc: ValidationError) -> list[str]:
    """Where and what, never the input (it may be an ID number or a name)."""
    messages = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "record"
        text = str(error["msg"]).removeprefix("Value error, ")
        messages.append(f"{where}: {text}")
    return messages


def _rejected(index: int, item: Any, problem: RecordProblem, errors: list[str]) -> dict[str, Any]:
    record_id = item.get("record_id") if isinstance(item, dict) else None
    if not isinstance(record_id, str) or len(record_id) > 64:
        record_id = None
    id_number = item.get("id_number") if isinstance(item, dict) else None
    log.warning(
        "terminal record %s (%s) rejected: %s %s",
        record_id,
        mask(id_number) if isinstance(id_number, str) else "no ID number",
        problem.value,
        "; ".join(errors),
    )
    return {
        "index": index,
        "record_id": record_id,
        "outcome": RecordOutcome.REJECTED.value,
        "reason": problem.value,
        "errors": errors,
    }
